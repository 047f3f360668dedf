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

The result path reads large chunks and only scans frame headers (see ``wire/postgres/framing``);
it never awaits per message. Audit completions are awaited after each chunk is written.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

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
from dbward.identity.secrets import ScramVerifier, hash_password, scram_verifier, verify_argon2
from dbward.policy.model import Decision, Effect
from dbward.proxy.engine import (
    ClientConnection,
    EngineDeps,
    LiveSession,
    StoredSecret,
    UserCredentials,
    register,
    session_lifecycle,
    verify_cleartext,
)
from dbward.proxy.gate import Ticket
from dbward.proxy.postgres_upstream import (
    STREAM_LIMIT,
    CancelRoute,
    Upstream,
    UpstreamRefused,
    connect,
    send_cancel,
)
from dbward.wire.postgres import messages as m
from dbward.wire.postgres.framing import scan
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


@dataclass(kw_only=True)
class _Portal:
    statement: _Prepared
    params: tuple[Any, ...]


@dataclass(kw_only=True)
class _Slot:
    """An allowed execution waiting for its CommandComplete (or error) to reach the audit trail."""

    ticket: Ticket
    unit: int
    parse: bool = False  # completed by ParseComplete rather than CommandComplete
    simple: bool = False  # part of a simple Query message (whose ReadyForQuery is its own unit)


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


