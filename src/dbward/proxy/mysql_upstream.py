"""dbward as a MySQL client: connecting to a target with the vaulted credential.

Reads the target's greeting, negotiates TLS per the connection's ``tls_mode``, answers the
authentication (mysql_native_password, caching_sha2_password fast and full paths with TLS or
RSA, sha256_password, and client_ed25519 when PyNaCl is installed), and hands back the
streams for relaying. Also runs the one-shot ``KILL QUERY`` dbward issues on a separate
connection when a client disappears mid-query. Counterpart: ``proxy/mysql.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Protocol, cast

from dbward.domain import Target, TlsMode
from dbward.errors import UpstreamError
from dbward.proxy.tls import client_context
from dbward.wire.mysql import auth
from dbward.wire.mysql.constants import Capability, Command
from dbward.wire.mysql.messages import (
    AuthSwitchRequest,
    ComQuery,
    ERRPacket,
    HandshakeResponse41,
    HandshakeV10,
    OKPacket,
    SSLRequest,
)
from dbward.wire.mysql.packets import Packet, ProtocolViolation, encode_packet, frame_header

log = logging.getLogger(__name__)

#: StreamReader buffer limit: large enough that result chunks are read in big pieces
STREAM_LIMIT = 1 << 20

#: the capabilities dbward always asks a target for
_REQUIRED = Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    """One whole packet from a stream (joining 16 MiB continuation frames)."""
    parts: list[bytes] = []
    first = -1
    while True:
        length, seq = frame_header(await reader.readexactly(4))
        if first < 0:
            first = seq
        parts.append(await reader.readexactly(length) if length else b"")
        if length < 0xFFFFFF:
            return Packet(first, parts[0] if len(parts) == 1 else b"".join(parts))


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RelaySink(Protocol):
    """Who takes the target's bytes while a response is relayed (``proxy/mysql.py``)."""

    finished: bool

    def feed(self, data: bytes) -> None:
        """Take one chunk as it arrives; never raises (a failure ends the relay instead)."""
        ...

    def end(self) -> None:
        """The target's connection ended."""
        ...


