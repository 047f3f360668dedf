"""A minimal PostgreSQL client built on dbward's own codec, for what drivers cannot send.

Drivers never send a FunctionCall, a malformed frame or a hand-made CancelRequest; this client
does, over a real socket to a real dbward node. It logs in with SCRAM-SHA-256 (scramp's client).
"""

from __future__ import annotations

import asyncio
import struct

from scramp import ScramClient

from dbward.wire.postgres import messages as m


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pid = 0
        self.secret = b""
        self.gssenc_answer = b""
        self.negotiated: m.NegotiateProtocolVersion | None = None

    @classmethod
    async def login(
        cls,
        port: int,
        user: str,
        password: str,
        database: str = "dbward_test",
        protocol: int = m.PROTOCOL_3_0,
        *,
        gssenc_first: bool = False,
        extra: dict[str, str] | None = None,
    ) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = cls(reader, writer)
        if gssenc_first:  # as libpq does with gssencmode=prefer when it has Kerberos credentials
            writer.write(m.GSSENCRequest().encode())
            c.gssenc_answer = await reader.readexactly(1)
        writer.write(
            m.StartupMessage(protocol, {"user": user, "database": database, **(extra or {})}).encode()
        )
        scram: ScramClient | None = None
        while True:
            msg = await c.recv()
            if isinstance(msg, m.Authentication):
                if msg.code == m.AUTH_SASL:
                    scram = ScramClient(["SCRAM-SHA-256"], user, password)
                    c.send(m.SASLInitialResponse("SCRAM-SHA-256", scram.get_client_first().encode()))
                elif msg.code == m.AUTH_SASL_CONTINUE and scram:
                    scram.set_server_first(msg.data.decode())
                    c.send(m.SASLResponse(scram.get_client_final().encode()))
                elif msg.code == m.AUTH_SASL_FINAL and scram:
                    scram.set_server_final(msg.data.decode())
            elif isinstance(msg, m.NegotiateProtocolVersion):
                c.negotiated = msg
            elif isinstance(msg, m.BackendKeyData):
                c.pid, c.secret = msg.pid, msg.secret
            elif isinstance(msg, m.ErrorResponse):
                raise RuntimeError(msg.message)
            elif isinstance(msg, m.ReadyForQuery):
                return c

    def send(self, *msgs: object) -> None:
        for msg in msgs:
            self.writer.write(msg.encode())  # type: ignore[attr-defined]

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self) -> m.BackendMessage | tuple[str, bytes] | None:
        try:
            hdr = await self.reader.readexactly(5)
        except asyncio.IncompleteReadError:
            return None
        t, length = struct.unpack("!cI", hdr)
        body = await self.reader.readexactly(length - 4)
        try:
            return m.decode_backend(t[0], body)
        except m.WireError:
            return (t.decode(), body)

    async def until_ready(self) -> list[object]:
        out: list[object] = []
        while True:
            msg = await asyncio.wait_for(self.recv(), 30)
            out.append(msg)
            if msg is None or isinstance(msg, m.ReadyForQuery):
                return out

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def send_cancel(port: int, pid: int, secret: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(m.CancelRequest(pid, secret).encode())
    await writer.drain()
    await reader.read(1)
    writer.close()
