"""The PostgreSQL engine: TLS, authentication against dbward, the gate on every statement, relay.

Counterparts: ``wire/postgres`` (the sans-IO codec), ``proxy/postgres_upstream.py`` (the
target side), ``proxy/engine.py`` (lifecycle, registry), ``proxy/gate.py`` (decisions).

How a refusal stays in protocol sync: dbward never writes its own reply into the middle of
the target's answers. In place of a refused message it sends the target an Execute of a
portal that cannot exist (named with a random token) and replaces the target's "portal does
not exist" ErrorResponse with its own. The target then does exactly what a server does after
an error -- it skips the rest of the pipeline until Sync, aborts an implicit transaction, and
answers ReadyForQuery with the right transaction status -- so ordering is right by
construction, whatever the client pipelined before or after.

After login the relay leaves asyncio streams: each connection's transport gets a
protocol (``_Leg``) that hands what it receives to one ``_Pump`` per direction, which
processes it inside the transport's callback. A statement whose decision the gate holds in
its cache (``Gate.check_cached``), and its answer (``Gate.complete_soon``), thus cost no task,
future or stream; only processing that has to wait (the gate's full path, approvals, the
cancel gate of a cut result) goes on as a task, with later bytes queued behind it in order.
Flow control pauses reading on one side while the other side's transport is full.

The result path reads large chunks and only scans frame headers (see ``wire/postgres/framing``);
it never awaits per message. A chunk's completions reach the audit trail before the chunk is
written to the client.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from dbward.domain import SessionInfo, Statement, StatementOrigin, StatementOutcome, Target
from dbward.errors import (
    ApprovalRequired,
    AuditUnavailable,
    AuthenticationError,
    DbwardError,
    IdleTimeout,
    NotFoundError,
    ProtocolError,
    SessionKilled,
    StatementDenied,
    UnsupportedFeature,
)
from dbward.identity.secrets import ScramVerifier, scram_verifier
from dbward.policy.model import Decision, Effect, MaskingPlan
from dbward.proxy.engine import (
    ClientConnection,
    EngineDeps,
    LiveSession,
    StoredSecret,
    UserCredentials,
    WorkerPeers,
    register,
    session_lifecycle,
    verify_cleartext,
)
from dbward.proxy.gate import Ticket
from dbward.proxy.masking import ResultMasks, cut_notice, error_sentence, result_masks, stale_masks
from dbward.proxy.postgres_masking import CopyMasker, CopyUnmaskable, RowMasker, python_encoding
from dbward.proxy.postgres_upstream import (
    STREAM_LIMIT,
    CancelRoute,
    Upstream,
    UpstreamRefused,
    connect,
    send_cancel,
)
from dbward.wire.postgres import messages as m
from dbward.wire.postgres import rows as wrows
from dbward.wire.postgres.framing import data_rows, scan
from dbward.wire.postgres.params import decode_params
from dbward.wire.postgres.scram import ScramError, ScramServer
from dbward.wire.postgres.sqlsplit import copy_kind, split_statements

log = logging.getLogger(__name__)

PROTOCOL = "postgres"
CHUNK = 256 * 1024
#: frames larger than this are relayed in pieces instead of being buffered whole
PASSTHROUGH_MIN = 64 * 1024
#: the client must finish TLS, startup and authentication within this time (as authentication_timeout)
AUTH_TIMEOUT = 60.0
_HDR = struct.Struct("!cI")
#: server-reported parameters (ParameterStatus) kept in SessionInfo.attributes for the policy;
#: PostgreSQL 18 reports search_path, older servers only their version and encodings
_SESSION_ATTRIBUTES = frozenset({"search_path", "server_version", "client_encoding", "DateStyle", "TimeZone"})


def error_response(exc: DbwardError, *, fatal: bool = False) -> bytes:
    """The one place a dbward error becomes a PostgreSQL ErrorResponse."""
    return m.ErrorResponse.build(exc.sqlstate, exc.message, severity="FATAL" if fatal else "ERROR").encode()


class _ClientGone(Exception):
    """The client closed its connection or sent Terminate."""


class _UpstreamGone(Exception):
    """The target closed the connection."""


# --------------------------------------------------------------------------- per-session state
@dataclass(kw_only=True)
class _Prepared:
    name: str
    sql: str
    param_types: tuple[int, ...]  # from Parse, completed by the target's ParameterDescription
    refusal: str | None = None  # set when the gate refused it at Parse
    decision: Decision | None = None  # the gate's decision at Parse (its masking plan announces types)
    fields: tuple[wrows.Field, ...] | None = None  # from Describe 'S' (formats not yet known)
    stale: bool = False  # its result names a table dbward's catalog does not know


@dataclass(kw_only=True)
class _Portal:
    statement: _Prepared
    params: tuple[Any, ...]
    result_formats: tuple[int, ...] = ()
    fields: tuple[wrows.Field, ...] | None = None  # from Describe 'P' (formats as sent)
    stale: bool = False
    rows_sent: int = 0  # rows relayed over every Execute of this portal (for the row limit)
    cut: bool = False  # the row limit cut this portal's result


@dataclass(kw_only=True)
class _Rewrite:
    """An execution whose result dbward rewrites: masked values, the row limit, or a check of
    the result's wire origins against the catalog (sessions with masking rules)."""

    plan: MaskingPlan | None
    limit: int | None
    sql: str
    portal: _Portal | None = None
    # what the row limit counts across executions: the portal, or a SQL cursor's FETCHes
    counter: _Portal | None = None
    describe_plan: MaskingPlan | None = None  # the plan the client's Describe announced types by
    masker: RowMasker | None = None
    copy: CopyMasker | None = None
    rows: int = 0  # rows relayed to the client by this execution
    cut: bool = False
    solo: bool = False  # the only statement of a simple Query message
    copy_out: bool = False  # the target answered with CopyOutResponse
    cancelled: bool = False  # dbward cancelled the rest of the result on the target (row limit)
    notice: bytes = b""  # NoticeResponse frames to send before the completion
    audit: list[dict[str, Any]] | None = None  # masked output columns, for the audit record


@dataclass(kw_only=True)
class _Desc:
    """A Describe waiting for its RowDescription or NoData."""

    unit: int
    prepared: _Prepared | None = None
    portal: _Portal | None = None
    hidden: bool = False  # sent by dbward to learn a portal's columns: the answer is not relayed
    rewrite: _Rewrite | None = None


@dataclass(kw_only=True)
class _Slot:
    """An allowed execution waiting for its CommandComplete (or error) to reach the audit trail."""

    ticket: Ticket
    unit: int
    parse: bool = False  # completed by ParseComplete rather than CommandComplete
    simple: bool = False  # part of a simple Query message (whose ReadyForQuery is its own unit)
    rewrite: _Rewrite | None = None  # its result is masked, limited or checked (None: fast path)


@dataclass(kw_only=True)
class _Substitute:
    """A poison Execute whose ErrorResponse is replaced by dbward's own error."""

    token: str
    unit: int
    error: bytes


@dataclass(kw_only=True)
class _Completion:
    ticket: Ticket
    outcome: StatementOutcome
    masked: list[dict[str, Any]] | None = None  # written as a MaskingApplied event first


# --------------------------------------------------------------------------- the relay's legs
class _Continuation:
    """The rest of a coroutine that was started in a transport callback and had to wait:
    awaited by a task, it hands the task what the coroutine waits on and drives it on from
    there (what ``asyncio.eager_task_factory`` does in Python 3.12)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, None, None]:
        coro, step = self.coro, self.first
        while True:
            try:
                yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the task's cancellation, passed on to the coroutine
                try:
                    step = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    step = coro.send(None)
                except StopIteration:
                    return


class _InTask:
    """Awaited before anything that may need a task of its own (``asyncio.timeout`` does, in
    the policy's and the catalog's code): processing that started in a transport callback
    goes on as a task from here; in a task already, it costs nothing."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        if asyncio.current_task() is None:
            yield None  # a bare yield: the pump's driver moves the rest into a task


_IN_TASK = _InTask()


async def _resume(coro: Coroutine[Any, Any, None], first: Any) -> None:
    await _Continuation(coro, first)


