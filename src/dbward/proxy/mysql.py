"""The MySQL/MariaDB engine: the asyncio shell around ``wire/mysql``.

One :class:`MySQLSession` per client connection:

1. greet the client as the target would (server version and capabilities of the target,
   learned once per target), with TLS on offer;
2. authenticate the client against dbward's user store (mysql_native_password, or
   caching_sha2_password fast path, or its full path over TLS or RSA), never with the target's
   credential;
3. resolve the target (per-connection listener, or ``connection/db`` on the shared port), let
   :func:`~dbward.proxy.engine.session_lifecycle` decide the connection, connect upstream with
   the vaulted credential (``proxy/mysql_upstream.py``);
4. for every command: ask the gate about every statement before anything is forwarded, relay
   the response in large chunks while :class:`~dbward.wire.mysql.scanner.ResponseScanner`
   follows it (constant memory), and report the outcome to the gate. Only when a decision
   carries a masking plan or a row limit is the response rewritten on its way
   (``proxy/mysql_masking.py``): values masked, column types adjusted, rows past the limit
   dropped, server errors redacted.

Client disconnects mid-query and administrator kills run ``KILL QUERY`` on the target over a
separate connection. Counterparts: ``proxy/engine.py`` (lifecycle), ``proxy/gate.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from dbward.domain import SessionInfo, Statement, StatementOrigin, StatementOutcome, Target
from dbward.domain.types import EngineType
from dbward.errors import (
    ApprovalRequired,
    AuditUnavailable,
    AuthenticationError,
    ConnectionDenied,
    DbwardError,
    IdleTimeout,
    ProtocolError,
    StatementDenied,
    UnsupportedFeature,
    UpstreamError,
    ValidationError,
)
from dbward.policy.model import Effect, MaskingPlan
from dbward.proxy.engine import (
    WORKER_SLOTS,
    ClientConnection,
    EngineDeps,
    LiveSession,
    StoredSecret,
    UserCredentials,
    WorkerPeers,
    register,
    session_lifecycle,
    verify_cleartext,
    verify_mysql_native,
    verify_mysql_sha2_fast,
)
from dbward.proxy.gate import SCHEMA_CHANGING_KINDS, Ticket
from dbward.proxy.masking import cut_notice
from dbward.proxy.mysql_masking import (
    CUT_WARNING_CODE,
    CursorState,
    ResponseRewriter,
    ResultPolicy,
    diagnostics_mask,
)
from dbward.proxy.mysql_upstream import (
    STREAM_LIMIT,
    UpstreamConnection,
    connect_upstream,
    kill_query,
    probe_greeting,
    read_packet,
)
from dbward.wire.mysql import auth
from dbward.wire.mysql.constants import (
    DEFAULT_CHARSET,
    PROXY_CAPABILITIES,
    Capability,
    Command,
    ServerStatus,
)
from dbward.wire.mysql.messages import (
    AuthMoreData,
    AuthSwitchRequest,
    ERRPacket,
    HandshakeResponse41,
    HandshakeV10,
    OKPacket,
    SSLRequest,
    execute_values,
)
from dbward.wire.mysql.packets import Packet, ProtocolViolation, Reader, encode_packet, frame_header
from dbward.wire.mysql.scanner import ResponseKind, ResponseScanner, ResultSummary
from dbward.wire.mysql.split import is_load_data_local, split_statements, use_target

log = logging.getLogger(__name__)

#: the longest command packet accepted (max_allowed_packet cannot exceed 1 GiB on any server)
MAX_COMMAND = 1 << 30
#: connection ids in dbward's greetings start here, far above any target's thread ids, so that
#: ``KILL <id>`` can tell a dbward session (translated to its target thread) from a target thread
DBWARD_ID_BASE = 1 << 30
_KILL = re.compile(r"\s*kill\s+(?:(?:hard|soft)\s+)?(query\s+|connection\s+)?(\d+)\s*;?\s*$", re.IGNORECASE)
#: the statement dbward adds its own warning to after it cut a result at the row limit
_SHOW_WARNINGS = re.compile(r"\s*show\s+warnings\s*;?\s*$", re.IGNORECASE)
#: statements that show the conditions (warnings, errors) of the statement before
_DIAGNOSTICS = re.compile(r"\s*show\s+(?:warnings|errors)\b", re.IGNORECASE)
#: the Message column of SHOW WARNINGS / SHOW ERRORS (Level, Code, Message)
_MESSAGE_COLUMN = 2
#: statement kinds that can answer with more result sets than statements (a CALL's results)
_MANY_RESULTS = frozenset({"CALL", "EXECUTE", "UNKNOWN", "PROCEDURAL"})
#: a plain int of the status flag read after every response (IntFlag operations cost a call)
_NO_BACKSLASH_ESCAPES = int(ServerStatus.NO_BACKSLASH_ESCAPES)
#: the version string shown on the shared port, before the client has picked a target
SHARED_PORT_VERSION = "8.0.99-dbward"
#: how the audit trail shows a parameter sent as long data (COM_STMT_SEND_LONG_DATA)
_LONG_DATA = "<long data>"
#: commands relayed as-is with a single-packet answer
_SINGLE = {
    Command.PING,
    Command.STATISTICS,
    Command.SET_OPTION,
    Command.RESET_CONNECTION,
}


def error_packet(exc: DbwardError, seq: int) -> bytes:
    """THE mapping of a dbward error to a MySQL ERR packet (errno, SQLSTATE, sentence)."""
    err = ERRPacket(error_code=exc.mysql_errno, sql_state=exc.mysql_sqlstate, message=exc.message)
    return encode_packet(err.encode(), seq)


def _audit_value(v: Any) -> Any:
    """A bound parameter as the audit journal keeps it (JSON-friendly, nothing lost)."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + v.hex()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return str(v)
    return str(v)


