"""Serving the API and console inside the node's own event loop (what ``dbward up`` runs).

uvicorn runs as a named task beside the proxy listeners. dbward binds the socket itself so a
taken port is a clear start-up error, and keeps its own signal handling (uvicorn's is off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from dbward.api.app import create_app
from dbward.proxy.server import bind_listening_socket

if TYPE_CHECKING:
    from dbward.node import Node

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the CLI handles SIGINT/SIGTERM
        yield


class ApiServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.server: _Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.sock: socket.socket | None = None
        self.claim: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        # As the proxy listeners: SO_REUSEPORT, and a claim that keeps a second dbward off the port
        sock, self.claim = bind_listening_socket(host, port, "the web console and API")
        sock.listen(512)
        sock.setblocking(False)
        self.sock = sock
        config = uvicorn.Config(
            create_app(self.node),
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For is honoured only from api.trusted_proxies
            lifespan="on",
        )
        self.server = _Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]), name="dbward-api")
        while not self.server.started and not self.task.done():  # noqa: ASYNC110  (uvicorn has no event for it)
            await asyncio.sleep(0.02)
        if self.task.done():
            self.task.result()
        log.info("web console and API on %s:%s", host, self.port)

    async def stop(self, timeout: float = 5.0) -> None:
        if self.server is None or self.task is None:
            return
        self.server.should_exit = True
        try:
            async with asyncio.timeout(timeout):
                await self.task
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
        for s in (self.sock, self.claim):
            if s is not None:
                s.close()
