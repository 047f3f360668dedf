"""Connecting to a PostgreSQL target: TLS per the connection's tls_mode, startup, SCRAM/md5/trust.

The engine (``proxy/postgres.py``) calls :func:`connect` after the client has authenticated
against dbward and the policy has allowed the connection; the credential used here is the
vaulted one of the connection and never reaches the client. :func:`send_cancel` forwards a
CancelRequest to the target with the target's own keys.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from dataclasses import dataclass

from scramp import ScramClient

from dbward.domain import Target, TlsMode
from dbward.errors import UpstreamError
from dbward.proxy.tls import client_context
from dbward.wire.postgres import messages as m
from dbward.wire.postgres.scram import md5_password

log = logging.getLogger(__name__)

#: StreamReader buffer limit on both legs: large enough for 256 KiB relay reads
STREAM_LIMIT = 1 << 20


class UpstreamRefused(Exception):
    """The target answered the startup with an ErrorResponse; relayed to the client intact."""

    def __init__(self, error: m.ErrorResponse) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(kw_only=True)
class Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int
    secret: bytes
    #: ParameterStatus and NoticeResponse frames of the startup, relayed to the client as they are
    startup_frames: bytes
    status: str
    tls: bool


@dataclass(frozen=True, kw_only=True)
class CancelRoute:
    """Where and with which keys a CancelRequest for one session goes."""

    host: str
    port: int
    tls_mode: TlsMode
    tls_ca: str | None
    pid: int
    secret: bytes


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def _open(
    host: str, port: int, mode: TlsMode, ca: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    reader, writer = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
    _nodelay(writer)
    ctx = client_context(mode, ca)
    if ctx is None:
        return reader, writer, False
    writer.write(m.SSLRequest().encode())
    await writer.drain()
    answer = await reader.readexactly(1)
    if answer == b"S":
        await writer.start_tls(ctx, server_hostname=host)
        return reader, writer, True
    if answer != b"N":
        writer.close()
        raise UpstreamError(f"{host}:{port} did not answer the SSLRequest like a PostgreSQL server")
    if mode is not TlsMode.PREFER:
        writer.close()
        raise UpstreamError(
            f"{host}:{port} does not accept TLS, but the connection's tls_mode is {mode.value}"
        )
    return reader, writer, False


async def _read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    hdr = await reader.readexactly(5)
    t, length = struct.unpack("!cI", hdr)
    if length < 4 or length > m.MAX_MESSAGE:
        raise UpstreamError("the target sent a message with an impossible length")
    return t[0], await reader.readexactly(length - 4)


async def connect(
    target: Target,
    password: str | None,
    database: str,
    params: dict[str, str],
    *,
    timeout: float,
) -> Upstream:
    """Connect, negotiate TLS, start up and authenticate as ``target.username``."""
    try:
        async with asyncio.timeout(timeout):
            return await _connect(target, password, database, params)
    except TimeoutError:
        raise UpstreamError(
            f"connection {target.name}: the target did not complete the login within {timeout:g} seconds "
            "(setting proxy.connect_timeout_seconds)"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamError(
            f"connection {target.name}: the certificate of {target.host}:{target.port} could not be "
            f"verified ({exc.verify_message}); tls_mode is {target.tls_mode.value}, so set the "
            "connection's tls_ca to the CA that signed it"
        ) from None
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        raise UpstreamError(
            f"connection {target.name}: dbward cannot reach the target {target.host}:{target.port} "
            f"({exc.__class__.__name__}: {exc})"
        ) from None


async def _connect(target: Target, password: str | None, database: str, params: dict[str, str]) -> Upstream:
    reader, writer, tls = await _open(target.host, target.port, target.tls_mode, target.tls_ca)
    try:
        startup = {**params, "user": target.username, "database": database}
        writer.write(m.StartupMessage(m.PROTOCOL_3_0, startup).encode())
        await writer.drain()
        scram: ScramClient | None = None
        frames = bytearray()
        pid, secret = 0, b""
        while True:
            t, body = await _read_message(reader)
            if t == ord("E"):
                err = m.decode_backend(t, body)
                assert isinstance(err, m.ErrorResponse)
                raise UpstreamRefused(err)
            if t == ord("R"):
                auth = m.decode_backend(t, body)
                assert isinstance(auth, m.Authentication)
                if auth.code == m.AUTH_OK:
                    continue
                if password is None:
                    raise UpstreamError(
                        f"connection {target.name}: the target asks for a password but none is stored "
                        "for this connection"
                    )
                if auth.code == m.AUTH_CLEARTEXT:
                    writer.write(m.PasswordMessage(password).encode())
                elif auth.code == m.AUTH_MD5:
                    writer.write(
                        m.PasswordMessage(md5_password(target.username, password, auth.data)).encode()
                    )
                elif auth.code == m.AUTH_SASL:
                    if "SCRAM-SHA-256" not in auth.mechanisms():
                        raise UpstreamError(
                            f"connection {target.name}: the target offers SASL mechanisms "
                            f"{', '.join(auth.mechanisms())}, none of which dbward supports"
                        )
                    scram = ScramClient(["SCRAM-SHA-256"], target.username, password)
                    writer.write(
                        m.SASLInitialResponse("SCRAM-SHA-256", scram.get_client_first().encode()).encode()
                    )
                elif auth.code == m.AUTH_SASL_CONTINUE and scram is not None:
                    scram.set_server_first(auth.data.decode())
                    writer.write(m.SASLResponse(scram.get_client_final().encode()).encode())
                elif auth.code == m.AUTH_SASL_FINAL and scram is not None:
                    try:
                        scram.set_server_final(auth.data.decode())
                    except Exception as exc:  # scramp raises its own ScramException
                        raise UpstreamError(
                            f"connection {target.name}: the target's SCRAM signature is wrong ({exc})"
                        ) from None
                    continue
                else:
                    raise UpstreamError(
                        f"connection {target.name}: the target asks for authentication method "
                        f"{auth.code}, which dbward does not support (use scram-sha-256, md5 or trust)"
                    )
                await writer.drain()
                continue
            if t == ord("K"):
                key = m.decode_backend(t, body)
                assert isinstance(key, m.BackendKeyData)
                pid, secret = key.pid, key.secret
            elif t == ord("Z"):
                return Upstream(
                    reader=reader,
                    writer=writer,
                    pid=pid,
                    secret=secret,
                    startup_frames=bytes(frames),
                    status=chr(body[0]) if body else "I",
                    tls=tls,
                )
            elif t == ord("v"):
                continue  # we ask for 3.0 and send no _pq_ options, so nothing to adjust
            else:
                frames += bytes([t]) + struct.pack("!I", len(body) + 4) + body
    except BaseException:
        writer.close()
        raise


async def send_cancel(route: CancelRoute, timeout: float = 5.0) -> None:
    """Forward a CancelRequest with the target's own keys; errors are logged, never raised."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer, _tls = await _open(route.host, route.port, route.tls_mode, route.tls_ca)
            writer.write(m.CancelRequest(route.pid, route.secret).encode())
            await writer.drain()
            await reader.read(1)  # the server closes the connection when done
            writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError, UpstreamError) as exc:
        log.warning("cancel request to %s:%s failed: %s", route.host, route.port, exc)