class UpstreamPipe(asyncio.Protocol):
    """The target leg after login, as a Protocol rather than a stream (no task switch, no copy
    per chunk): while a :class:`RelaySink` is attached, every chunk the loop reads goes to it at
    once; otherwise chunks are kept for :meth:`read` (reading pauses above ``STREAM_LIMIT``).
    Reading also pauses while the client's connection cannot take more (:meth:`hold`), so a
    slow client holds the target back rather than filling dbward's memory."""

    def __init__(self, transport: asyncio.Transport, leftover: bytes, eof: bool) -> None:
        self.transport = transport
        self._buf = bytearray(leftover)
        self._eof = eof
        self._sink: RelaySink | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._held = False  # the client cannot take more
        self._full = False  # nobody read what is buffered
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- Protocol callbacks
    def data_received(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None and not sink.finished:
            sink.feed(data)
            return
        self._buf += data
        self._wake()
        if len(self._buf) > STREAM_LIMIT and not self._full:
            self._full = True
            self._pause()

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("dbward's connection to the target was lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ---------------------------------------------------------------- the relay's side
    def attach(self, sink: RelaySink) -> None:
        """Send the target's bytes to ``sink`` from now on, starting with what is buffered."""
        self._sink = sink
        if self._full:
            self._full = False
            self._resume()
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            sink.feed(data)
        if self._eof and not sink.finished:
            sink.end()

    def detach(self) -> None:
        self._sink = None

    async def read(self) -> bytes:
        """What the target sent since the last read (waiting for some); b"" at its end."""
        while not self._buf:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buf)
        self._buf.clear()
        if self._full:
            self._full = False
            self._resume()
        return data

    async def drain(self) -> None:
        """Wait until the target's connection can take more (like ``StreamWriter.drain``)."""
        if self.transport.is_closing():
            raise ConnectionResetError("dbward's connection to the target is closed")
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def hold(self, on: bool) -> None:
        """Pause (True) or resume (False) reading for the client's sake."""
        if on != self._held:
            self._held = on
            if on:
                self._pause()
            else:
                self._resume()

    # ---------------------------------------------------------------- internals
    def _pause(self) -> None:
        if not self.transport.is_closing() and self.transport.is_reading():
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._held or self._full or self.transport.is_closing():
            return
        if not self.transport.is_reading():
            self.transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ended(self) -> None:
        self._eof = True
        self._wake()
        sink = self._sink
        if sink is not None and not sink.finished:
            sink.end()


@dataclass(kw_only=True)
class UpstreamConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    greeting: HandshakeV10
    capabilities: int
    status: int
    tls: bool
    #: the target leg as a Protocol once the session relays (:meth:`start_relaying`)
    pipe: UpstreamPipe | None = None

    @property
    def thread_id(self) -> int:
        return self.greeting.connection_id

    def start_relaying(self) -> UpstreamPipe:
        """Take the connection from its login stream into an :class:`UpstreamPipe`, with any
        bytes the stream holds; ``writer`` still writes and closes (through the transport)."""
        transport = cast(asyncio.Transport, self.writer.transport)
        held: bytearray = self.reader._buffer  # type: ignore[attr-defined]
        leftover = bytes(held)
        held.clear()
        eof = self.reader.at_eof() or self.reader.exception() is not None
        pipe = UpstreamPipe(transport, leftover, eof or transport.is_closing())
        transport.set_protocol(pipe)
        if not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()  # the stream reader may have paused it
        self.pipe = pipe
        return pipe

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


async def _open(target: Target, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(target.host, target.port, limit=STREAM_LIMIT)
    except (OSError, TimeoutError) as exc:
        raise UpstreamError(
            f"dbward cannot reach the target of connection {target.name} at {target.host}:{target.port} "
            f"({exc.__class__.__name__}: {exc}); check the connection's host and port"
        ) from exc
    set_nodelay(writer)
    return reader, writer


async def probe_greeting(target: Target, timeout: float) -> HandshakeV10:
    """The target's greeting (server version, capabilities), read once and then hung up."""
    reader, writer = await _open(target, timeout)
    try:
        async with asyncio.timeout(timeout):
            pkt = await read_packet(reader)
        return _greeting(target, pkt.payload)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise UpstreamError(f"the target of connection {target.name} sent no MySQL greeting ({exc})") from exc
    finally:
        writer.close()


def _greeting(target: Target, payload: bytes) -> HandshakeV10:
    if payload[:1] == b"\xff":
        err = ERRPacket.parse(payload)
        raise UpstreamError(
            f"the target of connection {target.name} refused the connection: {err.message} ({err.error_code})"
        )
    try:
        return HandshakeV10.parse(payload)
    except ProtocolViolation as exc:
        raise UpstreamError(f"the target of connection {target.name} is not a MySQL server: {exc}") from exc


def _first_response(plugin: str, password: bytes, nonce: bytes, tls: bool) -> tuple[str, bytes]:
    match plugin:
        case auth.NATIVE:
            return plugin, auth.scramble_native(password, nonce)
        case auth.CACHING_SHA2:
            return plugin, auth.scramble_caching_sha2(password, nonce)
        case auth.SHA256:
            if not password:
                return plugin, b""
            return plugin, password + b"\x00" if tls else b"\x01"
        case auth.CLEAR:
            if not tls:
                raise UpstreamError(
                    "the target asks for mysql_clear_password without TLS; dbward will not send the "
                    "vaulted password in clear (set the connection's tls_mode to require)"
                )
            return plugin, password + b"\x00"
        case auth.ED25519:
            try:
                from pymysql import _auth as pymysql_auth

                return plugin, pymysql_auth.ed25519_password(password, nonce)
            except ImportError:
                raise UpstreamError(
                    "the target's account uses client_ed25519, which needs PyNaCl installed in dbward; "
                    "install it or give the upstream account mysql_native_password"
                ) from None
        case _:
            # Answer as mysql_native_password; the server switches us to what it needs.
            return auth.NATIVE, auth.scramble_native(password, nonce)


async def connect_upstream(
    target: Target,
    password: str,
    *,
    client_capabilities: int,
    database: str | None,
    attributes: dict[str, str],
    charset: int,
    timeout: float,
    allow_local_infile: bool,
    greeting_seen: HandshakeV10 | None = None,
) -> UpstreamConnection:
    """Connect and log in to ``target``; raises :class:`UpstreamError` with a DBA-readable reason."""
    reader, writer = await _open(target, timeout)
    try:
        async with asyncio.timeout(timeout):
            return await _login(
                target,
                password,
                reader,
                writer,
                client_capabilities=client_capabilities,
                database=database,
                attributes=attributes,
                charset=charset,
                allow_local_infile=allow_local_infile,
            )
    except UpstreamError:
        writer.close()
        raise
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolViolation) as exc:
        writer.close()
        raise UpstreamError(
            f"logging in to the target of connection {target.name} failed ({exc.__class__.__name__}: {exc})"
        ) from exc


async def _login(
    target: Target,
    password_text: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    client_capabilities: int,
    database: str | None,
    attributes: dict[str, str],
    charset: int,
    allow_local_infile: bool,
) -> UpstreamConnection:
    password = password_text.encode()
    pkt = await read_packet(reader)
    greeting = _greeting(target, pkt.payload)
    server = greeting.capabilities
    if not server & Capability.PROTOCOL_41:
        raise UpstreamError(f"the target of connection {target.name} is older than MySQL 4.1")
    caps = (client_capabilities & server) | (_REQUIRED & server)
    caps &= ~(Capability.SSL | Capability.COMPRESS | Capability.CONNECT_WITH_DB)
    if not allow_local_infile:
        caps &= ~Capability.LOCAL_FILES
    if database:
        caps |= Capability.CONNECT_WITH_DB & server
    seq = pkt.seq + 1
    tls = False
    ctx = client_context(target.tls_mode, target.tls_ca)
    if ctx is not None and server & Capability.SSL:
        caps |= Capability.SSL
        writer.write(encode_packet(SSLRequest(capabilities=caps, charset=charset).encode(), seq))
        seq += 1
        hostname = target.host if target.tls_mode is TlsMode.VERIFY_FULL else None
        await writer.start_tls(ctx, server_hostname=hostname)
        tls = True
    elif target.tls_mode in (TlsMode.REQUIRE, TlsMode.VERIFY_CA, TlsMode.VERIFY_FULL):
        raise UpstreamError(
            f"the target of connection {target.name} does not offer TLS, but the connection's "
            f"tls_mode is {target.tls_mode.value}"
        )
    nonce = greeting.auth_data
    plugin, response = _first_response(greeting.auth_plugin, password, nonce, tls)
    hr = HandshakeResponse41(
        capabilities=caps,
        username=target.username,
        auth_response=response,
        database=database,
        auth_plugin=plugin,
        attributes=attributes if caps & Capability.CONNECT_ATTRS else {},
        charset=charset,
    )
    writer.write(encode_packet(hr.encode(), seq))
    while True:
        pkt = await read_packet(reader)
        seq = pkt.seq + 1
        p = pkt.payload
        head = p[:1]
        if head == b"\x00":
            ok = OKPacket.parse(p)
            return UpstreamConnection(
                reader=reader, writer=writer, greeting=greeting, capabilities=caps, status=ok.status, tls=tls
            )
        if head == b"\xff":
            err = ERRPacket.parse(p)
            if err.error_code == 1049:  # ER_BAD_DB_ERROR: the client asked for a missing database
                raise UpstreamError(
                    f"the target of connection {target.name} has no database '{database}' "
                    f"({err.message}, error {err.error_code})"
                )
            raise UpstreamError(
                f"the target of connection {target.name} refused dbward's login as {target.username}: "
                f"{err.message} (error {err.error_code}); check the connection's vaulted credential"
            )
        if head == b"\xfe":
            switch = AuthSwitchRequest.parse(p)
            nonce = switch.data or nonce
            plugin, response = _first_response(switch.plugin, password, nonce, tls)
            if plugin != switch.plugin:
                raise UpstreamError(
                    f"the target of connection {target.name} asks for authentication plugin "
                    f"{switch.plugin}, which dbward does not support upstream"
                )
            writer.write(encode_packet(response, seq))
            continue
        if head == b"\x01":
            data = p[1:]
            if plugin == auth.CACHING_SHA2 and data == auth.FAST_AUTH_SUCCESS:
                continue
            if plugin == auth.CACHING_SHA2 and data == auth.PERFORM_FULL_AUTHENTICATION:
                if tls:
                    writer.write(encode_packet(password + b"\x00", seq))
                else:
                    writer.write(encode_packet(auth.REQUEST_PUBLIC_KEY, seq))
                continue
            if plugin in (auth.CACHING_SHA2, auth.SHA256) and data.startswith(b"-----BEGIN"):
                writer.write(encode_packet(auth.rsa_encrypt_password(password, nonce, data), seq))
                continue
            raise UpstreamError(
                f"the target of connection {target.name} sent an unexpected authentication step for {plugin}"
            )
        raise UpstreamError(f"the target of connection {target.name} sent an unexpected packet during login")


async def kill_query(target: Target, password: str, thread_id: int, timeout: float, *, whole: bool) -> None:
    """Run ``KILL QUERY <thread_id>`` (or ``KILL CONNECTION``) on a separate connection."""
    up = await connect_upstream(
        target,
        password,
        client_capabilities=int(Capability.LONG_PASSWORD | Capability.TRANSACTIONS),
        database=None,
        attributes={},
        charset=greeting_charset_default(),
        timeout=timeout,
        allow_local_infile=False,
    )
    try:
        sql = f"KILL {'CONNECTION' if whole else 'QUERY'} {int(thread_id)}"
        up.writer.write(encode_packet(ComQuery(query=sql.encode()).encode(), 0))
        async with asyncio.timeout(timeout):
            pkt = await read_packet(up.reader)
        if pkt.payload[:1] == b"\xff":
            err = ERRPacket.parse(pkt.payload)
            if err.error_code != 1094:  # ER_NO_SUCH_THREAD: it already ended
                log.warning("KILL on target %s failed: %s", target.name, err.message)
        up.writer.write(encode_packet(bytes((Command.QUIT,)), 0))
    finally:
        up.close()


def greeting_charset_default() -> int:
    return 45