# --------------------------------------------------------------------------- the engine
@register
class PostgresEngine:
    """One instance per node; it owns the cancel-key map of the node's PostgreSQL sessions."""

    protocol: ClassVar[str] = PROTOCOL

    def __init__(self) -> None:
        self.cancel_keys: dict[tuple[int, bytes], CancelRoute] = {}

    async def serve(self, client: ClientConnection, deps: EngineDeps) -> None:
        await _Session(self, client, deps).run()

    def issue_keys(self, route: CancelRoute, key_length: int) -> tuple[int, bytes]:
        while True:
            pid = secrets.randbelow(0x7FFFFFFF - 1) + 1
            secret = secrets.token_bytes(key_length)
            if (pid, secret) not in self.cancel_keys:
                self.cancel_keys[(pid, secret)] = route
                return pid, secret


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
        self.units_sent = 0  # Query / Sync messages forwarded (each answered by one ReadyForQuery)
        self.units_done = 0
        self.skipping = False  # after a refusal in extended mode, until Sync
        self.copy_in = False  # the target is in COPY FROM STDIN mode, where it ignores Sync
        self.relayed = 0  # bytes relayed to the client so far
        self.mark = 0  # value of ``relayed`` when the previous statement completed

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
        route = self.engine.cancel_keys.get((req.pid, req.secret))
        if route is None:
            log.info("cancel request with unknown keys ignored")
            return
        await send_cancel(route)

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
            if creds is None:
                # same work as for a real user, so the answer's timing does not reveal who exists
                await asyncio.to_thread(verify_argon2, _decoy_hash(), password)
                return None
            found = await asyncio.to_thread(verify_cleartext, creds, password)
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
        pid, key = self.engine.issue_keys(self.route, 32 if self.minor >= 2 else 4)
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
                tg.create_task(self._frontend(), name="pg-frontend")
                tg.create_task(self._backend(), name="pg-backend")
                tg.create_task(self._watch(), name="pg-watch")
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

    def _set_busy(self) -> None:
        if self.live is not None:
            self.live.busy = self.units_sent > self.units_done

    # ---- client -> target
    async def _frontend(self) -> None:
        assert self.reader is not None and self.up is not None and self.live is not None
        reader, up, live = self.reader, self.up.writer, self.live
        buf = bytearray()
        passthrough = 0  # bytes of a large CopyData still to relay as they come
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    raise _ClientGone()
                live.touch()
                if passthrough:
                    take = min(passthrough, len(data))
                    up.write(data[:take])
                    passthrough -= take
                    data = data[take:]
                    if not data:
                        await up.drain()
                        continue
                buf += data
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
                            passthrough = end - n
                            pos = n
                        break
                    if t in (b"d", b"c", b"f", b"H"):
                        if t != b"d" and t != b"H":
                            self.copy_in = False  # CopyDone / CopyFail end the client's COPY data
                        out += buf[pos:end]
                    elif t == b"X":
                        out += buf[pos:end]
                        up.write(bytes(out))
                        await up.drain()
                        raise _ClientGone()
                    else:
                        await self._handle(t, bytes(buf[pos + 5 : end]), bytes(buf[pos:end]), out)
                    pos = end
                del buf[:pos]
                if out:
                    up.write(bytes(out))
                    self._set_busy()
                    await up.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            raise _ClientGone() from None

    def _poison(self, exc: DbwardError, out: bytearray, *, sync: bool) -> None:
        """Stand-in for a refused message: the target fails it, dbward substitutes its error."""
        token = secrets.token_hex(12)
        self.substitutes.append(_Substitute(token=token, unit=self.units_sent, error=error_response(exc)))
        out += m.Execute(f"dbward_refused_{token}").encode()
        if sync:
            out += m.Sync().encode()
            self.units_sent += 1

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
        try:
            ticket = await self.deps.gate.check(self.session, statement, refuse=refuse)
        except AuditUnavailable as exc:
            return exc  # fail closed: this statement is refused, the session stays usable
        self.live.statements += 1
        d = ticket.decision
        if d.allowed:
            return ticket
        if d.effect is Effect.REQUIRE_APPROVAL:
            return ApprovalRequired(d.message)
        return StatementDenied(d.message)

    async def _handle(self, t: bytes, body: bytes, raw: bytes, out: bytearray) -> None:
        assert self.session is not None
        if self.skipping and t != b"S":
            return  # as the server does after an error: discard until Sync
        msg = m.decode_frontend(t[0], body)
        db = self.session.database
        match msg:
            case m.Query(sql=sql):
                self.statements.pop("", None)
                self.portals.pop("", None)
                parts = split_statements(sql)
                answers = [
                    await self._decide(
                        Statement(sql=part, database=db, index_in_batch=i, batch_size=len(parts))
                    )
                    for i, part in enumerate(parts)
                ]
                refusals = [a for a in answers if isinstance(a, DbwardError)]
                if refusals:  # one refused statement refuses the whole message, as one error
                    self._poison(refusals[0], out, sync=True)
                    return
                for ticket in answers:
                    assert isinstance(ticket, Ticket)
                    self.slots.append(_Slot(ticket=ticket, unit=self.units_sent, simple=True))
                out += raw
                self.units_sent += 1
            case m.Parse(statement=name, sql=sql, param_types=types):
                answer = await self._decide(
                    Statement(
                        sql=sql, origin=StatementOrigin.PREPARE, database=db, statement_name=name or None
                    )
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
                    self.statements[name] = _Prepared(name=name, sql=sql, param_types=types)
                self.slots.append(_Slot(ticket=answer, unit=self.units_sent, parse=True))
                out += raw
            case m.Bind(portal=portal, statement=name):
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
                params = decode_params(msg.params, msg.param_formats, stmt.param_types)
                self.portals[portal] = _Portal(statement=stmt, params=params)
                out += raw
            case m.Execute(portal=portal):
                p = self.portals.get(portal)
                if p is None:
                    # A cursor opened with SQL DECLARE is a portal too; the gate sees the FETCH.
                    limit = str(msg.max_rows) if msg.max_rows > 0 else "ALL"
                    stmt = _Prepared(
                        name="", sql=f"FETCH {limit} FROM {_quote_ident(portal)}", param_types=()
                    )
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
                self.slots.append(_Slot(ticket=answer, unit=self.units_sent))
                out += raw
            case m.Close(kind=kind, name=name):
                (self.statements if kind == "S" else self.portals).pop(name, None)
                out += raw
            case m.Describe(kind="S", name=name):
                self.describes.append((self.units_sent, self.statements.get(name)))
                out += raw
            case m.Describe():
                out += raw
            case m.Sync():
                self.skipping = False
                out += raw
                if not self.copy_in:
                    self.units_sent += 1
            case m.FunctionCall():
                self._poison(
                    UnsupportedFeature(
                        "the fast-path FunctionCall message is refused by dbward because the gate cannot "
                        "see what it runs; call the function with SELECT instead"
                    ),
                    out,
                    sync=True,
                )
            case _:
                raise ProtocolError(f"unexpected message {t!r} from the client")

    # ---- target -> client
    async def _backend(self) -> None:
        assert self.writer is not None and self.up is not None and self.live is not None
        reader, client, live = self.up.reader, self.writer, self.live
        buf = bytearray()
        passthrough = 0
        rows = 0
        unpack = _HDR.unpack_from
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    raise _UpstreamGone()
                live.touch()
                if passthrough:
                    take = min(passthrough, len(data))
                    client.write(data[:take])
                    self.relayed += take
                    passthrough -= take
                    data = data[take:]
                    if not data:
                        await client.drain()
                        continue
                buf += data
                done: list[_Completion] = []
                out: list[bytes] = []
                seg = 0  # start of the not yet emitted part of buf
                pos, n = 0, len(buf)
                # framing.scan, inlined: this loop runs once per result row
                while n - pos >= 5:
                    t, length = unpack(buf, pos)
                    end = pos + 1 + length
                    if t == b"D" and 4 <= length <= m.MAX_MESSAGE:  # the hot path: rows are only counted
                        if end > n:
                            if length > PASSTHROUGH_MIN:
                                rows += 1
                                passthrough = end - n
                                pos = n
                            break
                        rows += 1
                        pos = end
                        continue
                    if length < 4 or length > m.MAX_MESSAGE:
                        raise ProtocolError("the target sent a message of impossible length")
                    if end > n:
                        if t == b"d" and length > PASSTHROUGH_MIN:
                            passthrough = end - n
                            pos = n
                        break
                    if t in (b"C", b"I", b"s", b"E", b"Z", b"t", b"1", b"G", b"S"):
                        replacement = self._on_control(t, bytes(buf[pos + 5 : end]), rows, end, done)
                        if t in (b"C", b"I", b"s", b"E"):
                            rows = 0  # the rows counted so far belonged to the statement just ended
                        if replacement is not None:
                            out.append(bytes(buf[seg:pos]))
                            out.append(replacement)
                            seg = end
                    pos = end
                if seg < pos:
                    out.append(bytes(buf[seg:pos]))
                del buf[:pos]
                # The audit trail hears of a completion before the client does.
                for c in done:
                    await self.deps.gate.complete(self.session_info, c.ticket, c.outcome)
                for chunk in out:
                    client.write(chunk)
                    self.relayed += len(chunk)
                await client.drain()
                self._set_busy()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            raise _UpstreamGone() from None

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
            return None
        if t == b"E":
            err = m.decode_backend(t[0], body)
            assert isinstance(err, m.ErrorResponse)
            for sub in self.substitutes:
                if sub.token in err.message:
                    self.substitutes.remove(sub)
                    return sub.error
            slot = self._head_slot()
            if slot is not None:
                done.append(
                    _Completion(
                        ticket=slot.ticket,
                        outcome=StatementOutcome(
                            rows=rows or None, error=err.message, error_code=err.sqlstate
                        ),
                    )
                )
            return None
        slot = self._head_slot(parse=t == b"1")
        if slot is None:
            return None
        affected: int | None = None
        count: int | None = rows
        if t == b"C":
            tag = m.decode_backend(t[0], body)
            assert isinstance(tag, m.CommandComplete)
            tag_rows, affected = tag.counts()
            count = tag_rows if tag_rows is not None else (rows or None)
        elif t in (b"I", b"1"):
            count = None
        done.append(
            _Completion(
                ticket=slot.ticket,
                outcome=StatementOutcome(rows=count, affected=affected, bytes_sent=max(0, sent - self.mark)),
            )
        )
        self.mark = sent
        return None


@functools.cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _decoy_verifier() -> ScramVerifier:
    """A verifier for unknown users, so the exchange looks the same and fails at the proof."""
    return scram_verifier(secrets.token_hex(16), salt=secrets.token_bytes(16))