class _Pump:
    """One direction of the relay after login: the bytes one transport delivers, processed in
    order by ``process``.

    Processing starts eagerly, inside the transport's callback: the common case (a statement
    with a cached decision, or its answer) runs to its end there, with no task, future or
    stream in between. Only when processing has to wait (the gate's full path, the cancel
    gate) does it go on as a task of the relay's TaskGroup; bytes that arrive meanwhile queue
    behind it in order. The source transport stops reading while that queue is long or while
    the transport written to cannot take more, so memory stays flat whatever the result size.
    """

    def __init__(
        self,
        session: _Session,
        name: str,
        process: Callable[[bytes], Awaitable[None]],
        gone: type[Exception],
    ) -> None:
        self.session = session
        self.name = name
        self.process = process
        self.gone = gone
        self.source: asyncio.Transport | None = None
        self.queue = bytearray()  # bytes received while processing waited
        self.eof = False
        self.running = False
        self.task: asyncio.Task[None] | None = None
        self.sink_full = False  # the transport this direction writes to asked for a pause
        self.paused = False

    def feed(self, data: bytes) -> None:
        if self.running:
            self.queue += data
            self._flow()
        elif self.session.relaying:
            self._drive(self._run(data))

    def end(self) -> None:
        if self.eof:
            return
        self.eof = True
        if not self.running and self.session.relaying:
            self._drive(self._run(b""))

    def sink(self, full: bool) -> None:
        self.sink_full = full
        self._flow()

    def _flow(self) -> None:
        want = self.sink_full or len(self.queue) > CHUNK
        src = self.source
        if want != self.paused and src is not None and not src.is_closing():
            self.paused = want
            if want:
                src.pause_reading()
            else:
                src.resume_reading()

    async def _run(self, data: bytes) -> None:
        self.running = True
        try:
            if data:
                await self.process(data)
            while True:
                if self.queue:
                    data = bytes(self.queue)
                    self.queue.clear()
                    self._flow()
                    await self.process(data)
                elif self.eof:
                    raise self.gone()
                else:
                    return
        except (ConnectionError, OSError):
            raise self.gone() from None
        finally:
            self.running = False
            self.task = None
            self._flow()

    def _drive(self, coro: Coroutine[Any, Any, None]) -> None:
        session = self.session
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            session.end_relay(exc)
            return
        tg = session.tg
        try:
            if tg is None:
                raise RuntimeError("the relay has no task group")
            self.task = tg.create_task(_resume(coro, waiting), name=self.name)
        except RuntimeError:  # the relay is ending: nothing more is processed
            coro.close()


class _Leg(asyncio.Protocol):
    """The protocol of one of the session's two transports once the relay runs (it replaces
    the stream protocol of the login phase, which still hears of the connection's end so
    that the streams close cleanly)."""

    def __init__(self, pump: _Pump, writer: _Pump, previous: asyncio.BaseProtocol, *, tls: bool) -> None:
        self.pump = pump  # processes what this transport receives
        self.writer = writer  # writes into this transport
        self.previous = previous
        self.tls = tls
        self.ctx = pump.session.ctx

    def data_received(self, data: bytes) -> None:
        self.ctx.run(self.pump.feed, data)

    def eof_received(self) -> bool:
        self.ctx.run(self.pump.end)
        return not self.tls  # the session closes the transport (TLS transports close themselves)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.run(self.pump.end)
        self.previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self.writer.sink(True)

    def resume_writing(self) -> None:
        self.writer.sink(False)


class _Inbound:
    """What one direction of the relay holds between two reads: how much of a large frame is
    still to come (relayed as it arrives, never held whole), and the start of a frame whose
    rest has not arrived yet."""

    __slots__ = ("passing", "tail")

    def __init__(self) -> None:
        self.passing = 0
        self.tail = bytearray()

    def pass_through(self, data: bytes, to: asyncio.Transport) -> tuple[int, bytes]:
        """Relay the part of ``data`` that continues a passed-through frame; return how many
        bytes that was and the rest of ``data``."""
        take = min(self.passing, len(data))
        to.write(data[:take])
        self.passing -= take
        return take, data[take:]

    def joined(self, data: bytes) -> bytes | bytearray:
        """``data`` after the incomplete frame held from the last read (``data`` itself when
        there is none: no copy)."""
        tail = self.tail
        if tail:
            tail += data
            return tail
        return data

    def keep(self, buf: bytes | bytearray, pos: int) -> None:
        """Hold ``buf[pos:]``, the incomplete frame this read ended in, for the next read."""
        tail = self.tail
        if buf is tail:
            del tail[:pos]
        elif pos < len(buf):
            tail += buf[pos:]


