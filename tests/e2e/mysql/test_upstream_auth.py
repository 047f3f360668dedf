"""dbward's login to a MySQL 8-style target with caching_sha2_password.

MariaDB on the test machines has no caching_sha2_password, so this is the one place with a
small fake *server*: a blocking-socket thread that speaks the server side of the handshake
by hand (https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html),
written independently of dbward's codec. dbward's real upstream code logs in to it.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dbward.domain import EngineType, Target, TlsMode
from dbward.errors import UpstreamError
from dbward.proxy.mysql_upstream import connect_upstream
from dbward.proxy.tls import generate_self_signed

PASSWORD = b"s3cret-upstream"
NONCE = b"abcdefghij0123456789"
NONCE2 = b"ZYXWVUTSRQponmlkjihg"

CLIENT_LONG_PASSWORD = 1
CLIENT_CONNECT_WITH_DB = 8
CLIENT_PROTOCOL_41 = 512
CLIENT_SSL = 2048
CLIENT_SECURE_CONNECTION = 32768
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_PLUGIN_AUTH_LENENC = 1 << 21
CLIENT_DEPRECATE_EOF = 1 << 24


def sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    p1 = hashlib.sha256(password).digest()
    mask = hashlib.sha256(hashlib.sha256(p1).digest() + nonce).digest()
    return bytes(a ^ b for a, b in zip(p1, mask, strict=True))


@dataclass
class FakeMySQL8:
    """mode: fast | full | switch; tls: offer and accept TLS."""

    mode: str
    tls_ctx: ssl.SSLContext | None = None
    steps: list[str] = field(default_factory=list)
    database: bytes | None = None

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                self._session(conn)
            except Exception as exc:  # the test asserts on steps; record what broke
                self.steps.append(f"fake server error: {exc!r}")

    @staticmethod
    def _send(conn: socket.socket | ssl.SSLSocket, payload: bytes, seq: int) -> None:
        conn.sendall(struct.pack("<I", len(payload))[:3] + bytes((seq,)) + payload)

    @staticmethod
    def _recv(conn: socket.socket | ssl.SSLSocket) -> tuple[int, bytes]:
        def exact(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError("client closed")
                buf += chunk
            return buf

        head = exact(4)
        length = int.from_bytes(head[:3], "little")
        return head[3], exact(length)

    def _session(self, raw: socket.socket) -> None:
        conn: socket.socket | ssl.SSLSocket = raw
        caps = (
            CLIENT_LONG_PASSWORD
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC
            | CLIENT_DEPRECATE_EOF
            | (CLIENT_SSL if self.tls_ctx else 0)
        )
        plugin = b"mysql_native_password" if self.mode == "switch" else b"caching_sha2_password"
        greeting = (
            b"\x0a8.4.0-fake\x00"
            + struct.pack("<I", 4242)
            + NONCE[:8]
            + b"\x00"
            + struct.pack("<H", caps & 0xFFFF)
            + b"\xff"
            + struct.pack("<H", 2)
            + struct.pack("<H", caps >> 16)
            + bytes((21,))
            + b"\x00" * 10
            + NONCE[8:]
            + b"\x00"
            + plugin
            + b"\x00"
        )
        self._send(conn, greeting, 0)
        seq, pkt = self._recv(conn)
        if len(pkt) == 32 and int.from_bytes(pkt[:4], "little") & CLIENT_SSL:
            assert self.tls_ctx is not None
            conn = self.tls_ctx.wrap_socket(raw, server_side=True)
            self.steps.append("tls")
            seq, pkt = self._recv(conn)
        client_caps = int.from_bytes(pkt[:4], "little")
        pos = 32
        end = pkt.index(b"\x00", pos)
        user = pkt[pos:end]
        pos = end + 1
        n = pkt[pos]
        response = pkt[pos + 1 : pos + 1 + n]
        pos += 1 + n
        if client_caps & CLIENT_CONNECT_WITH_DB:
            end = pkt.index(b"\x00", pos)
            self.database = pkt[pos:end]
            pos = end + 1
        client_plugin = pkt[pos : pkt.index(b"\x00", pos)]
        self.steps.append(f"login {user.decode()} with {client_plugin.decode()}")
        nonce = NONCE
        if self.mode == "switch":
            self._send(conn, b"\xfecaching_sha2_password\x00" + NONCE2 + b"\x00", seq + 1)
            seq, response = self._recv(conn)
            nonce = NONCE2
            self.steps.append("switched")
        if self.mode in ("fast", "switch"):
            if response != sha2_scramble(PASSWORD, nonce):
                self._send(conn, b"\xff\x15\x04#28000Access denied for user", seq + 1)
                self.steps.append("denied")
                return
            self.steps.append("fast ok")
            self._send(conn, b"\x01\x03", seq + 1)
            self._send(conn, b"\x00\x00\x00\x02\x00\x00\x00", seq + 2)
        else:
            self._send(conn, b"\x01\x04", seq + 1)
            seq, pkt = self._recv(conn)
            if isinstance(conn, ssl.SSLSocket):
                password = pkt.rstrip(b"\x00")
                self.steps.append("cleartext over tls")
            else:
                assert pkt == b"\x02", pkt
                pem = self.key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                self._send(conn, b"\x01" + pem, seq + 1)
                seq, sealed = self._recv(conn)
                oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
                plain = self.key.decrypt(sealed, oaep)
                password = bytes(b ^ nonce[i % 20] for i, b in enumerate(plain)).rstrip(b"\x00")
                self.steps.append("rsa")
            if password != PASSWORD:
                self._send(conn, b"\xff\x15\x04#28000Access denied for user", seq + 1)
                self.steps.append("denied")
                return
            self.steps.append("full ok")
            self._send(conn, b"\x00\x00\x00\x02\x00\x00\x00", seq + 1)
        # hold the connection until dbward hangs up
        try:
            conn.recv(1)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server_tls(tmp_path: Path) -> ssl.SSLContext:
    generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


@pytest.fixture
def fakes() -> Iterator[list[FakeMySQL8]]:
    made: list[FakeMySQL8] = []
    yield made
    for f in made:
        f.close()


def target(port: int, tls_mode: TlsMode = TlsMode.DISABLE) -> Target:
    return Target(
        id=90,
        name="mysql8",
        engine=EngineType.MYSQL,
        host="127.0.0.1",
        port=port,
        username="dbward_upstream",
        tls_mode=tls_mode,
    )


async def login(
    fake: FakeMySQL8, password: bytes = PASSWORD, tls_mode: TlsMode = TlsMode.DISABLE, db: str | None = None
) -> None:
    up = await connect_upstream(
        target(fake.port, tls_mode),
        password.decode(),
        client_capabilities=CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF | CLIENT_SECURE_CONNECTION,
        database=db,
        attributes={},
        charset=45,
        timeout=10,
        allow_local_infile=False,
    )
    assert up.thread_id == 4242 and up.greeting.server_version == "8.4.0-fake"
    up.close()


@pytest.mark.parametrize(
    ("mode", "tls", "expected"),
    [
        ("fast", False, ["login dbward_upstream with caching_sha2_password", "fast ok"]),
        ("full", False, ["login dbward_upstream with caching_sha2_password", "rsa", "full ok"]),
        (
            "full",
            True,
            ["tls", "login dbward_upstream with caching_sha2_password", "cleartext over tls", "full ok"],
        ),
        ("switch", False, ["login dbward_upstream with mysql_native_password", "switched", "fast ok"]),
    ],
)
async def test_caching_sha2_upstream(
    mode: str, tls: bool, expected: list[str], fakes: list[FakeMySQL8], server_tls: ssl.SSLContext
) -> None:
    fake = FakeMySQL8(mode, tls_ctx=server_tls if tls else None)
    fakes.append(fake)
    await login(
        fake, tls_mode=TlsMode.REQUIRE if tls else TlsMode.DISABLE, db="app" if mode == "fast" else None
    )
    assert fake.steps == expected
    assert fake.database == (b"app" if mode == "fast" else None)


async def test_wrong_upstream_password_is_a_clear_error(fakes: list[FakeMySQL8]) -> None:
    fake = FakeMySQL8("full")
    fakes.append(fake)
    with pytest.raises(UpstreamError, match=r"refused dbward's login as dbward_upstream.*vaulted credential"):
        await login(fake, password=b"not-it")


async def test_tls_required_but_not_offered(fakes: list[FakeMySQL8]) -> None:
    fake = FakeMySQL8("fast")
    fakes.append(fake)
    with pytest.raises(UpstreamError, match=r"does not offer TLS.*tls_mode is require"):
        await login(fake, tls_mode=TlsMode.REQUIRE)
