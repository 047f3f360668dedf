"""A bare TCP relay in Python, the benchmark's reference for what Python itself costs.

The same event loop (uvloop) and the same kind of asyncio Protocols as dbward's engines, but
nothing else: no protocol parsing, no decision, no journal, no store copy. Beside pgbouncer
(C, protocol aware) and socat (C, bytes only) it shows how much of dbward's cost per
statement is the language and how much is the governance work. Not part of dbward.

Usage: python bench/pyrelay.py LISTEN_PORT TARGET_PORT (both on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import cast

import uvloop


class _Side(asyncio.Protocol):
    """One connection of a pair: what it receives is written to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # received before the peer connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, though not by class
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # flow control: a peer that cannot take more stops this side's reading
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def serve(listen_port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()  # referenced until done

    def accepted() -> _Side:
        client = _Side()

        async def connect() -> None:
            try:
                _, upstream = await loop.create_connection(_Side, "127.0.0.1", target_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            upstream.peer, client.peer = client, upstream
            for side in (client, upstream):  # what either received before they were paired
                assert side.peer is not None and side.peer.transport is not None
                for data in side.early:
                    side.peer.transport.write(data)
                side.early.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    server = await loop.create_server(accepted, "127.0.0.1", listen_port, reuse_address=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