def _take_buffered(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """What a login-phase stream reader holds that nobody read yet, and whether it saw the end."""
    held: bytearray = reader._buffer  # type: ignore[attr-defined]
    data = bytes(held)
    held.clear()
    return data, reader.at_eof() or reader.exception() is not None


# --------------------------------------------------------------------------- the engine
@register
class PostgresEngine:
    """One instance per node; it owns the cancel-key map of the node's PostgreSQL sessions."""

    protocol: ClassVar[str] = PROTOCOL

    def __init__(self) -> None:
        self.cancel_keys: dict[tuple[int, bytes], CancelRoute] = {}

    async def serve(self, client: ClientConnection, deps: EngineDeps) -> None:
        await _Session(self, client, deps).run()

    def issue_keys(
        self, route: CancelRoute, key_length: int, workers: WorkerPeers | None = None
    ) -> tuple[int, bytes]:
        """Cancel keys for a new session; with worker processes, the process id names this one."""
        while True:
            pid = secrets.randbelow(0x7FFFFFFF - 1) + 1
            if workers is not None:
                pid = workers.stamp(pid)
                if pid > 0x7FFFFFFF:
                    continue
            secret = secrets.token_bytes(key_length)
            if (pid, secret) not in self.cancel_keys:
                self.cancel_keys[(pid, secret)] = route
                return pid, secret

    async def cancel_local(self, pid: int, secret: bytes) -> None:
        """Cancel the running statement of this process's session with these keys, if any."""
        route = self.cancel_keys.get((pid, secret))
        if route is None:
            log.info("cancel request with unknown keys ignored")
            return
        await send_cancel(route)


class _Session:
    def __init__(self, engine: PostgresEngine, client: ClientConnection, deps: EngineDeps) -> None:
        self.engine = engine
        self.client = client
        self.deps = deps
        self.loop = asyncio.get_running_loop()
        self.pending = bytearray(client.initial_data)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.tls = False
        self.minor = 0
        self.session: SessionInfo | None = None
        self.live: LiveSession | None = None
        self.up: Upstream | None = None
        self.route: CancelRoute | None = None
        self.my_keys: tuple[int, bytes] | None = None
        self.kill_reason: asyncio.Future[str] = self.loop.create_future()
        # protocol state shared by the two relay directions
        self.statements: dict[str, _Prepared] = {}
        self.portals: dict[str, _Portal] = {}
        self.slots: deque[_Slot] = deque()
        self.substitutes: deque[_Substitute] = deque()
        # Describe 'S' messages awaiting their ParameterDescription (binary parameters need the types)
        self.describes: deque[tuple[int, _Prepared | None]] = deque()
        # every Describe awaiting its RowDescription / NoData (results of masked statements)
        self.row_describes: deque[_Desc] = deque()
        # every column masked for the user in the session's catalog (the wire cross-check)
        self.wire_sources: dict[str, Any] = {}
        self.tx_status = "I"  # of the target's last ReadyForQuery
        self.sql_cursors: dict[str, _Portal] = {}  # row counts of SQL cursors (DECLARE / FETCH)
        # closed while dbward cancels the rest of a cut result: nothing new goes upstream until
        # the target has had the cancel signal, so it can only hit the statement it was meant for
        self.cancel_gate = asyncio.Event()
        self.cancel_gate.set()
        self.cancel_task: asyncio.Task[None] | None = None
        self.units_sent = 0  # Query / Sync messages forwarded (each answered by one ReadyForQuery)
        self.units_done = 0
        self.skipping = False  # after a refusal in extended mode, until Sync
        self.copy_in = False  # the target is in COPY FROM STDIN mode, where it ignores Sync
        self.relayed = 0  # bytes relayed to the client so far
        self.mark = 0  # value of ``relayed`` when the previous statement completed
        # the relay (after login): one pump per direction over the two transports
        self.ctx = contextvars.copy_context()
        self.tg: asyncio.TaskGroup | None = None
        self.relaying = False
        self.relay_end: asyncio.Future[None] = self.loop.create_future()
        self.front = _Pump(self, "pg-frontend", self._client_bytes, _ClientGone)
        self.back = _Pump(self, "pg-backend", self._server_bytes, _UpstreamGone)
        self.client_tr: asyncio.Transport | None = None
        self.up_tr: asyncio.Transport | None = None
        self.front_in = _Inbound()  # what the client sent that its next read completes
        self.back_in = _Inbound()
        self.back_rows = 0  # rows counted since the last completion

    # ------------------------------------------------------------------ top level
    async def run(self) -> None:
        try:
            try:
                async with asyncio.timeout(AUTH_TIMEOUT):
                    startup = await self._startup()
                    if startup is None:
                        return
                    ready = await self._login(startup)
                await self._serve(*ready)
            except TimeoutError:
                await self._fail(
                    ProtocolError(f"the client did not complete the login within {AUTH_TIMEOUT:g} seconds")
                )
            except m.WireError as exc:
                await self._fail(ProtocolError(f"invalid message from the client: {exc}"))
            except DbwardError as exc:
                await self._fail(exc)
            except UpstreamRefused as exc:
                await self._send_quietly(exc.error.encode())
            except (_ClientGone, _UpstreamGone):
                pass
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                log.info("client connection ended: %s", exc.__class__.__name__)
            except asyncio.CancelledError:
                await self._fail(
                    SessionKilled("terminating connection because dbward is shutting down (graceful drain)")
                )
                raise
            except Exception:
                # A bug in one session must end only that session, and say so.
                log.exception(
                    "postgres session from %s ended with an internal error", self.client.client.host
                )
                await self._fail(
                    DbwardError(
                        "dbward hit an internal error in this session; the details are in dbward's log"
                    )
                )
        finally:
            if self.my_keys is not None:
                self.engine.cancel_keys.pop(self.my_keys, None)
            # A statement still running when the session ends (client gone, killed, idle, error)
            # is cancelled on the target: closing the socket alone would not stop it.
            await self._cancel_running()
            for w in (self.up.writer if self.up else None, self.writer):
                if w is not None:
                    w.close()
            # Let the transports let go of their sockets before the listener closes the client's.
            for w in (self.up.writer if self.up else None, self.writer):
                if w is not None:
                    try:
                        await asyncio.wait_for(w.wait_closed(), 5)
                    except (OSError, TimeoutError, ConnectionError, ssl.SSLError):
                        pass

    async def _fail(self, exc: DbwardError) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(error_response(exc, fatal=True))
            await asyncio.wait_for(self.writer.drain(), 5)
        except (OSError, TimeoutError, ConnectionError):
            pass

    # ------------------------------------------------------------------ startup phase
    async def _recv_exact_raw(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = await self.loop.sock_recv(self.client.sock, n - len(self.pending))
            if not chunk:
                raise ConnectionError("client closed during startup")
            self.pending += chunk
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    async def _peek_raw(self) -> int:
        if self.pending:
            return self.pending[0]
        fut: asyncio.Future[None] = self.loop.create_future()
        fd = self.client.sock.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self.loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            self.loop.remove_reader(fd)
        b = self.client.sock.recv(1, socket.MSG_PEEK)
        if not b:
            raise ConnectionError("client closed during startup")
        return b[0]

    async def _open_streams(self, ctx: ssl.SSLContext | None) -> None:
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        if self.pending:
            reader.feed_data(bytes(self.pending))
            self.pending.clear()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await self.loop.connect_accepted_socket(
            lambda: protocol, sock=self.client.sock, ssl=ctx
        )
        self.reader = reader
        self.writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
        self.tls = ctx is not None

    async def _read_startup_stream(self) -> bytes:
        assert self.reader is not None
        head = await self.reader.readexactly(4)
        (length,) = struct.unpack("!I", head)
        if length < 8 or length > m.MAX_STARTUP:
            raise m.WireError("the startup packet length is invalid")
        return head + await self.reader.readexactly(length - 4)

    def _server_tls(self) -> ssl.SSLContext | None:
        ctx = self.deps.server_tls
        if ctx is not None and not getattr(ctx, "_dbward_pg_alpn", False):
            # PostgreSQL 17+ clients using direct TLS require ALPN "postgresql".
            ctx.set_alpn_protocols(["postgresql"])
            ctx._dbward_pg_alpn = True  # type: ignore[attr-defined]
        return ctx

    async def _startup(self) -> m.StartupMessage | None:
        """TLS negotiation and the StartupMessage; None when the connection was a CancelRequest."""
        first = await self._peek_raw()
        if first == 0x16:  # a TLS ClientHello: direct TLS (sslnegotiation=direct)
            ctx = self._server_tls()
            if ctx is None:
                raise ProtocolError(
                    "direct TLS is not available: no TLS certificate is configured (proxy.tls_cert)"
                )
            if self.pending:  # the first TLS bytes were read with a PROXY v1 header
                raise ProtocolError(
                    "direct TLS right behind a PROXY v1 header is not supported; use PROXY v2"
                )
            await self._open_streams(ctx)
            assert self.writer is not None
            obj = self.writer.get_extra_info("ssl_object")
            if obj is None or obj.selected_alpn_protocol() != "postgresql":
                raise ProtocolError('direct TLS connections must negotiate the ALPN protocol "postgresql"')
            packet = m.decode_startup(await self._read_startup_stream())
        else:
            while True:
                head = await self._recv_exact_raw(4)
                (length,) = struct.unpack("!I", head)
                if length < 8 or length > m.MAX_STARTUP:
                    raise ProtocolError(
                        "the client sent an invalid startup packet (is it a PostgreSQL client?)"
                    )
                packet = m.decode_startup(head + await self._recv_exact_raw(length - 4))
                # SSLRequest is read with exact-size receives so that a ClientHello sent right
                # behind it stays in the socket for the TLS transport (the STARTTLS race).
                if isinstance(packet, m.GSSENCRequest):
                    await self.loop.sock_sendall(self.client.sock, b"N")
                    continue
                if isinstance(packet, m.SSLRequest):
                    ctx = self._server_tls()
                    if ctx is None:
                        await self.loop.sock_sendall(self.client.sock, b"N")
                        continue
                    if self.pending:  # bytes sent before the TLS handshake could be injected
                        raise ProtocolError("the client sent data before the TLS handshake")
                    await self.loop.sock_sendall(self.client.sock, b"S")
                    await self._open_streams(ctx)
                    packet = m.decode_startup(await self._read_startup_stream())
                else:
                    await self._open_streams(None)
                break
        if isinstance(packet, m.CancelRequest):
            await self._forward_cancel(packet)
            return None
        if not isinstance(packet, m.StartupMessage):
            raise ProtocolError("the client asked for encryption again after TLS was set up")
        return packet

    async def _forward_cancel(self, req: m.CancelRequest) -> None:
        workers = self.deps.workers
        if workers is not None and (owner := workers.owner(req.pid)) != workers.index:
            await workers.cancel(owner, req.pid, req.secret)  # another process's session
            return
        await self.engine.cancel_local(req.pid, req.secret)

    # ------------------------------------------------------------------ authentication
    async def _read_password_message(self) -> bytes:
        assert self.reader is not None
        hdr = await self.reader.readexactly(5)
        t, length = _HDR.unpack(hdr)
        if t != b"p" or length < 4 or length > 65536:
            raise ProtocolError("the client sent something other than the expected authentication message")
        return await self.reader.readexactly(length - 4)

    async def _send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def _authenticate(self, user: str) -> tuple[UserCredentials, StoredSecret] | None:
        creds = await self.deps.auth.lookup(user) if user else None
        if creds is not None and creds.disabled:
            creds = None
        if self.tls:
            await self._send(m.Authentication(m.AUTH_CLEARTEXT).encode())
            body = await self._read_password_message()
            password = m.decode_password(body).password
            # an unknown user costs the same work, so the answer's timing does not reveal who exists
            found = await asyncio.to_thread(verify_cleartext, creds, password)
            if creds is None:
                return None
            return (creds, found) if found is not None else None
        # SCRAM-SHA-256 against the password, or the newest proxy token when there is no password.
        secret = creds.secrets[0] if creds is not None and creds.secrets else None
        verifier = secret.verifiers.scram if secret is not None else _decoy_verifier()
        server = ScramServer(verifier.salt, verifier.stored_key, verifier.server_key, verifier.iterations)
        await self._send(m.Authentication.sasl("SCRAM-SHA-256").encode())
        initial = m.decode_sasl_initial(await self._read_password_message())
        try:
            server_first = server.first(initial.mechanism, initial.data or b"")
        except ScramError as exc:
            raise AuthenticationError(f'SCRAM authentication failed for user "{user}": {exc}') from None
        await self._send(m.Authentication(m.AUTH_SASL_CONTINUE, server_first).encode())
        final = await self._read_password_message()
        try:
            server_final = server.final(final)
        except ScramError as exc:
            raise AuthenticationError(f'SCRAM authentication failed for user "{user}": {exc}') from None
        if server_final is None or creds is None or secret is None:
            return None
        await self._send(m.Authentication(m.AUTH_SASL_FINAL, server_final).encode())
        return creds, secret

    async def _resolve_target(self, database: str) -> tuple[Target, str]:
        if self.client.target is not None:
            t = self.client.target
            return t, database or t.database or t.username
        name, _, db = database.partition("/")
        target = await self.deps.directory.by_name(name) if name else None
        if target is None or target.engine.value != PROTOCOL:
            raise NotFoundError(
                f'dbward has no PostgreSQL connection named "{name}"; on the shared port use '
                'database "connection/database" (for example "orders/app")'
            )
        return target, db or target.database or target.username

    async def _login(self, startup: m.StartupMessage) -> tuple[str, Target, str, dict[str, str]]:
        params = dict(startup.params)
        user = params.get("user", "")
        database = params.get("database") or user
        if "replication" in params and params["replication"].lower() not in ("false", "off", "0", "no"):
            raise UnsupportedFeature("replication connections are not supported through dbward")
        # protocol 3.0 and 3.2 are spoken; newer minors and _pq_ options are declined (3.2 section 55.2.1)
        unsupported = tuple(k for k in params if k.startswith("_pq_."))
        self.minor = min(startup.minor, 2)
        if startup.minor > 2 or unsupported:
            await self._send(m.NegotiateProtocolVersion(self.minor, unsupported).encode())
        program = params.get("application_name") or None
        try:
            auth = await self._authenticate(user)
            if auth is None:
                raise AuthenticationError(
                    f'password authentication failed for user "{user}": dbward checks the dbward password '
                    "or a proxy token of the user, never the database's own password"
                )
        except AuthenticationError as exc:
            await self.deps.gate.reject_session(
                protocol=PROTOCOL,
                reason=exc.message,
                error_code=exc.code,
                user=user,
                target=self.client.target,
                client_host=self.client.client.host,
                client_source=self.client.client.source,
                client_program=program,
            )
            raise
        creds, secret = auth
        if secret.method == "proxy_token":
            await self.deps.auth.touch_token(creds.principal.username, secret.name)
        try:
            target, dbname = await self._resolve_target(database)
        except DbwardError as exc:
            await self.deps.gate.reject_session(
                protocol=PROTOCOL,
                reason=exc.message,
                error_code=exc.code,
                user=user,
                client_host=self.client.client.host,
                client_source=self.client.client.source,
                client_program=program,
            )
            raise
        self.session = SessionInfo(
            principal=creds.principal,
            target=target,
            client=self.client.client,
            database=dbname,
            client_program=program,
            protocol_user=user,
            tls=self.tls,
        )
        forward = {
            k: v
            for k, v in params.items()
            if k not in ("user", "database", "replication") and not k.startswith("_pq_.")
        }
        return secret.method, target, dbname, forward

    async def _serve(self, auth_method: str, target: Target, dbname: str, forward: dict[str, str]) -> None:
        assert self.session is not None
        async with session_lifecycle(
            self.deps, self.session, protocol=PROTOCOL, auth_method=auth_method, kill=self._kill
        ) as live:
            self.live = live
            await self._connect_upstream(target, dbname, forward)
            await self._relay()

    async def _send_quietly(self, data: bytes) -> None:
        try:
            await self._send(data)
        except (ConnectionError, OSError):
            pass

    async def _connect_upstream(self, target: Target, dbname: str, params: dict[str, str]) -> None:
        password = await self.deps.directory.upstream_password(target)
        up = await connect(
            target, password, dbname, params, timeout=self.deps.settings.proxy.connect_timeout_seconds
        )
        self.up = up
        self.tx_status = up.status
        self.route = CancelRoute(
            host=target.host,
            port=target.port,
            tls_mode=target.tls_mode,
            tls_ca=target.tls_ca,
            pid=up.pid,
            secret=up.secret,
        )
        for frame in scan(up.startup_frames):
            if frame.type == b"S":
                status = m.decode_backend(frame.type[0], up.startup_frames[frame.body_start : frame.end])
                assert isinstance(status, m.ParameterStatus)
                self._parameter(status.name, status.value)
        pid, key = self.engine.issue_keys(self.route, 32 if self.minor >= 2 else 4, self.deps.workers)
        self.my_keys = (pid, key)
        await self._send(
            m.Authentication(m.AUTH_OK).encode()
            + up.startup_frames
            + m.BackendKeyData(pid, key).encode()
            + m.ReadyForQuery(up.status).encode()
        )

    # ------------------------------------------------------------------ kill, cancel, idle
    async def _kill(self, reason: str) -> None:
        if self.live is not None:
            self.live.end_reason = reason
        if not self.kill_reason.done():
            self.kill_reason.set_result(reason)

    async def _cancel_running(self) -> None:
        if self.route is not None and self.units_sent > self.units_done:
            await send_cancel(self.route)

    async def _watch(self) -> None:
        assert self.live is not None
        live = self.live
        idle = self.deps.settings.proxy.idle_timeout_seconds
        kill = asyncio.ensure_future(asyncio.shield(self.kill_reason))
        try:
            while True:
                remaining = live.last_activity + idle - time.monotonic()
                if remaining <= 0:
                    if live.busy:
                        live.touch()
                        continue
                    live.end_reason = f"idle for more than {idle:g} seconds (proxy.idle_timeout_seconds)"
                    raise IdleTimeout(
                        f"the session was closed after {idle:g} seconds without activity "
                        "(setting proxy.idle_timeout_seconds)"
                    )
                done, _ = await asyncio.wait({kill}, timeout=remaining)
                if done:
                    raise SessionKilled(f"the session was terminated: {kill.result()}")
        finally:
            kill.cancel()

    # ------------------------------------------------------------------ relay
    async def _relay(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                tg.create_task(self._watch(), name="pg-watch")
                tg.create_task(self._relay_ended(), name="pg-relay")
                self._start_legs()
        except* _ClientGone:
            pass
        except* _UpstreamGone:
            if self.live is not None:
                self.live.end_reason = "the target database closed the connection"
        except* DbwardError as eg:
            exc = eg.exceptions[0]
            assert isinstance(exc, DbwardError)
            raise exc from None
        except* m.WireError as eg:
            raise ProtocolError(f"invalid message: {eg.exceptions[0]}") from None
        finally:
            self.relaying = False
            if not self.relay_end.done():
                self.relay_end.cancel()
            elif not self.relay_end.cancelled():
                self.relay_end.exception()  # retrieved (it may have lost the race to end the relay)

    async def _relay_ended(self) -> None:
        await self.relay_end

    def end_relay(self, exc: Exception) -> None:
        """End the relay with ``exc`` (raised by processing that ran in a transport callback)."""
        self.relaying = False
        if not self.relay_end.done():
            self.relay_end.set_exception(exc)

    def _start_legs(self) -> None:
        """Move both connections from the login phase's streams to the relay's protocols."""
        assert self.reader is not None and self.writer is not None and self.up is not None
        self.ctx = contextvars.copy_context()  # the session's (its id is in the log lines)
        client_tr = cast(asyncio.Transport, self.writer.transport)
        up_tr = cast(asyncio.Transport, self.up.writer.transport)
        client_data, client_eof = _take_buffered(self.reader)
        up_data, up_eof = _take_buffered(self.up.reader)
        self.client_tr, self.up_tr = client_tr, up_tr
        self.front.source, self.back.source = client_tr, up_tr
        self.relaying = True
        client_tr.set_protocol(_Leg(self.front, self.back, client_tr.get_protocol(), tls=self.tls))
        up_tr.set_protocol(_Leg(self.back, self.front, up_tr.get_protocol(), tls=self.up.tls))
        for tr in (client_tr, up_tr):
            if not tr.is_closing() and not tr.is_reading():
                tr.resume_reading()  # a stream reader may have paused it
        self.ctx.run(self._feed_leftovers, up_data, up_eof, client_data, client_eof)

    def _feed_leftovers(self, up_data: bytes, up_eof: bool, client_data: bytes, client_eof: bool) -> None:
        if up_data:
            self.back.feed(up_data)
        if up_eof:
            self.back.end()
        if client_data:
            self.front.feed(client_data)
        if client_eof:
            self.front.end()

    def _set_busy(self) -> None:
        if self.live is not None:
            self.live.busy = self.units_sent > self.units_done

    # ---- client -> target
    async def _client_bytes(self, data: bytes) -> None:
        """One read of the client's bytes: each message through the gate, then one write upstream."""
        assert self.up_tr is not None and self.live is not None
        up = self.up_tr
        self.live.touch()
        inbound = self.front_in
        gate = self.deps.gate
        if inbound.passing:
            gate.flush()  # what this continues must not overtake statements held for their record
            _, data = inbound.pass_through(data, up)
            if not data:
                return
        buf = inbound.joined(data)
        out = bytearray()
        pos, n = 0, len(buf)
        while n - pos >= 5:
            t, length = _HDR.unpack_from(buf, pos)
            if length < 4 or length > m.MAX_MESSAGE:
                raise ProtocolError(f"the client sent a message of impossible length ({t!r})")
            end = pos + 1 + length
            if end > n:
                if t == b"d" and length > PASSTHROUGH_MIN:
                    out += buf[pos:n]
                    inbound.passing = end - n
                    pos = n
                break
            if t in (b"d", b"c", b"f", b"H"):
                if t != b"d" and t != b"H":
                    self.copy_in = False  # CopyDone / CopyFail end the client's COPY data
                out += buf[pos:end]
            elif t == b"X":
                out += buf[pos:end]
                gate.flush()  # the session ends now: the statements before it go first
                up.write(bytes(out))
                raise _ClientGone()
            else:
                await self._handle(t, bytes(buf[pos + 5 : end]), bytes(buf[pos:end]), out)
            pos = end
        inbound.keep(buf, pos)
        if out:
            if not self.cancel_gate.is_set():
                await self.cancel_gate.wait()
            # after the journal's write of this loop iteration, which carries their decisions
            gate.forward(up, out, self.end_relay)
            self._set_busy()

    def _poison(self, exc: DbwardError, out: bytearray, *, sync: bool) -> None:
        """Stand-in for a refused message: the target fails it, dbward substitutes its error."""
        token = secrets.token_hex(12)
        self.substitutes.append(_Substitute(token=token, unit=self.units_sent, error=error_response(exc)))
        out += m.Execute(f"dbward_refused_{token}").encode()
        if sync:
            out += m.Sync().encode()
            self.units_sent += 1

    async def _refresh_wire_sources(self) -> None:
        """Keep the session's masked columns current (after a decision read the catalog)."""
        fn = getattr(self.deps.gate.policy, "wire_sources", None)
        if fn is None or self._masking_catalog() is None:
            return
        try:
            self.wire_sources = await fn(self.session_info)
        except Exception:  # the catalog could not be read: the decisions deny, nothing to add here
            log.info("masked columns of the session could not be listed; keeping the previous list")

    async def _decide(self, statement: Statement) -> Ticket | DbwardError:
        """The gate's answer: a ticket to forward under, or the error to answer with instead."""
        assert self.session is not None and self.live is not None
        refuse: Decision | None = None
        kind = copy_kind(statement.sql)
        if kind in ("program", "file") and not self.deps.settings.proxy.allow_copy_program:
            what = "a program" if kind == "program" else "a file on the database server"
            refuse = Decision.deny(
                f"denied: COPY to or from {what} is refused by the setting proxy.allow_copy_program; "
                "use COPY ... FROM STDIN / TO STDOUT (psql \\copy) instead",
                "setting:proxy.allow_copy_program",
            )
        gate = self.deps.gate
        try:
            # the gate's synchronous path first: a decision its policy holds in the cache
            ticket = gate.check_cached(self.session, statement, queued=True) if refuse is None else None
            if ticket is None:
                await _IN_TASK
                ticket = await gate.check(self.session, statement, refuse=refuse)
        except AuditUnavailable as exc:
            return exc  # fail closed: this statement is refused, the session stays usable
        self.live.statements += 1
        d = ticket.decision
        if d.allowed:
            if self._masking_catalog() is not None:
                await _IN_TASK
                await self._refresh_wire_sources()
            return ticket
        if d.effect is Effect.REQUIRE_APPROVAL:
            return ApprovalRequired(d.message)
        return StatementDenied(d.message)

    async def _handle(self, t: bytes, body: bytes, raw: bytes, out: bytearray) -> None:
        """One client message of the extended or simple protocol (not COPY data, Flush or
        Terminate): through the gate where it runs a statement, then into ``out``. Dispatched
        on the type byte and read with the codec's field readers: this runs for every message."""
        assert self.session is not None
        if self.skipping and t != b"S":
            return  # as the server does after an error: discard until Sync
        db = self.session.database
        if t == b"Q":
            await self._on_query(m.query_fields(body), raw, out, db)
        elif t == b"P":
            name, sql, types = m.parse_fields(body)
            answer = await self._decide(
                Statement(sql=sql, origin=StatementOrigin.PREPARE, database=db, statement_name=name or None)
            )
            existing = self.statements.get(name)
            if isinstance(answer, DbwardError):
                if existing is None or existing.refusal is not None or name == "":
                    self.statements[name] = _Prepared(
                        name=name, sql=sql, param_types=types, refusal=answer.message
                    )
                self._poison(answer, out, sync=False)
                self.skipping = True
                return
            if existing is None or existing.refusal is not None or name == "":
                self.statements[name] = _Prepared(
                    name=name, sql=sql, param_types=types, decision=answer.decision
                )
            self.slots.append(_Slot(ticket=answer, unit=self.units_sent, parse=True))
            out += raw
        elif t == b"B":
            portal, name, param_formats, values, result_formats = m.bind_fields(body)
            stmt = self.statements.get(name)
            if stmt is not None and stmt.refusal is not None:
                self._poison(
                    StatementDenied(
                        f'prepared statement "{name}" was refused by dbward when it was parsed: {stmt.refusal}'
                    ),
                    out,
                    sync=False,
                )
                self.skipping = True
                return
            if stmt is None:
                # Not parsed in this protocol session: a statement prepared with SQL PREPARE
                # (or none at all, which the target reports). The gate sees its SQL equivalent.
                stmt = _Prepared(name=name, sql=f"EXECUTE {_quote_ident(name)}", param_types=())
            params = decode_params(values, param_formats, stmt.param_types) if values else ()
            self.portals[portal] = _Portal(statement=stmt, params=params, result_formats=result_formats)
            out += raw
        elif t == b"E":
            portal, max_rows = m.execute_fields(body)
            p = self.portals.get(portal)
            if p is None:
                # A cursor opened with SQL DECLARE is a portal too; the gate sees the FETCH.
                limit = str(max_rows) if max_rows > 0 else "ALL"
                stmt = _Prepared(name="", sql=f"FETCH {limit} FROM {_quote_ident(portal)}", param_types=())
                p = _Portal(statement=stmt, params=())
            answer = await self._decide(
                Statement(
                    sql=p.statement.sql,
                    origin=StatementOrigin.EXECUTE,
                    database=db,
                    params=p.params,
                    statement_name=p.statement.name or None,
                )
            )
            if isinstance(answer, DbwardError):
                self._poison(answer, out, sync=False)
                self.skipping = True
                return
            rw = self._rewrite_for(answer, p.statement.sql, p)
            if isinstance(rw, DbwardError):
                await self._abandon([answer], rw.message)
                self._poison(rw, out, sync=False)
                self.skipping = True
                return
            if rw is not None:
                self._prepare_execute(rw, p, portal, out)
            self.slots.append(_Slot(ticket=answer, unit=self.units_sent, rewrite=rw))
            out += raw
        elif t == b"S":
            if body:
                raise m.WireError("message has trailing bytes after its fields")
            self.skipping = False
            out += raw
            if not self.copy_in:
                self.units_sent += 1
        elif t == b"D":
            kind, name = m.target_fields(body)
            if kind == "S":
                st = self.statements.get(name)
                self.describes.append((self.units_sent, st))
                self.row_describes.append(
                    _Desc(unit=self.units_sent, prepared=st or _Prepared(name=name, sql="", param_types=()))
                )
            else:
                self.row_describes.append(_Desc(unit=self.units_sent, portal=self.portals.get(name)))
            out += raw
        elif t == b"C":
            kind, name = m.target_fields(body)
            (self.statements if kind == "S" else self.portals).pop(name, None)
            out += raw
        elif isinstance(m.decode_frontend(t[0], body), m.FunctionCall):  # unknown types raise WireError
            self._poison(
                UnsupportedFeature(
                    "the fast-path FunctionCall message is refused by dbward because the gate cannot "
                    "see what it runs; call the function with SELECT instead"
                ),
                out,
                sync=True,
            )
        else:
            raise ProtocolError(f"unexpected message {t!r} from the client")

    async def _on_query(self, sql: str, raw: bytes, out: bytearray, db: str | None) -> None:
        """A simple Query: every statement of it through the gate; one refusal refuses it all."""
        self.statements.pop("", None)
        self.portals.pop("", None)
        parts = split_statements(sql)
        if len(parts) == 1:  # the common case, without the lists
            part = parts[0]
            answer = await self._decide(Statement(sql=part, database=db))
            if isinstance(answer, DbwardError):
                self._poison(answer, out, sync=True)
                return
            rw1 = self._rewrite_for(answer, part, None)
            if isinstance(rw1, DbwardError):
                await self._abandon([answer], rw1.message)
                self._poison(rw1, out, sync=True)
                return
            if rw1 is not None:
                rw1.solo = True
            self.slots.append(_Slot(ticket=answer, unit=self.units_sent, simple=True, rewrite=rw1))
            out += raw
            self.units_sent += 1
            return
        answers = [
            await self._decide(Statement(sql=part, database=db, index_in_batch=i, batch_size=len(parts)))
            for i, part in enumerate(parts)
        ]
        refusals = [a for a in answers if isinstance(a, DbwardError)]
        rewrites: list[_Rewrite | None] = []
        if not refusals:
            for part, ticket in zip(parts, answers, strict=True):
                assert isinstance(ticket, Ticket)
                rw = self._rewrite_for(ticket, part, None)
                if isinstance(rw, DbwardError):
                    refusals.append(rw)
                    await self._abandon([a for a in answers if isinstance(a, Ticket)], rw.message)
                    break
                rewrites.append(rw)
        if refusals:  # one refused statement refuses the whole message, as one error
            self._poison(refusals[0], out, sync=True)
            return
        if len(rewrites) == 1 and rewrites[0] is not None:
            rewrites[0].solo = True
        for ticket, rw in zip(answers, rewrites, strict=True):
            assert isinstance(ticket, Ticket)
            self.slots.append(_Slot(ticket=ticket, unit=self.units_sent, simple=True, rewrite=rw))
        out += raw
        self.units_sent += 1

    # ------------------------------------------------------------------ masking and row limits
    def _masking_catalog(self) -> Any:
        """The catalog the evaluator read for this session (None: no masking rule applies)."""
        cats = self.deps.catalogs
        return cats.watching(self.session_info) if cats is not None else None

    def _rewrite_for(self, ticket: Ticket, sql: str, portal: _Portal | None) -> _Rewrite | DbwardError | None:
        """How the result of an allowed statement is rewritten (None: the fast path), or the
        refusal of a COPY whose output dbward cannot mask."""
        d = ticket.decision
        plan, limit = d.masking, d.row_limit
        if plan is None and limit is None and self._masking_catalog() is None:
            return None
        rw = _Rewrite(plan=plan, limit=limit, sql=sql, portal=portal, counter=portal)
        cursor = _cursor_of(sql)
        if cursor is not None:
            verb, name = cursor
            if verb == "declare":
                self.sql_cursors.pop(name, None)  # a new cursor of that name: a new count
            else:  # FETCH: the row limit counts over every FETCH of the cursor
                rw.counter = self.sql_cursors.setdefault(
                    name, _Portal(statement=_Prepared(name="", sql=sql, param_types=()), params=())
                )
        if plan is not None and d.kind == "COPY TO":
            try:
                rw.copy = CopyMasker(
                    dict(plan.columns), sql, encoding=self._encoding(), token_key=self.deps.masking_key
                )
            except CopyUnmaskable as exc:
                return StatementDenied(
                    f"denied: {exc}, and this COPY reads columns masked for user "
                    f"{self.session_info.principal.username} ({plan.describe()}); use COPY in text or "
                    "CSV format without those options"
                )
        return rw

    async def _abandon(self, tickets: list[Ticket], why: str) -> None:
        """Allowed statements dbward refused after all (their completion says why)."""
        await _IN_TASK
        for t in tickets:
            await self.deps.gate.complete(
                self.session_info, t, StatementOutcome(error=why, error_code="masking_refused")
            )

    def _encoding(self) -> str:
        return python_encoding(self.session_info.attributes.get("client_encoding"))

    def _prepare_execute(self, rw: _Rewrite, p: _Portal, portal: str, out: bytearray) -> None:
        """Give an Execute's rewrite the columns of its result: from the portal's Describe, the
        statement's Describe with the Bind's formats, a Describe still on its way, or a Describe
        dbward sends itself (its answer is not relayed)."""
        rw.describe_plan = p.statement.decision.masking if p.statement.decision is not None else None
        if rw.plan is None and self._masking_catalog() is None:
            return  # only the row limit: rows are counted, not decoded
        if p.fields is not None:
            self._arm(rw, p.fields, stale=p.stale)
            return
        pending = next(
            (d for d in self.row_describes if d.portal is p and d.unit == self.units_sent and not d.hidden),
            None,
        )
        if pending is not None:
            pending.rewrite = rw
            return
        if p.statement.fields is not None:
            self._arm(rw, _with_formats(p.statement.fields, p.result_formats), stale=p.statement.stale)
            return
        out += m.Describe("P", portal).encode()
        self.row_describes.append(_Desc(unit=self.units_sent, portal=p, hidden=True, rewrite=rw))

    def _result_masks(
        self, fields: tuple[wrows.Field, ...], plans: tuple[MaskingPlan | None, ...]
    ) -> ResultMasks:
        cat = self._masking_catalog()
        origins: list[tuple[str | None, str | None, str | None] | None] = []
        unknown: list[int] = []
        for f in fields:
            if f.table_oid == 0 or cat is None:
                origins.append(None)
                continue
            origin = cat.origin(f.table_oid, f.attnum)
            if origin is None and f.table_oid not in cat.relations:
                unknown.append(f.table_oid)
            origins.append(origin)
        if unknown:
            return stale_masks(len(fields))
        masks: dict[int, Any] = {}
        wire_only: set[int] = set()
        for plan in plans:
            rm = result_masks(plan, origins)
            for i, mk in rm.masks.items():
                if i not in masks:
                    masks[i] = mk
                    if i in rm.wire_only:
                        wire_only.add(i)
        # a column whose wire origin is masked for the user is masked whatever the plan says
        # (a table swapped under a name the catalog still knows, a lineage gap)
        sources = self.wire_sources
        if sources:
            for i, origin in enumerate(origins):
                if origin is None or i in masks:
                    continue
                hit = sources.get(f"{origin[0]}.{origin[1]}.{origin[2]}".lower())
                if hit is not None:
                    masks[i] = hit
                    wire_only.add(i)
        return ResultMasks(masks, frozenset(wire_only))

    def _stale_notice(self, fields: tuple[wrows.Field, ...]) -> bytes:
        cat = self._masking_catalog()
        oids = sorted(
            {
                f.table_oid
                for f in fields
                if f.table_oid and cat is not None and f.table_oid not in cat.relations
            }
        )
        what = ", ".join(str(o) for o in oids)
        session = self.session_info
        if self.deps.catalogs is not None:
            self.deps.catalogs.suspect(session, f"a result came from table OID {what}")
        text = (
            f"dbward masked every column of this result: it comes from a table (OID {what}) that is not in "
            f"dbward's catalog of connection {session.target.name}, so dbward cannot tell which columns are "
            "masked; the catalog is being read again, run the statement again"
        )
        return m.NoticeResponse.build("01000", text, severity="WARNING").encode()

    def _arm(self, rw: _Rewrite, fields: tuple[wrows.Field, ...], *, stale: bool = False) -> bytes | None:
        """Set the rewrite's row masker for a result with ``fields``; the RowDescription the
        client must see (None: unchanged)."""
        masks = self._result_masks(fields, (rw.plan, rw.describe_plan))
        if stale or any(mk.rule_ids == ("masking:stale-catalog",) for mk in masks.masks.values()):
            masks = stale_masks(len(fields))
            rw.notice = self._stale_notice(fields)
        if not masks.masks:
            rw.masker = None
            return None
        rw.masker = RowMasker(fields, masks, encoding=self._encoding(), token_key=self.deps.masking_key)
        rw.audit = masks.audit_columns(rw.masker.names())
        return rw.masker.description()

    def _pop_desc(self) -> _Desc | None:
        while self.row_describes and self.row_describes[0].unit < self.units_done:
            self.row_describes.popleft()
        if self.row_describes and self.row_describes[0].unit == self.units_done:
            return self.row_describes.popleft()
        return None

    def _on_row_description(self, body: bytes) -> bytes | None:
        """A RowDescription: of a simple Query's result, or the answer to a Describe."""
        desc = self._pop_desc()
        if desc is None:
            slot = self.slots[0] if self.slots and self.slots[0].unit == self.units_done else None
            rw = slot.rewrite if slot is not None and not slot.parse else None
            if rw is None:
                return None
            return self._arm(rw, wrows.decode_row_description(body))
        if desc.rewrite is not None:
            fields = wrows.decode_row_description(body)
            if desc.portal is not None:
                desc.portal.fields = fields
            announced = self._arm(desc.rewrite, fields)
            return b"" if desc.hidden else announced
        if self._masking_catalog() is None:
            return None
        fields = wrows.decode_row_description(body)
        owner: _Prepared | _Portal | None = desc.prepared or desc.portal
        if owner is None:
            return None
        owner.fields = fields
        st = owner if isinstance(owner, _Prepared) else owner.statement
        plan = st.decision.masking if st.decision is not None else None
        masks = self._result_masks(fields, (plan,))
        owner.stale = any(mk.rule_ids == ("masking:stale-catalog",) for mk in masks.masks.values())
        if not masks.masks:
            return None
        return RowMasker(fields, masks, encoding=self._encoding(), token_key=b"").description()

    def _needs_slow(self) -> bool:
        for s in self.slots:
            if s.rewrite is not None:
                return True
        return any(d.hidden or d.rewrite is not None for d in self.row_describes)

    def _current_rewrite(self) -> _Rewrite | None:
        slot = self.slots[0] if self.slots else None
        if slot is None or slot.unit != self.units_done or slot.parse:
            return None
        return slot.rewrite

    def _rewrite_row(self, rw: _Rewrite, t: bytes, frame: bytes) -> bytes:
        """One DataRow or CopyData of a rewritten result: masked, or dropped past the row limit."""
        p = rw.counter
        if rw.limit is not None:
            sent = p.rows_sent if p is not None else rw.rows
            if sent >= rw.limit or (p is not None and p.cut):
                if not rw.cut:
                    rw.cut = True
                    self._cancel_rest(rw)
                if p is not None:
                    p.cut = True
                return b""
        rw.rows += 1
        if p is not None:
            p.rows_sent += 1
        if t == b"D":
            if rw.masker is not None:
                return rw.masker.row(frame[5:])
        elif rw.copy is not None:
            return rw.copy.row(frame[5:])
        return frame

    def _cancel_rest(self, rw: _Rewrite) -> None:
        """Cancel the rest of a cut result on the target instead of reading it all, when that
        cannot touch anything else: the only statement of a simple Query, outside a
        transaction block, nothing else outstanding, not a COPY. Otherwise the rest is read and
        dropped (the statement then completes as the target finishes it)."""
        if not (
            rw.solo
            and not rw.copy_out
            and self.tx_status == "I"
            and len(self.slots) == 1
            and self.units_sent - self.units_done == 1
            and not self.substitutes
            and self.route is not None
            and self.cancel_gate.is_set()
        ):
            return
        rw.cancelled = True
        self.cancel_gate.clear()
        route = self.route

        async def cancel() -> None:
            try:
                await send_cancel(route)
            finally:
                self.cancel_gate.set()

        self.cancel_task = asyncio.create_task(cancel(), name="pg-limit-cancel")

    def _copy_out_started(self, body: bytes) -> None:
        rw = self._current_rewrite()
        if rw is not None:
            rw.copy_out = True
        if rw is None or rw.plan is None:
            return
        n = int.from_bytes(body[1:3], "big") if len(body) >= 3 else 0
        if rw.copy is None:
            # fail closed: a COPY of masked columns dbward did not prepare for sends no rows
            rw.limit = 0
            return
        if rw.plan.mask_all:
            rw.copy.masks = dict.fromkeys(range(n), rw.plan.all_mask)
        if rw.copy.masks:
            names = [f"column {i + 1}" for i in range(n)]
            rw.audit = ResultMasks(dict(rw.copy.masks)).audit_columns(names)

    def _finish_rewrite(self, rw: _Rewrite, t: bytes, body: bytes) -> bytes | None:
        """The bytes that end a rewritten result (None: the target's own)."""
        if t == b"E":
            if rw.cancelled:
                err = m.decode_backend(t[0], body)
                assert isinstance(err, m.ErrorResponse)
                if err.sqlstate == "57014":  # our cancel: the statement ends as cut
                    return rw.notice + self._cut_tail(rw, "SELECT")
            plan = rw.plan
            if plan is not None and (plan.redact_errors or rw.masker is not None or rw.copy is not None):
                err = m.decode_backend(t[0], body)
                assert isinstance(err, m.ErrorResponse)
                keep = tuple((k, v) for k, v in err.fields if k in ("S", "V", "C"))
                return rw.notice + m.ErrorResponse((*keep, ("M", error_sentence(plan)))).encode()
            return (rw.notice + _frame(t, body)) if rw.notice else None
        if t not in (b"C", b"s") or not (rw.cut or rw.notice):
            return None
        if rw.cut:
            verb = "SELECT"
            if t == b"C":
                tag = m.decode_backend(t[0], body)
                assert isinstance(tag, m.CommandComplete)
                verb = tag.tag.split()[0] if tag.tag.split() else "SELECT"
            return rw.notice + self._cut_tail(rw, verb)
        return rw.notice + _frame(t, body)

    def _cut_tail(self, rw: _Rewrite, verb: str) -> bytes:
        assert rw.limit is not None
        notice = m.NoticeResponse.build(
            "01000", cut_notice(rw.limit, self.session_info.target.name), severity="NOTICE"
        ).encode()
        return notice + m.CommandComplete(f"{verb} {rw.rows}").encode()

    def _slow(
        self, buf: bytes | bytearray, done: list[_Completion], out: list[bytes], rows: int
    ) -> tuple[int, int]:
        """The result path when some result is rewritten: every frame is looked at, rows of
        rewritten results are masked or dropped, others relayed unchanged (in runs, not one
        by one). Returns the position up to which ``buf`` was consumed and the row count."""
        pos, n = 0, len(buf)
        seg = 0  # start of the not yet emitted part of buf
        emitted = 0  # bytes emitted for this chunk so far (for bytes_sent)
        unpack = _HDR.unpack_from
        rw = self._current_rewrite()
        passive = rw is None or _passive(rw)
        while n - pos >= 5:
            t, length = unpack(buf, pos)
            if length < 4 or length > m.MAX_MESSAGE:
                raise ProtocolError("the target sent a message of impossible length")
            end = pos + 1 + length
            if end > n:
                break
            if t == b"D" or t == b"d":
                rows += 1
                if passive:
                    if rw is not None:
                        rw.rows += 1
                    pos = end
                    continue
                assert rw is not None
                if t == b"D" and rw.masker is not None:
                    # a run of DataRows in one call to the masker, up to the row limit
                    p = rw.counter
                    budget = -1
                    if rw.limit is not None:
                        sent = p.rows_sent if p is not None else rw.rows
                        budget = 0 if sent >= rw.limit or (p is not None and p.cut) else rw.limit - sent
                    if budget:
                        piece, nxt, k = rw.masker.rows(buf, pos, n, budget)
                        if k:
                            rows += k - 1  # this frame is counted already
                            rw.rows += k
                            if p is not None:
                                p.rows_sent += k
                            if seg < pos:
                                out.append(bytes(buf[seg:pos]))
                                emitted += pos - seg
                            out.append(piece)
                            emitted += len(piece)
                            pos = seg = nxt
                            continue
                piece = self._rewrite_row(rw, t, bytes(buf[pos:end]))
            elif t in _CONTROL or t == b"H":
                body = bytes(buf[pos + 5 : end])
                replacement: bytes | None = None
                if t == b"H":
                    self._copy_out_started(body)
                else:
                    if t in (b"C", b"s", b"E") and rw is not None and not passive:
                        rows = rw.rows
                    replacement = self._on_control(t, body, rows, emitted + (end - seg), done)
                if t in (b"C", b"I", b"s", b"E"):
                    rows = 0
                rw = self._current_rewrite()
                passive = rw is None or _passive(rw)
                if replacement is None:
                    pos = end
                    continue
                piece = replacement
            else:
                pos = end
                continue
            if seg < pos:
                out.append(bytes(buf[seg:pos]))
                emitted += pos - seg
            if piece:
                out.append(piece)
                emitted += len(piece)
            pos = seg = end
        if seg < pos:
            out.append(bytes(buf[seg:pos]))
        return pos, rows

    # ---- target -> client
    async def _server_bytes(self, data: bytes) -> None:
        """One read of the target's bytes: frame headers scanned, control messages accounted,
        then one write to the client."""
        assert self.client_tr is not None and self.live is not None
        client = self.client_tr
        self.live.touch()
        inbound = self.back_in
        if inbound.passing:
            taken, data = inbound.pass_through(data, client)
            self.relayed += taken
            if not data:
                return
        buf = inbound.joined(data)
        done: list[_Completion] = []
        out: list[bytes] = []
        if self._needs_slow():
            pos, self.back_rows = self._slow(buf, done, out, self.back_rows)
        else:
            rows = self.back_rows
            unpack = _HDR.unpack_from
            seg = 0  # start of the not yet emitted part of buf
            pos, n = 0, len(buf)
            while n - pos >= 5:
                # the hot path: a run of complete DataRows is only counted (in C when built)
                pos, k = data_rows(buf, pos, n, m.MAX_MESSAGE)
                rows += k
                if n - pos < 5:
                    break
                t, length = unpack(buf, pos)
                end = pos + 1 + length
                if t == b"D" and 4 <= length <= m.MAX_MESSAGE:  # an incomplete DataRow
                    if length > PASSTHROUGH_MIN:
                        rows += 1
                        inbound.passing = end - n
                        pos = n
                    break
                if length < 4 or length > m.MAX_MESSAGE:
                    raise ProtocolError("the target sent a message of impossible length")
                if end > n:
                    if t == b"d" and length > PASSTHROUGH_MIN:
                        inbound.passing = end - n
                        pos = n
                    break
                if t in _CONTROL:
                    replacement = self._on_control(t, bytes(buf[pos + 5 : end]), rows, end, done)
                    if t in (b"C", b"I", b"s", b"E"):
                        rows = 0  # the rows counted so far belonged to the statement just ended
                    if replacement is not None:
                        out.append(bytes(buf[seg:pos]))
                        out.append(replacement)
                        seg = end
                pos = end
            if seg < pos:
                out.append(buf if seg == 0 and pos == n and isinstance(buf, bytes) else bytes(buf[seg:pos]))
            self.back_rows = rows
        inbound.keep(buf, pos)
        await self._flush(done, out)

    async def _flush(self, done: list[_Completion], out: list[bytes]) -> None:
        assert self.client_tr is not None
        gate, session = self.deps.gate, self.session_info
        # The audit trail hears of a completion (and of what was masked) before the client does.
        for c in done:
            if c.masked is not None:
                await _IN_TASK
                await gate.masked(session, c.ticket, c.masked)
            if not gate.complete_soon(session, c.ticket, c.outcome):
                await _IN_TASK
                await gate.complete(session, c.ticket, c.outcome)
        # one write per chunk read: a write per row would be a system call per row
        data = out[0] if len(out) == 1 else b"".join(out)
        if data:
            self.client_tr.write(data)
            self.relayed += len(data)
        self._set_busy()

    @property
    def session_info(self) -> SessionInfo:
        assert self.session is not None
        return self.session

    def _parameter(self, name: str, value: str) -> None:
        """Keep what the policy reads about the session current (ParameterStatus from the target)."""
        session = self.session_info
        if name in _SESSION_ATTRIBUTES:
            session.attributes[name] = value
        if name == "application_name":
            session.client_program = value or None

    def _copy_in_started(self) -> None:
        """CopyInResponse: Sync messages the client sent after the COPY's Execute are ignored.

        libpq's PQexecParams sends Execute and Sync together, and the server, already in
        COPY FROM STDIN mode when it reads that Sync, ignores it ("The backend will ignore Flush
        and Sync messages received during copy-in mode"); the client sends another after CopyDone.
        """
        head = self.slots[0] if self.slots else None
        outstanding = self.units_sent - self.units_done
        ignored = outstanding - (1 if head is not None and head.simple else 0)
        if head is None or ignored <= 0:
            self.copy_in = True
            return
        self.units_sent -= ignored
        for slot in self.slots:
            if slot.unit > self.units_done:
                slot.unit -= ignored
        for sub in self.substitutes:
            if sub.unit > self.units_done:
                sub.unit -= ignored
        self.describes = deque((u - ignored if u > self.units_done else u, st) for u, st in self.describes)
        self.copy_in = True

    def _head_slot(self, *, parse: bool | None = None) -> _Slot | None:
        head = self.slots[0] if self.slots else None
        if head is not None and head.unit == self.units_done and (parse is None or head.parse == parse):
            return self.slots.popleft()
        return None

    def _on_control(
        self, t: bytes, body: bytes, rows: int, offset: int, done: list[_Completion]
    ) -> bytes | None:
        """Account one control message ending at ``offset`` of the current chunk; return
        replacement bytes for a substituted error."""
        sent = self.relayed + offset
        if t == b"S":
            status = m.decode_backend(t[0], body)
            assert isinstance(status, m.ParameterStatus)
            self._parameter(status.name, status.value)
            return None
        if t == b"G":
            self._copy_in_started()
            return None
        if t == b"T":
            return self._on_row_description(body)
        if t == b"n":
            nodata = self._pop_desc()
            return b"" if nodata is not None and nodata.hidden else None
        if t in (b"C", b"E"):
            self.copy_in = False
        if t == b"t":
            while self.describes and self.describes[0][0] < self.units_done:
                self.describes.popleft()
            if self.describes:
                desc = m.decode_backend(t[0], body)
                assert isinstance(desc, m.ParameterDescription)
                described = self.describes.popleft()[1]
                if described is not None:
                    described.param_types = desc.param_types
            return None
        if t == b"Z":
            while self.slots and self.slots[0].unit == self.units_done:
                skipped = self.slots.popleft()
                done.append(
                    _Completion(
                        ticket=skipped.ticket,
                        outcome=StatementOutcome(
                            error="not run: an earlier statement of the same request failed",
                            error_code="skipped",
                        ),
                    )
                )
            while self.substitutes and self.substitutes[0].unit <= self.units_done:
                self.substitutes.popleft()
            self.units_done += 1
            self.tx_status = chr(body[0]) if body else self.tx_status
            while self.row_describes and self.row_describes[0].unit < self.units_done:
                self.row_describes.popleft()  # skipped after an error
            return None
        if t == b"E":
            err = m.decode_backend(t[0], body)
            assert isinstance(err, m.ErrorResponse)
            for sub in self.substitutes:
                if sub.token in err.message:
                    self.substitutes.remove(sub)
                    return sub.error
            slot = self._head_slot()
            replacement: bytes | None = None
            if slot is not None:
                rw = slot.rewrite
                if rw is not None:
                    replacement = self._finish_rewrite(rw, t, body)
                if rw is not None and rw.cancelled and err.sqlstate == "57014":
                    outcome = StatementOutcome(rows=rw.rows, truncated=True)  # cut, then cancelled by dbward
                else:
                    outcome = StatementOutcome(
                        rows=rows or None,
                        error=err.message,
                        error_code=err.sqlstate,
                        truncated=rw.cut if rw is not None else False,
                    )
                done.append(_Completion(ticket=slot.ticket, outcome=outcome, masked=_audit_of(rw)))
            return replacement
        slot = self._head_slot(parse=t == b"1")
        if slot is None:
            return None
        affected: int | None = None
        count: int | None = rows
        if t == b"C":
            tag_rows, affected = m.tag_counts(m.command_tag(body))
            count = tag_rows if tag_rows is not None else (rows or None)
        elif t in (b"I", b"1"):
            count = None
        rw = slot.rewrite
        ending: bytes | None = None
        if rw is not None:
            ending = self._finish_rewrite(rw, t, body)
            if rw.cut or rw.masker is not None or rw.copy is not None:
                count = rw.rows
        done.append(
            _Completion(
                ticket=slot.ticket,
                outcome=StatementOutcome(
                    rows=count,
                    affected=affected,
                    bytes_sent=max(0, sent - self.mark),
                    truncated=rw.cut if rw is not None else False,
                ),
                masked=_audit_of(rw),
            )
        )
        self.mark = sent
        return ending


_CURSOR_RE = re.compile(r"^\s*(declare|fetch)\b(.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_IDENT_RE = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def _cursor_of(sql: str) -> tuple[str, str] | None:
    """("declare" | "fetch", cursor name) of a DECLARE or FETCH statement, else None."""
    found = _CURSOR_RE.match(sql)
    if found is None:
        return None
    verb, rest = found.group(1).lower(), found.group(2)
    names = list(_IDENT_RE.finditer(rest))
    if not names:
        return None
    pick = names[0] if verb == "declare" else names[-1]
    quoted, plain = pick.group(1), pick.group(2)
    return verb, quoted.replace('""', '"') if quoted is not None else plain.lower()


#: backend messages the result path accounts for (everything else is relayed without a look)
_CONTROL = frozenset({b"C", b"I", b"s", b"E", b"Z", b"t", b"1", b"G", b"S", b"T", b"n"})


def _passive(rw: _Rewrite) -> bool:
    """A rewrite that leaves rows as they are (no masks, no row limit): rows are only counted."""
    return rw.masker is None and rw.copy is None and rw.limit is None


def _audit_of(rw: _Rewrite | None) -> list[dict[str, Any]] | None:
    """The masked columns of a rewritten result for the audit record; an empty list when none
    was masked but the plan flags inference (a masked column filtered on, allowed with a flag)."""
    if rw is None:
        return None
    if rw.audit:
        return rw.audit
    return [] if rw.plan is not None and rw.plan.inference else None


def _frame(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!I", len(body) + 4) + body


def _with_formats(fields: tuple[wrows.Field, ...], formats: tuple[int, ...]) -> tuple[wrows.Field, ...]:
    """A statement's fields with the result formats a Bind chose (none: text; one: all)."""
    n = len(fields)
    if not formats:
        fmts = (0,) * n
    elif len(formats) == 1:
        fmts = (formats[0],) * n
    else:
        fmts = tuple(formats[i] if i < len(formats) else 0 for i in range(n))
    return tuple(
        wrows.Field(f.name, f.table_oid, f.attnum, f.type_oid, f.type_size, f.type_mod, fmts[i])
        for i, f in enumerate(fields)
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _decoy_verifier() -> ScramVerifier:
    """A verifier for unknown users, so the exchange looks the same and fails at the proof."""
    return scram_verifier(secrets.token_hex(16), salt=secrets.token_bytes(16))