class _ClientProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that tells the session at once when the client goes away, and when
    its connection cannot take more (the target's leg stops reading meanwhile)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        on_lost: Callable[[], None],
        on_backpressure: Callable[[bool], None],
        on_data: Callable[[bytes], bool],
    ) -> None:
        super().__init__(reader)
        self._on_lost = on_lost
        self._on_backpressure = on_backpressure
        self._on_data = on_data
        #: the client's input ended (the reader has been fed its end)
        self.ended = False

    def data_received(self, data: bytes) -> None:
        # the session's fast path takes a whole command while its task waits for one
        # (:meth:`MySQLSession._client_data`); everything else goes to the stream
        if not self._on_data(data):
            super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._on_backpressure(True)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._on_backpressure(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        try:
            self._on_lost()
        finally:
            super().connection_lost(exc)

    def eof_received(self) -> bool:
        # A MySQL client never half-closes: end of input means it is gone.
        self.ended = True
        self._on_lost()
        super().eof_received()
        return False


class _RelaySink:
    """One relay of a response as the target's chunks arrive (called by the loop, through
    :class:`~dbward.proxy.mysql_upstream.UpstreamPipe`): scan, write to the client, and
    resolve ``outcome`` when the response is complete (True: the server asked for a LOCAL
    INFILE and the client's file comes next) or broke off (the exception the relay raises)."""

    __slots__ = ("_hold_last", "_out", "_scanner", "_session", "finished", "outcome")

    def __init__(self, session: MySQLSession, scanner: ResponseScanner, hold_last: bool) -> None:
        assert session.writer is not None
        self.finished = False
        self.outcome: asyncio.Future[bool] = session.loop.create_future()
        self._session = session
        self._scanner = scanner
        self._hold_last = hold_last
        self._out = session.writer.transport

    def feed(self, data: bytes) -> None:
        try:
            self._feed(data)
        except Exception as exc:  # never into the loop's callback: the relay raises it
            self._fail(exc)

    def _feed(self, data: bytes) -> None:
        scanner = self._scanner
        try:
            scanner.feed(data)
        except ProtocolViolation as exc:
            self._fail(UpstreamError(f"the target sent a malformed response ({exc})"))
            return
        if self._out.is_closing():  # uvloop raises RuntimeError on a closed transport
            self._fail(ConnectionResetError("the client connection was lost"))
            return
        session = self._session
        assert session.live is not None
        session.live.touch()
        if scanner.done:
            if self._hold_last:
                session._held = data
            else:
                self._out.write(data)
            self._finish(False)
        elif scanner.wants_infile:
            self._out.write(data)
            self._finish(True)
        else:
            self._out.write(data)

    def end(self) -> None:
        self._fail(UpstreamError("the target closed the connection in the middle of a response"))

    def _finish(self, infile: bool) -> None:
        self.finished = True
        if not self.outcome.done():
            self.outcome.set_result(infile)

    def _fail(self, exc: BaseException) -> None:
        self.finished = True
        if not self.outcome.done():
            self.outcome.set_exception(exc)


class _FastSink(_RelaySink):
    """The relay of a command taken by the fast path (:meth:`MySQLSession._try_fast`): the
    same scanning and writing, but the end of the response finishes the command right in the
    loop's callback (:meth:`MySQLSession._fast_finish`) rather than waking the session's task."""

    __slots__ = ()

    def __init__(self, session: MySQLSession, scanner: ResponseScanner) -> None:
        assert session.writer is not None
        self.finished = False
        self._session = session
        self._scanner = scanner
        self._hold_last = True
        self._out = session.writer.transport

    def _finish(self, infile: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if infile:  # never asked for: the fast path is off while LOCAL INFILE is allowed
            self._session._fast_fail(
                UpstreamError("the target asked for a local file, which dbward did not allow here")
            )
        else:
            self._session._fast_finish(self._scanner)

    def _fail(self, exc: BaseException) -> None:
        if self.finished:
            return
        self.finished = True
        self._session._fast_fail(exc)


@dataclass(slots=True)
class _FastCommand:
    """The command the fast path has in flight."""

    ticket: Ticket
    kind: ResponseKind
    #: COM_STMT_EXECUTE: the prepared statement and the parameter types to remember
    prepared: _Prepared | None = None
    types: tuple[tuple[int, bool], ...] | None = None


@dataclass(kw_only=True)
class _Prepared:
    sql: str
    num_params: int
    types: tuple[tuple[int, bool], ...] | None = None
    long_data: set[int] = field(default_factory=set)
    #: the last execution's result was rewritten (masking or row limit); its cursor, if it opened one
    rewritten: bool = False
    cursor: CursorState | None = None


class _SessionEnd(Exception):
    """The session ends now (the client has been told why, or is gone)."""


class _IdleExpired(ConnectionError):
    """The idle watchdog ended the wait for the client's next command (a ConnectionError, as
    the client stream raises it from then on)."""


@register
class MySQLEngine:
    protocol: ClassVar[str] = "mysql"

    def __init__(self) -> None:
        self._greetings: dict[int, HandshakeV10] = {}
        self._rsa: auth.RsaKeyPair | None = None
        self._ids = itertools.count(DBWARD_ID_BASE + 1)
        self.background: set[asyncio.Task[None]] = set()
        #: live sessions by the connection id dbward gave them in its greeting
        self.by_connection_id: dict[int, MySQLSession] = {}

    def new_connection_id(self, workers: WorkerPeers | None) -> int:
        """The connection id of a new session's greeting: above every target thread id and,
        with worker processes, naming this process (``workers.py``)."""
        n = next(self._ids)
        if workers is None:
            return n
        return DBWARD_ID_BASE + workers.stamp((n - DBWARD_ID_BASE) * WORKER_SLOTS)

    async def kill_local(self, connection_id: int, user: str, *, whole: bool) -> str | None:
        """``KILL [QUERY] <connection_id>`` on this process's session of ``user``: None when done,
        else why not."""
        other = self.by_connection_id.get(connection_id)
        owner = other.info.principal.username if other is not None and other.info is not None else None
        if other is None or owner != user:
            return (
                f"connection {connection_id} is not a live dbward session of user {user} on this dbward node"
            )
        if whole:
            await other._kill(f"killed with KILL {connection_id} by the same user")
        elif other.live is not None and other.live.busy:
            await other._kill_upstream_query()
        return None

    def rsa(self) -> auth.RsaKeyPair:
        if self._rsa is None:
            self._rsa = auth.RsaKeyPair()
        return self._rsa

    async def greeting_for(self, target: Target | None, deps: EngineDeps) -> HandshakeV10 | None:
        if target is None:
            return None
        cached = self._greetings.get(target.id)
        if cached is None:
            cached = await probe_greeting(target, deps.settings.proxy.connect_timeout_seconds)
            self._greetings[target.id] = cached
        return cached

    def remember_greeting(self, target: Target, greeting: HandshakeV10) -> None:
        self._greetings[target.id] = greeting

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def serve(self, client: ClientConnection, deps: EngineDeps) -> None:
        await MySQLSession(self, client, deps).run()


class MySQLSession:
    def __init__(self, engine: MySQLEngine, client: ClientConnection, deps: EngineDeps) -> None:
        self.engine = engine
        self.client = client
        self.deps = deps
        self.loop = asyncio.get_running_loop()
        self.nonce = auth.new_nonce()
        self.connection_id = engine.new_connection_id(deps.workers)
        self.seq = 0xFF  # the greeting (or an error instead of it) has sequence id 0
        self.tls = False
        self.capabilities = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.upstream: UpstreamConnection | None = None
        self.info: SessionInfo | None = None
        self.live: LiveSession | None = None
        self.target: Target | None = client.target
        self.statements: dict[int, _Prepared] = {}
        self.last_prepared: int | None = None
        self.killing = False
        self.deprecate_eof = True
        self.no_backslash_escapes = False
        #: the sentence of the row-limit cut of the last statement, for ``SHOW WARNINGS``
        self.cut_warning: str | None = None
        #: the last chunk of a response, held back until the statement's completion is recorded
        #: (see :meth:`_forward`'s ``hold_last`` and :meth:`_release`)
        self._held: bytes | None = None
        #: the masking plan of the last statement that read masked values and left warnings or
        #: an error on the target: from then on ``SHOW WARNINGS`` / ``SHOW ERRORS`` have their
        #: messages replaced (they can quote masked values, and the target keeps them across
        #: statements that use no table, so dbward cannot tell when they are gone)
        self.diag_plan: MaskingPlan | None = None
        self._pre = bytearray(client.initial_data)
        #: the idle watchdog (see :meth:`_idle_check`)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._awaiting_command = False
        self._idle_expired = False
        #: the fast path (:meth:`_client_data`): the task waits in :meth:`_read_command` for a
        #: command header; the command in flight; client bytes that came meanwhile; the ticket
        #: of a command the fast path decided but left to the task; the client's buffer is full
        self._client_protocol: _ClientProtocol | None = None
        self._fast_on = not deps.settings.proxy.allow_load_data_local
        self._parked = False
        self._fast: _FastCommand | None = None
        self._fast_waiter: asyncio.Future[None] | None = None
        self._queued: bytearray | None = None
        self._prechecked: Ticket | None = None
        self._client_full = False

    # ------------------------------------------------------------------ raw socket phase
    async def _recv_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the raw socket, never more (see PROTOCOL-NOTES: STARTTLS race)."""
        out = bytearray()
        if self._pre:
            out += self._pre[:n]
            del self._pre[:n]
        while len(out) < n:
            chunk = await self.loop.sock_recv(self.client.sock, n - len(out))
            if not chunk:
                raise _SessionEnd
            out += chunk
        return bytes(out)

    async def _recv_raw_packet(self) -> Packet:
        length, seq = frame_header(await self._recv_exact(4))
        if length >= 0xFFFFFF:
            raise ProtocolViolation("a login packet longer than 16 MiB")
        return Packet(seq, await self._recv_exact(length))

    async def _attach_transport(self, ssl_on: bool) -> None:
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=self.loop)
        protocol = _ClientProtocol(reader, self._client_lost, self._client_backpressure, self._client_data)
        self._client_protocol = protocol
        transport, _ = await self.loop.connect_accepted_socket(
            lambda: protocol,
            sock=self.client.sock,
            ssl=self.deps.server_tls if ssl_on else None,
        )
        self.reader = reader
        self.writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
        if self._pre:
            reader.feed_data(bytes(self._pre))
            self._pre.clear()

    # ------------------------------------------------------------------ packet helpers
    def send(self, payload: bytes) -> None:
        """Send one packet in the current exchange (sequence id follows the last one seen)."""
        assert self.writer is not None
        if self.writer.transport.is_closing():
            raise ConnectionResetError("the client connection was lost")
        self.seq = (self.seq + 1) & 0xFF
        self.writer.write(encode_packet(payload, self.seq))

    def send_error(self, exc: DbwardError) -> None:
        if self.writer is not None:
            if self.writer.transport.is_closing():
                return  # nobody left to tell
            self.seq = (self.seq + 1) & 0xFF
            self.writer.write(error_packet(exc, self.seq))
        else:
            self.client.sock.settimeout(2.0)  # a small packet; never wait long on a silent peer
            try:
                self.client.sock.sendall(error_packet(exc, (self.seq + 1) & 0xFF))
            except OSError:
                pass
            finally:
                self.client.sock.setblocking(False)

    async def recv(self) -> Packet:
        assert self.reader is not None
        pkt = await read_packet(self.reader)
        self.seq = pkt.last_seq
        return pkt

    async def flush(self) -> None:
        if self.writer is not None:
            await self.writer.drain()

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        try:
            await self._run()
        except _SessionEnd:
            pass
        except DbwardError as exc:
            self.send_error(exc)
        except ProtocolViolation as exc:
            log.info("mysql session from %s ended: malformed packet (%s)", self.client.client.host, exc)
            self.send_error(
                ProtocolError(f"dbward ended the session: malformed packet from the client ({exc})")
            )
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.upstream is not None:
            self.upstream.close()
        if self.writer is not None:
            try:
                if not self.writer.is_closing():
                    await asyncio.wait_for(self.writer.drain(), 1)
            except (ConnectionError, OSError, TimeoutError):
                pass
            self.writer.close()
            # The transport must let go of the socket before the listener closes it, or a new
            # connection reusing the descriptor would meet a stale registration.
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
                self.writer.transport.abort()
                await asyncio.sleep(0)

    async def _run(self) -> None:
        deps = self.deps
        settings = deps.settings
        greeting = await self._greeting()
        self.client.sock.setblocking(False)
        await self.loop.sock_sendall(self.client.sock, encode_packet(greeting.encode(), 0))
        first = await self._recv_raw_packet()
        self.seq = first.seq
        if SSLRequest.is_ssl_request(first.payload):
            if deps.server_tls is None:
                raise ProtocolViolation("the client asked for TLS, which dbward did not offer")
            if self._pre:
                raise ProtocolViolation("bytes after the SSLRequest before the TLS handshake")
            await self._attach_transport(ssl_on=True)
            self.tls = True
            first = await self.recv()
        else:
            await self._attach_transport(ssl_on=False)
        hello = HandshakeResponse41.parse(first.payload)
        self.capabilities = hello.capabilities & greeting.capabilities
        creds, secret = await self._authenticate(hello)
        target, database = await self._resolve_target(hello)
        program = hello.attributes.get("program_name")
        info = SessionInfo(
            principal=creds.principal,
            target=target,
            client=self.client.client,
            database=database,
            client_program=program,
            protocol_user=hello.username,
            tls=self.tls,
            attributes=dict(hello.attributes),
        )
        self.info = info
        try:
            async with session_lifecycle(
                deps, info, protocol="mysql", auth_method=secret.method, kill=self._kill
            ) as live:
                self.live = live
                if secret.method == "proxy_token":
                    await deps.auth.touch_token(creds.principal.username, secret.name)
                password = await deps.directory.upstream_password(target)
                if password is None:
                    raise UpstreamError(
                        f"connection {target.name} has no stored credential; an administrator must set one"
                    )
                attrs = {k: v for k, v in hello.attributes.items() if not k.startswith("_dbward")}
                attrs["_dbward_user"] = creds.principal.username
                up = await connect_upstream(
                    target,
                    password,
                    client_capabilities=self.capabilities,
                    database=database,
                    attributes=attrs,
                    charset=hello.charset,
                    timeout=settings.proxy.connect_timeout_seconds,
                    allow_local_infile=settings.proxy.allow_load_data_local,
                )
                self.upstream = up
                up.start_relaying()
                self.engine.remember_greeting(target, up.greeting)
                self.deprecate_eof = bool(self.capabilities & up.capabilities & Capability.DEPRECATE_EOF)
                # The splitter must read quotes as the server does: sql_mode NO_BACKSLASH_ESCAPES
                # (reported in every OK's status) turns backslash into a plain character.
                self.no_backslash_escapes = bool(up.status & ServerStatus.NO_BACKSLASH_ESCAPES)
                self.send(OKPacket(status=up.status).encode())
                await self.flush()
                self.engine.by_connection_id[self.connection_id] = self
                try:
                    await self._command_loop()
                finally:
                    self.engine.by_connection_id.pop(self.connection_id, None)
        except ConnectionDenied as exc:
            self.send_error(exc)

    async def _greeting(self) -> HandshakeV10:
        upstream = await self.engine.greeting_for(self.target, self.deps)
        caps = int(PROXY_CAPABILITIES)
        version = SHARED_PORT_VERSION
        charset = DEFAULT_CHARSET
        status = int(ServerStatus.AUTOCOMMIT)
        if upstream is not None:
            caps &= upstream.capabilities | Capability.LONG_PASSWORD
            if not upstream.capabilities & Capability.LONG_PASSWORD:
                caps &= ~Capability.LONG_PASSWORD  # MariaDB: CLIENT_MYSQL off, no extended capabilities
            version = upstream.server_version
            charset = upstream.charset
            status = upstream.status
        if self.deps.server_tls is not None:
            caps |= Capability.SSL
        if self.deps.settings.proxy.allow_load_data_local:
            caps |= Capability.LOCAL_FILES
        return HandshakeV10(
            server_version=version,
            connection_id=self.connection_id,
            auth_data=self.nonce,
            capabilities=caps,
            charset=charset,
            status=status,
            auth_plugin=self._offered_plugin(upstream),
        )

    def _offered_plugin(self, upstream: HandshakeV10 | None) -> str:
        """The auth plugin named in the greeting: the connection's option ``client_auth_plugin``,
        else what the target itself offers (caching_sha2_password for MySQL 8+), else
        mysql_native_password; caching_sha2_password on the shared port. Either way dbward
        accepts an answer with either plugin, so MySQL 9 clients and old clients both log in."""
        chosen = self.target.options.get("client_auth_plugin") if self.target is not None else None
        if chosen in (auth.NATIVE, auth.CACHING_SHA2):
            return str(chosen)
        if upstream is None:
            return auth.CACHING_SHA2
        return auth.CACHING_SHA2 if upstream.auth_plugin == auth.CACHING_SHA2 else auth.NATIVE

    # ------------------------------------------------------------------ authentication
    async def _authenticate(self, hello: HandshakeResponse41) -> tuple[UserCredentials, StoredSecret]:
        creds = await self.deps.auth.lookup(hello.username)
        plugin = hello.auth_plugin or auth.NATIVE
        response = hello.auth_response
        if plugin not in (auth.NATIVE, auth.CACHING_SHA2):
            self.send(AuthSwitchRequest(plugin=auth.NATIVE, data=self.nonce).encode())
            await self.flush()
            response = (await self.recv()).payload
            plugin = auth.NATIVE
        secret: StoredSecret | None = None
        if plugin == auth.NATIVE:
            if creds is not None:
                secret = verify_mysql_native(creds, self.nonce, response)
        else:
            if creds is not None and response:
                secret = verify_mysql_sha2_fast(creds, self.nonce, response)
            if secret is not None:
                self.send(AuthMoreData(data=auth.FAST_AUTH_SUCCESS).encode())
            elif response:
                secret = await self._sha2_full_auth(creds)
        if creds is None or secret is None or creds.disabled:
            reason = (
                f"Access denied for user '{hello.username}': the dbward user name, password or proxy "
                "token is wrong (dbward checks its own users, not the target database's accounts)"
            )
            await self.deps.gate.reject_session(
                protocol="mysql",
                reason=reason,
                error_code=AuthenticationError.code,
                user=hello.username,
                target=self.target,
                client_host=self.client.client.host,
                client_source=self.client.client.source,
                client_program=hello.attributes.get("program_name"),
            )
            raise AuthenticationError(reason)
        return creds, secret

    async def _sha2_full_auth(self, creds: UserCredentials | None) -> StoredSecret | None:
        """caching_sha2_password full authentication: the cleartext over TLS, or RSA without it."""
        self.send(AuthMoreData(data=auth.PERFORM_FULL_AUTHENTICATION).encode())
        await self.flush()
        pkt = await self.recv()
        if self.tls:
            password = pkt.payload.split(b"\x00", 1)[0]
        elif pkt.payload == auth.REQUEST_PUBLIC_KEY:
            self.send(AuthMoreData(data=self.engine.rsa().public_pem).encode())
            await self.flush()
            pkt = await self.recv()
            try:
                password = self.engine.rsa().decrypt_password(pkt.payload, self.nonce)
            except ValueError:
                return None
        else:  # a cleartext password over plain TCP is never accepted
            return None
        # an unknown user costs the same work, so the answer's timing does not reveal who exists
        found = await asyncio.to_thread(verify_cleartext, creds, password.decode("utf-8", "replace"))
        return found if creds is not None else None

    async def _resolve_target(self, hello: HandshakeResponse41) -> tuple[Target, str | None]:
        if self.target is not None:
            return self.target, hello.database or self.target.database
        if not hello.database:
            reason = (
                "this is dbward's shared MySQL port: choose a connection with the database name "
                "'connection/database' (or 'connection'), or use the connection's own port"
            )
        else:
            name, _, db = hello.database.partition("/")
            target = await self.deps.directory.by_name(name)
            if target is not None and target.engine is EngineType.MYSQL:
                self.target = target
                return target, db or target.database
            reason = (
                f"dbward has no MySQL connection named '{name}' (database name '{hello.database}' on "
                "the shared port is read as 'connection/database')"
            )
        await self.deps.gate.reject_session(
            protocol="mysql",
            reason=reason,
            error_code=ConnectionDenied.code,
            user=hello.username,
            client_host=self.client.client.host,
            client_source=self.client.client.source,
            client_program=hello.attributes.get("program_name"),
        )
        raise ConnectionDenied(reason)

    # ------------------------------------------------------------------ kill and cancel
    def _client_backpressure(self, full: bool) -> None:
        self._client_full = full
        if self.upstream is not None and self.upstream.pipe is not None:
            self.upstream.pipe.hold(full)

    def _client_lost(self) -> None:
        if self.live is not None and self.live.busy and not self.killing:
            self.killing = True
            self.live.end_reason = (
                "the client disconnected in the middle of a statement; dbward ran KILL QUERY on the target"
            )
            self.engine.spawn(self._kill_upstream(whole=False), f"mysql-kill-{self.connection_id}")

    async def _kill_upstream(self, *, whole: bool) -> None:
        up, target = self.upstream, self.target
        if up is None or target is None:
            return
        try:
            password = await self.deps.directory.upstream_password(target)
            if password is not None:
                await kill_query(
                    target,
                    password,
                    up.thread_id,
                    self.deps.settings.proxy.connect_timeout_seconds,
                    whole=whole,
                )
        except (DbwardError, OSError, TimeoutError) as exc:
            log.warning("could not kill the running query on target %s: %s", target.name, exc)
        finally:
            up.close()

    async def _kill_upstream_query(self) -> None:
        """KILL QUERY on this session's target thread; the session itself carries on."""
        up, target = self.upstream, self.target
        if up is None or target is None:
            return
        password = await self.deps.directory.upstream_password(target)
        if password is not None:
            await kill_query(
                target, password, up.thread_id, self.deps.settings.proxy.connect_timeout_seconds, whole=False
            )

    async def _kill(self, reason: str) -> None:
        """The LiveSession kill callback (an administrator ended the session)."""
        busy = self.live is not None and self.live.busy
        if self.live is not None:
            self.live.end_reason = reason
        self.killing = True
        if busy:
            await self._kill_upstream(whole=False)
        elif self.upstream is not None:
            self.upstream.close()
        if self.writer is not None:
            self.writer.transport.abort()

    # ------------------------------------------------------------------ command phase
    def _idle_check(self) -> None:
        """The idle watchdog (one timer per session, re-armed only when it fires, rather than
        a timeout around every command read): when the session has waited for a command for
        ``proxy.idle_timeout_seconds``, the pending read fails with :class:`_IdleExpired`."""
        self._idle_timer = None
        if self.reader is None or self.live is None or self._idle_expired:
            return
        idle = self.deps.settings.proxy.idle_timeout_seconds
        left = idle - (time.monotonic() - self.live.last_activity)
        if not self._awaiting_command:
            # a statement runs: the deadline is at least ``idle`` from now (it ends with a touch)
            self._idle_timer = self.loop.call_later(idle, self._idle_check)
            return
        if left > 0:
            self._idle_timer = self.loop.call_later(max(left, 0.01), self._idle_check)
            return
        self._idle_expired = True
        self.reader.set_exception(_IdleExpired())

    async def _read_command(self) -> Packet | None:
        assert self.reader is not None and self.live is not None
        if self._idle_timer is None:
            self._idle_check()
        self._awaiting_command = True
        try:
            self._parked = True
            try:
                header = await self.reader.readexactly(4)
            except Exception:
                self._parked = False
                if self._fast is not None:  # the fast path's command ends first (it ends soon)
                    await self._fast_settled()
                raise
            finally:
                self._parked = False
        except _IdleExpired:
            idle = self.deps.settings.proxy.idle_timeout_seconds
            self.seq = 0xFF  # an unsolicited error starts at sequence id 0
            raise IdleTimeout(
                f"dbward closed the session after {idle:g} seconds without activity "
                "(setting proxy.idle_timeout_seconds)"
            ) from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ProtocolViolation("the client closed in the middle of a packet") from None
            return None
        finally:
            self._awaiting_command = False
        length, seq = frame_header(header)
        parts = [await self.reader.readexactly(length) if length else b""]
        last = seq
        total = length
        while length == 0xFFFFFF:
            length, last = frame_header(await self.reader.readexactly(4))
            total += length
            if total > MAX_COMMAND:
                raise ProtocolViolation(
                    f"a command longer than {MAX_COMMAND} bytes (MySQL's own limit is 1 GiB)"
                )
            parts.append(await self.reader.readexactly(length) if length else b"")
        self.seq = last
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        if not payload:
            raise ProtocolViolation("an empty command packet")
        return Packet(seq, payload)

    # ------------------------------------------------------------------ the fast path
    # The common round trip (one COM_QUERY statement or one COM_STMT_EXECUTE, a decision the
    # gate holds in its cache, no result rewrite) runs in the loop's callbacks, with no task
    # wakeup: the client's packet is taken as it arrives while the session's task waits for a
    # command header (:meth:`_read_command`), decided with ``gate.check_cached``, written to the
    # target as the client sent it, and its response relayed by :class:`_FastSink`, which
    # records the completion (``gate.complete_soon``) before it sends the final chunk, as
    # ``hold_last`` does on the task's path. Anything else goes to the task unchanged; a
    # command decided here but not plain enough goes with its ticket (``_prechecked``).
    def _client_data(self, data: bytes) -> bool:
        """The client's bytes as they arrive: True when the fast path took them."""
        if self._fast is not None:
            # a fast command is in flight: its successor waits for it (MySQL is one command
            # at a time; a client that pipelines is answered in order)
            if self._queued is None:
                self._queued = bytearray(data)
            else:
                self._queued += data
            return True
        if not self._parked or self._client_full or not self._fast_on:
            return False
        reader = self.reader
        if reader is None or reader._buffer:  # type: ignore[attr-defined]
            return False
        return self._try_fast(data)

    def _try_fast(self, data: bytes) -> bool:
        """Start ``data`` as a fast command when it is exactly one plain command packet."""
        n = len(data)
        if n < 5 or n > 0xFFFFFE or data[3] != 0 or data[0] | (data[1] << 8) | (data[2] << 16) != n - 4:
            return False  # not exactly one whole first packet (or 16 MiB or more)
        code = data[4]
        info, live, up = self.info, self.live, self.upstream
        if info is None or live is None or up is None or up.pipe is None or self.killing:
            return False
        if up.writer.is_closing() or self.writer is None or self.writer.transport.is_closing():
            return False
        prepared: _Prepared | None = None
        types: tuple[tuple[int, bool], ...] | None = None
        try:
            if code == Command.QUERY:
                kind = ResponseKind.QUERY
                sql = data[5:].decode("utf-8", "replace")
                if _KILL.match(sql) is not None or (
                    self.cut_warning is not None and _SHOW_WARNINGS.match(sql)
                ):
                    return False
                statements = split_statements(sql, backslash_escapes=not self.no_backslash_escapes)
                if len(statements) != 1:
                    return False
                text = statements[0]
                if (self.diag_plan is not None and _DIAGNOSTICS.match(text)) or use_target(text) is not None:
                    return False
                if is_load_data_local(text):
                    return False
                statement = Statement(
                    sql=text,
                    origin=StatementOrigin.QUERY,
                    database=info.database,
                    index_in_batch=0,
                    batch_size=1,
                )
            elif code == Command.STMT_EXECUTE:
                kind = ResponseKind.EXECUTE
                sid = int.from_bytes(data[5:9], "little")
                if sid == 0xFFFFFFFF and self.last_prepared is not None:
                    sid = self.last_prepared
                prepared = self.statements.get(sid)
                if prepared is None or prepared.long_data:
                    return False
                if self.diag_plan is not None and _DIAGNOSTICS.match(prepared.sql):
                    return False
                values, types = execute_values(data[4:], prepared.num_params, prepared.types)
                statement = Statement(
                    sql=prepared.sql,
                    origin=StatementOrigin.EXECUTE,
                    database=info.database,
                    params=tuple(map(_audit_value, values)),
                    statement_name=str(sid),
                )
            else:
                return False
        except (ProtocolViolation, ValueError):
            return False  # the task's path says what is wrong with it
        gate = self.deps.gate
        try:
            ticket = gate.check_cached(info, statement, queued=True)
        except Exception:
            # the decision was not recorded: the task's path decides again and reports it
            return False
        if ticket is None:
            return False
        d = ticket.decision
        if (
            not d.allowed
            or d.masking is not None
            or d.row_limit is not None
            or d.approval_request_id is not None
            or d.kind in SCHEMA_CHANGING_KINDS
            or (kind is ResponseKind.QUERY and d.kind in _MANY_RESULTS)
        ):
            self._prechecked = ticket  # decided and recorded: the task goes on with it
            return False
        self.seq = data[3]
        self.cut_warning = None
        live.touch()
        live.busy = True
        self._awaiting_command = False  # the idle watchdog waits while the statement runs
        self._fast = _FastCommand(ticket, kind, prepared, types)
        up.pipe.attach(_FastSink(self, ResponseScanner(kind, deprecate_eof=self.deprecate_eof)))
        # the client's packet as it came (sequence id 0), after the journal's write of this
        # loop iteration, which carries its decision
        gate.forward(up.writer, data, self._fast_not_sent)
        return True

    def _fast_not_sent(self, exc: AuditUnavailable) -> None:
        """The journal could not write the fast command's decision, so the command was never
        sent: the client gets the error and the session goes on, as the command loop does."""
        if self._fast is None:
            return
        self._fast_detach()
        self._held = None
        self._fast_end(exc)

    def _fast_finish(self, scanner: ResponseScanner) -> None:
        """The fast command's response is complete (its final chunk is in ``_held``)."""
        fast = self._fast
        assert fast is not None and self.live is not None and self.info is not None
        self._fast_detach()
        if scanner.last_status is not None:
            self.no_backslash_escapes = bool(scanner.last_status & _NO_BACKSLASH_ESCAPES)
        results = scanner.results
        sent = scanner.bytes_seen
        error = None
        if not results and fast.kind is ResponseKind.QUERY:
            error, sent = "not run: an earlier statement in the same packet failed", 0
        try:
            done = self._complete_soon(fast.ticket, results[0] if results else None, sent, error=error)
        except Exception as exc:
            self._fast_release_failed(exc)
            return
        if not done:
            self.engine.spawn(
                self._fast_complete_later(fast, scanner), f"mysql-complete-{self.connection_id}"
            )
            return
        self._fast_done(fast)

    async def _fast_complete_later(self, fast: _FastCommand, scanner: ResponseScanner) -> None:
        """The gate wants its full completion path (never for what the fast path takes today)."""
        results = scanner.results
        try:
            await self._complete(fast.ticket, results[0] if results else None, scanner.bytes_seen)
        except Exception as exc:
            self._fast_release_failed(exc)
            return
        self._fast_done(fast)

    def _fast_release_failed(self, exc: BaseException) -> None:
        """The completion could not be recorded: the response still goes out whole (as the
        task's ``finally: _release()``), then the error."""
        try:
            self._release()
        except ConnectionError:
            pass
        self._fast_end(exc)

    def _fast_done(self, fast: _FastCommand) -> None:
        assert self.live is not None
        try:
            self._release()
        except ConnectionError as exc:
            self._fast_end(exc)
            return
        prepared = fast.prepared
        if prepared is not None:
            prepared.types = fast.types
            prepared.long_data.clear()
            prepared.rewritten = False
            prepared.cursor = None
        self.live.touch()
        self._fast_end(None)

    def _fast_fail(self, exc: BaseException) -> None:
        """The fast command's exchange broke off (client gone, target gone, bad response)."""
        fast = self._fast
        assert fast is not None
        self._fast_detach()
        why = exc.message if isinstance(exc, DbwardError) else "the client connection was lost"
        try:
            if not self._complete_soon(fast.ticket, None, 0, error=f"interrupted: {why}"):
                self.engine.spawn(
                    self._complete(fast.ticket, None, 0, error=f"interrupted: {why}"),
                    f"mysql-complete-{self.connection_id}",
                )
        except DbwardError:
            log.error("the interruption of statement %s could not be audited", fast.ticket.id)
        self._held = None
        self._fast_end(exc)

    def _fast_detach(self) -> None:
        assert self.upstream is not None and self.upstream.pipe is not None and self.live is not None
        self.upstream.pipe.detach()
        self.live.busy = False

    def _fast_end(self, exc: BaseException | None) -> None:
        """The fast command is over: go on with what the client sent meanwhile, or (``exc``)
        end the session through its task, as the task's path would have."""
        self._fast = None
        waiter, self._fast_waiter = self._fast_waiter, None
        queued, self._queued = self._queued, None
        reader = self.reader
        assert reader is not None
        if exc is not None:
            if isinstance(exc, DbwardError) and exc.code == "audit_unavailable":
                self.send_error(exc)  # as the command loop does: the session goes on
                exc = None
            else:
                reader.set_exception(exc if isinstance(exc, Exception) else ConnectionResetError(str(exc)))
        if exc is None:
            self._awaiting_command = True
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if exc is not None or not queued:
            return
        protocol = self._client_protocol
        if protocol is not None and protocol.ended:
            return  # the client is gone; its last bytes are moot
        data = bytes(queued)
        if not self._client_data(data):
            reader.feed_data(data)

    async def _fast_settled(self) -> None:
        """Wait until the fast command in flight is over."""
        if self._fast is not None:
            if self._fast_waiter is None:
                self._fast_waiter = self.loop.create_future()
            await asyncio.shield(self._fast_waiter)

    async def _command_loop(self) -> None:
        assert self.live is not None
        while True:
            try:
                pkt = await self._read_command()
                if pkt is None:
                    return
                self.live.touch()
                done = await self._dispatch(pkt.payload)
            except ProtocolViolation as exc:  # ends the session, recorded as its end reason
                raise ProtocolError(
                    f"dbward ended the session: malformed packet from the client ({exc})"
                ) from exc
            except (StatementDenied, UnsupportedFeature, ValidationError) as exc:
                self.send_error(exc)
                done = False
            except DbwardError as exc:
                if exc.code != "audit_unavailable":
                    raise
                self.send_error(exc)
                done = False
            await self.flush()
            self.live.touch()
            if done:
                return

    async def _dispatch(self, payload: bytes) -> bool:
        code = payload[0]
        match code:
            case Command.QUERY:
                await self._com_query(payload)
            case Command.STMT_PREPARE:
                await self._com_stmt_prepare(payload)
            case Command.STMT_EXECUTE:
                await self._com_stmt_execute(payload)
            case Command.STMT_FETCH:
                await self._com_stmt_fetch(payload)
            case Command.STMT_SEND_LONG_DATA:
                r = Reader(payload, 1)
                sid, pid = r.int4(), r.int2()
                if sid in self.statements:
                    self.statements[sid].long_data.add(pid)
                self._to_upstream(payload)
            case Command.STMT_CLOSE:
                sid = Reader(payload, 1).int4()
                self.statements.pop(sid, None)
                self._to_upstream(payload)
            case Command.STMT_RESET:
                sid = Reader(payload, 1).int4()
                if sid in self.statements:
                    self.statements[sid].long_data.clear()
                await self._forward(payload, ResponseKind.SINGLE)
            case Command.INIT_DB:
                await self._com_init_db(payload)
            case Command.FIELD_LIST:
                await self._com_field_list(payload)
            case Command.PROCESS_KILL:
                thread = Reader(payload, 1).int4()
                if thread > DBWARD_ID_BASE:
                    await self._kill_dbward_session(f"KILL {thread}", thread, whole=True)
                else:
                    await self._gated(payload, f"KILL {thread}", StatementOrigin.QUERY, ResponseKind.SINGLE)
            case Command.QUIT:
                self._to_upstream(payload)
                return True
            case Command.CHANGE_USER:
                raise UnsupportedFeature(
                    "COM_CHANGE_USER is refused: a dbward session belongs to the user who signed in; "
                    "open a new connection to act as another user"
                )
            case Command.RESET_CONNECTION:
                self.statements.clear()
                self.diag_plan = None  # the target forgets its conditions too
                self.cut_warning = None
                await self._forward(payload, ResponseKind.SINGLE)
            case c if c in _SINGLE:
                await self._forward(payload, ResponseKind.SINGLE)
            case _:
                name = Command(code).name if code in Command._value2member_map_ else f"0x{code:02x}"
                raise UnsupportedFeature(
                    f"dbward does not relay the MySQL command COM_{name}; it was not sent to the target"
                )
        return False

    def _to_upstream(self, payload: bytes) -> None:
        assert self.upstream is not None
        if self.upstream.writer.is_closing():
            raise UpstreamError(
                "dbward's connection to the target is closed; reconnect to start a new session"
            )
        self.upstream.writer.write(encode_packet(payload, 0))

    async def _check(self, statement: Statement) -> Ticket:
        assert self.info is not None
        pre = self._prechecked
        if pre is not None:
            # the fast path decided this command (and recorded the decision), then left it here
            self._prechecked = None
            if pre.statement.sql == statement.sql and pre.statement.origin is statement.origin:
                return pre
            log.error("a statement decided by the fast path was not the next one checked")
            await self._complete(pre, None, 0, error="not run: dbward lost track of this statement")
        # the gate's synchronous path for a decision it holds in its cache; else the full one
        ticket = self.deps.gate.check_cached(self.info, statement)
        if ticket is None:
            ticket = await self.deps.gate.check(self.info, statement)
        return ticket

    def _refusal(self, ticket: Ticket) -> DbwardError:
        if ticket.decision.effect is Effect.REQUIRE_APPROVAL:
            return ApprovalRequired(ticket.decision.message)
        return StatementDenied(ticket.decision.message)

    @staticmethod
    def _runs(ticket: Ticket) -> bool:
        """Whether the statement may be forwarded (its result rewritten when the decision
        carries a masking plan or a row limit)."""
        return ticket.decision.allowed

    @staticmethod
    def _rewritten(ticket: Ticket) -> bool:
        d = ticket.decision
        return d.masking is not None or d.row_limit is not None

    def _policies(
        self, tickets: tuple[Ticket, ...] | list[Ticket], diag: dict[int, MaskingPlan] | None = None
    ) -> list[ResultPolicy] | None:
        """What applies to each statement's results (None: none is rewritten, the fast path).
        ``diag``: statements showing the conditions of a statement that read masked values."""
        diag = diag or {}
        if not diag and not any(self._rewritten(t) for t in tickets):
            return None
        name = self.target.name if self.target is not None else ""
        out: list[ResultPolicy] = []
        for i, t in enumerate(tickets):
            plan = t.decision.masking
            # a text the gate read as several statements has one plan per statement (and result)
            plans = plan.statements if plan is not None and len(plan.statements) > 1 else (plan,)
            extra = ((_MESSAGE_COLUMN, diagnostics_mask(diag[i])),) if i in diag else ()
            out += [
                ResultPolicy(plan=p, limit=t.decision.row_limit, connection=name, extra=extra, owner=i)
                for p in plans
            ]
        return out

    def _diagnostics(self, texts: list[str], tickets: list[Ticket]) -> dict[int, MaskingPlan]:
        """The statements of a batch that show the target's conditions (warnings, errors) while
        they may quote masked values: after a masked statement of this session that left some,
        or after a masked statement earlier in the batch (its conditions are not known yet)."""
        diag: dict[int, MaskingPlan] = {}
        last = self.diag_plan
        for i, (text, t) in enumerate(zip(texts, tickets, strict=True)):
            if _DIAGNOSTICS.match(text):
                if last is not None:
                    diag[i] = last
            elif t.decision.masking is not None:
                last = t.decision.masking
        return diag

    def _note_conditions(self, rewriter: ResponseRewriter | None, tickets: list[Ticket]) -> None:
        """Remember a masked statement that left warnings or an error on the target."""
        if rewriter is None:
            return
        for note in rewriter.notes:
            plan = rewriter.policies[note.policy_index].plan
            if plan is not None and note.conditions:
                self.diag_plan = plan

    def _rewriter(
        self,
        kind: ResponseKind,
        policies: list[ResultPolicy],
        *,
        append_rows: tuple[tuple[bytes | None, ...], ...] = (),
        cursor: CursorState | None = None,
    ) -> ResponseRewriter:
        return ResponseRewriter(
            kind,
            deprecate_eof=self.deprecate_eof,
            policies=policies,
            token_key=self.deps.masking_key,
            append_rows=append_rows,
            cursor=cursor,
        )

    def _after_rewrite(self, rewriter: ResponseRewriter | None) -> None:
        """Remember the row-limit cut of this command for the next ``SHOW WARNINGS``."""
        self.cut_warning = None
        if rewriter is None:
            return
        for note in rewriter.notes:
            if note.cut:
                policy = rewriter.policies[note.policy_index]
                assert policy.limit is not None
                self.cut_warning = cut_notice(policy.limit, policy.connection)

    @staticmethod
    def _audit_of(
        rewriter: ResponseRewriter | None, index: int, ticket: Ticket
    ) -> tuple[list[dict[str, Any]] | None, bool]:
        """The masked columns of statement ``index``'s results (None: nothing masked and no
        inference flag) and whether the row limit cut one of them."""
        if rewriter is None:
            return None, False
        notes = [n for n in rewriter.notes if rewriter.policies[n.policy_index].owner == index]
        columns = [c for n in notes if n.audit for c in n.audit]
        plan = ticket.decision.masking
        masked = columns if columns else ([] if plan is not None and plan.inference else None)
        return masked, any(n.cut for n in notes)

    async def _complete(
        self,
        ticket: Ticket,
        result: ResultSummary | None,
        sent: int,
        *,
        error: str | None = None,
        masked: list[dict[str, Any]] | None = None,
        truncated: bool = False,
    ) -> None:
        assert self.info is not None and self.live is not None
        self.live.statements += 1
        if masked is not None:
            # the audit trail hears what was masked before the statement's completion
            await self.deps.gate.masked(self.info, ticket, masked)
        outcome = self._outcome(result, sent, error, truncated)
        gate = self.deps.gate
        if not gate.complete_soon(self.info, ticket, outcome):
            await gate.complete(self.info, ticket, outcome)

    def _complete_soon(
        self, ticket: Ticket, result: ResultSummary | None, sent: int, *, error: str | None = None
    ) -> bool:
        """:meth:`_complete` for the fast path (nothing masked): True when recorded, False
        (having done nothing) when the caller must await :meth:`_complete`."""
        assert self.info is not None and self.live is not None
        if not self.deps.gate.complete_soon(self.info, ticket, self._outcome(result, sent, error, False)):
            return False
        self.live.statements += 1
        return True

    @staticmethod
    def _outcome(
        result: ResultSummary | None, sent: int, error: str | None, truncated: bool
    ) -> StatementOutcome:
        err_code = None
        if result is not None and result.error is not None:
            error = result.error.message
            err_code = str(result.error.error_code)
        return StatementOutcome(
            rows=result.rows if result else None,
            affected=result.affected if result else None,
            bytes_sent=sent,
            error=error,
            error_code=err_code,
            truncated=truncated,
        )

    def _release(self) -> None:
        """Send the final chunk :meth:`_forward` held back (``hold_last``), now that the
        statement's completion has been handed to the audit journal (written in this loop
        iteration) and an approved request's outcome written to the store, as the PostgreSQL
        engine does: whoever reads a request's outcome right after the answer finds it."""
        data, self._held = self._held, None
        if data is None or self.writer is None:
            return
        if self.writer.transport.is_closing():
            raise ConnectionResetError("the client connection was lost")
        self.writer.write(data)

    async def _relay(self, scanner: ResponseScanner, hold_last: bool = False) -> None:
        """Copy the target's response to the client until the scanner says it is complete;
        with ``hold_last`` the final chunk is kept in ``_held`` for :meth:`_release`. The
        chunks are scanned and written as the loop reads them (:class:`_RelaySink`), with no
        task switch per chunk."""
        assert self.upstream is not None and self.writer is not None and self.live is not None
        pipe = self.upstream.pipe
        assert pipe is not None
        live = self.live
        live.busy = True
        try:
            while True:
                sink = _RelaySink(self, scanner, hold_last)
                pipe.attach(sink)
                try:
                    infile = await sink.outcome
                finally:
                    pipe.detach()
                if not infile:
                    break
                await self.writer.drain()
                await self._relay_infile()
                scanner.resume_after_infile()
        finally:
            live.busy = False

    async def _relay_rewritten(
        self, scanner: ResponseScanner, rewriter: ResponseRewriter, hold_last: bool = False
    ) -> None:
        """Like :meth:`_relay`, for a response dbward rewrites (masking, row limit): each chunk
        read is rewritten and written at once; the scanner follows what the client gets."""
        assert self.upstream is not None and self.writer is not None and self.live is not None
        up = self.upstream.pipe
        assert up is not None
        out = self.writer
        live = self.live
        live.busy = True
        try:
            while True:
                data = await up.read()
                if not data:
                    raise UpstreamError("the target closed the connection in the middle of a response")
                try:
                    sent = rewriter.feed(data)
                except ProtocolViolation as exc:
                    raise UpstreamError(f"the target sent a malformed response ({exc})") from exc
                except Exception as exc:  # a mask that failed: never relay what it should have hidden
                    log.exception(
                        "masking a result of connection %s failed", self.target.name if self.target else "?"
                    )
                    raise UpstreamError(
                        f"dbward could not apply the masking rules to this result ({type(exc).__name__}); "
                        "it ended the session rather than send unmasked values"
                    ) from exc
                if sent:
                    try:
                        scanner.feed(sent)
                    except ProtocolViolation as exc:  # a bug of dbward's: never send it
                        raise UpstreamError(
                            f"dbward could not rewrite the target's response ({exc})"
                        ) from exc
                    if out.transport.is_closing():
                        raise ConnectionResetError("the client connection was lost")
                    if hold_last and rewriter.done and not rewriter.wants_infile:
                        if not scanner.done:
                            raise UpstreamError(
                                "dbward could not rewrite the target's response (it ended early)"
                            )
                        self._held = sent
                        live.touch()
                        break
                    out.write(sent)
                live.touch()
                if rewriter.wants_infile:
                    await out.drain()
                    await self._relay_infile()
                    rewriter.resume_after_infile()
                    scanner.resume_after_infile()
                    continue
                if rewriter.done:
                    if not scanner.done:
                        raise UpstreamError("dbward could not rewrite the target's response (it ended early)")
                    break
                await out.drain()
        finally:
            live.busy = False

    async def _relay_infile(self) -> None:
        """LOCAL INFILE (only when proxy.allow_load_data_local is on): the client's file goes up."""
        assert self.reader is not None and self.upstream is not None
        while True:
            header = await self.reader.readexactly(4)
            length, _ = frame_header(header)
            body = await self.reader.readexactly(length) if length else b""
            self.upstream.writer.write(header + body)
            assert self.upstream.pipe is not None
            await self.upstream.pipe.drain()
            if length == 0:
                return

    async def _forward(
        self,
        payload: bytes,
        kind: ResponseKind,
        tickets: tuple[Ticket, ...] = (),
        rewriter: ResponseRewriter | None = None,
        *,
        hold_last: bool = False,
    ) -> ResponseScanner:
        """Send the command up and relay its response (through ``rewriter`` when given);
        ``tickets`` are completed with an error when the exchange breaks off (client gone,
        target gone, session killed)."""
        self._to_upstream(payload)
        scanner = ResponseScanner(kind, deprecate_eof=self.deprecate_eof)
        try:
            if rewriter is None:
                await self._relay(scanner, hold_last)
            else:
                await self._relay_rewritten(scanner, rewriter, hold_last)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, DbwardError) as exc:
            why = exc.message if isinstance(exc, DbwardError) else "the client connection was lost"
            for t in tickets:
                try:
                    await self._complete(t, None, scanner.bytes_seen, error=f"interrupted: {why}")
                except DbwardError:
                    log.error("the interruption of statement %s could not be audited", t.id)
            raise
        if scanner.last_status is not None:
            self.no_backslash_escapes = bool(scanner.last_status & _NO_BACKSLASH_ESCAPES)
        return scanner

    async def _gated(
        self, payload: bytes, sql: str, origin: StatementOrigin, kind: ResponseKind, **kw: Any
    ) -> tuple[ResponseScanner, ResponseRewriter | None]:
        """Decide, forward, relay (rewritten when the decision says so), complete."""
        assert self.info is not None
        ticket = await self._check(Statement(sql=sql, origin=origin, database=self.info.database, **kw))
        if not self._runs(ticket):
            raise self._refusal(ticket)
        rewriter: ResponseRewriter | None = None
        diag = {0: self.diag_plan} if self.diag_plan is not None and _DIAGNOSTICS.match(sql) else {}
        policies = self._policies((ticket,), diag)
        if kind is ResponseKind.EXECUTE and policies is not None:
            rewriter = self._rewriter(kind, policies)
        elif kind is ResponseKind.PREPARE and policies is not None and ticket.decision.masking is not None:
            rewriter = self._rewriter(kind, policies)  # announces the masked columns' types
        if kind in (ResponseKind.EXECUTE, ResponseKind.PREPARE):
            self.cut_warning = None
        scanner = await self._forward(payload, kind, (ticket,), rewriter, hold_last=True)
        masked, truncated = (
            self._audit_of(rewriter, 0, ticket) if kind is ResponseKind.EXECUTE else (None, False)
        )
        try:
            await self._complete(
                ticket,
                scanner.results[0] if scanner.results else None,
                scanner.bytes_seen,
                masked=masked,
                truncated=truncated,
            )
        finally:
            self._release()
        if kind is ResponseKind.EXECUTE:
            self._after_rewrite(rewriter)
            self._note_conditions(rewriter, [ticket])
        return scanner, rewriter

    # ------------------------------------------------------------------ statements
    async def _kill_dbward_session(self, sql: str, connection_id: int, *, whole: bool) -> None:
        """``KILL [QUERY] <id>`` naming a dbward connection id (what clients learn from the greeting,
        e.g. the mariadb client on Ctrl-C): dbward kills that session's target thread itself, since
        forwarding the id would hit an unrelated thread on the target."""
        assert self.info is not None
        ticket = await self._check(
            Statement(sql=sql, origin=StatementOrigin.QUERY, database=self.info.database)
        )
        if not self._runs(ticket):
            raise self._refusal(ticket)
        user = self.info.principal.username
        workers = self.deps.workers
        if workers is not None and (owner := workers.owner(connection_id)) != workers.index:
            error = await workers.kill(owner, connection_id, user, whole=whole)  # another process's
        else:
            error = await self.engine.kill_local(connection_id, user, whole=whole)
        if error is not None:
            await self._complete(ticket, None, 0, error=error)
            raise ValidationError(f"KILL refused: {error}")
        self.send(OKPacket(status=self.upstream.status if self.upstream else 2).encode())
        await self._complete(ticket, ResultSummary(affected=0), 0)

    async def _com_query(self, payload: bytes) -> None:
        assert self.info is not None
        sql = payload[1:].decode("utf-8", "replace")
        kill = _KILL.match(sql)
        if kill is not None and int(kill.group(2)) > DBWARD_ID_BASE:
            await self._kill_dbward_session(
                sql.strip(), int(kill.group(2)), whole=not (kill.group(1) or "").lower().startswith("query")
            )
            return
        statements = split_statements(sql, backslash_escapes=not self.no_backslash_escapes) or [sql]
        tickets: list[Ticket] = []
        for i, text in enumerate(statements):
            tickets.append(
                await self._check(
                    Statement(
                        sql=text,
                        origin=StatementOrigin.QUERY,
                        database=self.info.database,
                        index_in_batch=i,
                        batch_size=len(statements),
                    )
                )
            )
        refused = next((t for t in tickets if not self._runs(t)), None)
        diag = self._diagnostics(statements, tickets)
        policies = self._policies(tickets, diag)
        if (
            refused is None
            and policies is not None
            and any(t.decision.kind in _MANY_RESULTS for t in tickets[:-1])
        ):
            # Which results belong to which statement is known only when a statement that can
            # answer with several result sets (CALL) comes last.
            for t in tickets:
                await self._complete(
                    t, None, 0, error="refused: a CALL before other statements of a masked batch"
                )
            raise UnsupportedFeature(
                "dbward refused this multi-statement: it applies masking or a row limit (rules: "
                + ", ".join(sorted({r for t in tickets for r in t.decision.rule_ids}))
                + ") and a CALL or EXECUTE that can return several result sets is not its last "
                "statement, so dbward cannot tell which results belong to which statement; send the "
                "CALL on its own or last"
            )
        if refused is not None:
            for t in tickets:
                if self._runs(t):
                    await self._complete(
                        t, None, 0, error="not run: another statement in the same packet was denied"
                    )
            raise self._refusal(refused)
        if not self.deps.settings.proxy.allow_load_data_local and any(
            is_load_data_local(s) for s in statements
        ):
            for t in tickets:
                await self._complete(t, None, 0, error="refused: LOAD DATA LOCAL INFILE is off")
            raise UnsupportedFeature(
                "LOAD DATA LOCAL INFILE is refused by dbward: it lets the server read files from the "
                "client machine; an administrator can allow it with the setting proxy.allow_load_data_local"
            )
        append: tuple[tuple[bytes | None, ...], ...] = ()
        if self.cut_warning is not None and len(statements) == 1 and _SHOW_WARNINGS.match(sql):
            # dbward's own warning: the last statement's result was cut at the row limit
            append = ((b"Warning", str(CUT_WARNING_CODE).encode(), self.cut_warning.encode()),)
            name = self.target.name if self.target is not None else ""
            policies = policies or [ResultPolicy(plan=None, limit=None, connection=name)]
        rewriter = (
            self._rewriter(ResponseKind.QUERY, policies, append_rows=append) if policies is not None else None
        )
        if not append:
            self.cut_warning = None
        scanner = await self._forward(payload, ResponseKind.QUERY, tuple(tickets), rewriter, hold_last=True)
        try:
            if not append:
                self._after_rewrite(rewriter)
            results = scanner.results
            sent: int = scanner.bytes_seen
            self._note_conditions(rewriter, tickets)
            for i, t in enumerate(tickets):
                if i < len(results):
                    res = results[i]
                    if i == len(tickets) - 1 and len(results) > len(tickets):  # CALL: extra result sets
                        extra = results[i:]
                        res = ResultSummary(
                            rows=sum(r.rows or 0 for r in extra)
                            if any(r.rows is not None for r in extra)
                            else None,
                            affected=extra[-1].affected,
                            error=next((r.error for r in extra if r.error), None),
                        )
                    masked, truncated = self._audit_of(rewriter, i, t)
                    await self._complete(t, res, sent if i == 0 else 0, masked=masked, truncated=truncated)
                    db = use_target(t.statement.sql)
                    if db is not None and res.error is None:
                        self.info.database = db
                else:
                    await self._complete(
                        t, None, 0, error="not run: an earlier statement in the same packet failed"
                    )
        finally:
            self._release()

    async def _com_stmt_prepare(self, payload: bytes) -> None:
        sql = payload[1:].decode("utf-8", "replace")
        scanner, _ = await self._gated(payload, sql, StatementOrigin.PREPARE, ResponseKind.PREPARE)
        ok = scanner.prepare_ok
        if ok is not None:
            self.statements[ok.statement_id] = _Prepared(sql=sql, num_params=ok.num_params)
            self.last_prepared = ok.statement_id

    async def _com_stmt_execute(self, payload: bytes) -> None:
        sid = Reader(payload, 1).int4()
        if sid == 0xFFFFFFFF and self.last_prepared is not None:
            sid = self.last_prepared
        prepared = self.statements.get(sid)
        if prepared is None:
            raise ValidationError(
                f"prepared statement {sid} is unknown to dbward (it was never prepared in this session "
                "or has been closed)"
            )
        values, types = execute_values(
            payload, prepared.num_params, prepared.types, prepared.long_data, _LONG_DATA
        )
        params = tuple(map(_audit_value, values))
        _, rewriter = await self._gated(
            payload,
            prepared.sql,
            StatementOrigin.EXECUTE,
            ResponseKind.EXECUTE,
            params=params,
            statement_name=str(sid),
        )
        prepared.types = types
        prepared.long_data.clear()
        prepared.rewritten = rewriter is not None
        prepared.cursor = rewriter.cursor if rewriter is not None else None

    async def _com_stmt_fetch(self, payload: bytes) -> None:
        """COM_STMT_FETCH: rows of a cursor; a rewritten statement's cursor is rewritten alike."""
        sid = Reader(payload, 1).int4()
        prepared = self.statements.get(sid)
        if prepared is None or not prepared.rewritten:
            await self._forward(payload, ResponseKind.FETCH)
            return
        cursor = prepared.cursor
        if cursor is None:
            raise UnsupportedFeature(
                f"dbward refused COM_STMT_FETCH of prepared statement {sid}: its result is masked or "
                "row-limited and dbward saw no cursor opened for it, so it cannot rewrite the rows"
            )
        rewriter = self._rewriter(ResponseKind.FETCH, [cursor.policy], cursor=cursor)
        await self._forward(payload, ResponseKind.FETCH, (), rewriter)
        if rewriter.cut:
            assert cursor.policy.limit is not None
            self.cut_warning = cut_notice(cursor.policy.limit, cursor.policy.connection)

    async def _com_init_db(self, payload: bytes) -> None:
        assert self.info is not None
        db = payload[1:].decode("utf-8", "replace")
        ticket = await self._check(
            Statement(sql="USE `" + db.replace("`", "``") + "`", origin=StatementOrigin.INIT_DB, database=db)
        )
        if not self._runs(ticket):
            raise self._refusal(ticket)
        scanner = await self._forward(payload, ResponseKind.SINGLE, (ticket,), hold_last=True)
        res = scanner.results[0] if scanner.results else None
        try:
            await self._complete(ticket, res, scanner.bytes_seen)
        finally:
            self._release()
        if res is not None and res.error is None:
            self.info.database = db

    async def _com_field_list(self, payload: bytes) -> None:
        r = Reader(payload, 1)
        table = r.nul_bytes().decode("utf-8", "replace")
        wildcard = r.rest().decode("utf-8", "replace")
        sql = "SHOW COLUMNS FROM `" + table.replace("`", "``") + "`"
        if wildcard:
            sql += " LIKE '" + wildcard.replace("'", "''") + "'"
        await self._gated(payload, sql, StatementOrigin.FIELD_LIST, ResponseKind.FIELD_LIST)
