"""Listeners: accept, learn the real client address (PROXY protocol), hand off to an engine.

One listener per connection that has a ``listen_port`` (as QueryPie does), plus one shared
port per protocol where the client picks the connection by database name ``connection/db``.
A PROXY protocol v1/v2 header is required from peers in ``proxy.trusted_proxies`` and never
accepted from anyone else. Counterpart: ``proxy/engine.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import time
from dataclasses import dataclass, field, replace

from dbward.domain import ClientAddress, Target
from dbward.proxy.engine import ENGINES, ClientConnection, Engine, EngineDeps
from dbward.wire import proxy_protocol

log = logging.getLogger(__name__)

PROXY_HEADER_TIMEOUT = 5.0


@dataclass(kw_only=True)
class Listener:
    protocol: str
    host: str
    port: int
    target: Target | None
    sock: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    #: this process's claim on the port (see :func:`bind_listening_socket`)
    claim: socket.socket | None = None
    #: accepted on by the node's worker processes too (see ``node.py``)
    shared: bool = True

    @property
    def bound_port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        for s in (self.sock, self.claim):
            if s is not None:
                s.close()


class PortTaken(OSError):
    """Another dbward process already listens on the port (both would bind with SO_REUSEPORT)."""


def bind_listening_socket(host: str, port: int, what: str) -> tuple[socket.socket, socket.socket | None]:
    """A bound TCP socket for ``what`` on host:port, and this process's claim on that port.

    Listeners set SO_REUSEPORT (so `dbward doctor` recognises a port held by dbward, and so
    worker processes of one node could share it); but then a second, unrelated dbward on the
    same port binds too, and the kernel silently splits the clients between the two, which
    may have different data directories and keys. Each process therefore also claims the
    port with an abstract-namespace Unix socket named after it (Linux; freed by the kernel
    when the process dies); a second process finds the name taken and refuses to start.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port} for {what}: {exc.strerror}") from exc
    claim: socket.socket | None = None
    if sys.platform == "linux":
        bound = sock.getsockname()[1]
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind(f"\0dbward-listen/{host}/{bound}")
        except OSError as exc:
            claim.close()
            sock.close()
            raise PortTaken(
                exc.errno,
                f"cannot listen on {host}:{bound} for {what}: another dbward process already listens "
                "there (stop it, or give this one another port)",
            ) from exc
    return sock, claim


class LocalDialers:
    """Client sockets this process opened to its own listeners (the console's SQL editor).

    The editor binds its socket to a loopback address first, registers that exact local
    address here, then connects and sends a PROXY v2 header with the browser's address. The
    listener requires and believes that header only from a peer address registered here, once:
    the kernel lets no other socket, in this process or another, hold that local address while
    ours is bound (no SO_REUSEADDR), so no outside program can borrow the trust, and
    ``proxy.trusted_proxies`` stays as narrow as the administrator set it.
    """

    #: a registration the listener has not seen within this time is void (its socket failed)
    TTL = 30.0

    def __init__(self) -> None:
        # local (host, port) -> (listener port, when registered)
        self._expected: dict[tuple[str, int], tuple[int, float]] = {}

    def expect(self, local: tuple[str, int], listener_port: int) -> None:
        now = time.monotonic()
        for key in [k for k, (_, at) in self._expected.items() if now - at > self.TTL]:
            del self._expected[key]
        self._expected[local] = (listener_port, now)

    def forget(self, local: tuple[str, int]) -> None:
        self._expected.pop(local, None)

    def claim(self, peer: tuple[str, int], listener_port: int) -> bool:
        found = self._expected.get(peer)
        if found is None or found[0] != listener_port:
            return False
        del self._expected[peer]
        return time.monotonic() - found[1] <= self.TTL

    def __len__(self) -> int:
        return len(self._expected)


@dataclass
class ProxyServer:
    deps: EngineDeps
    listeners: list[Listener] = field(default_factory=list)
    local_dialers: LocalDialers = field(default_factory=LocalDialers)
    #: the node runs worker processes that accept on its shared listeners too (``node.py``)
    has_workers: bool = False
    _conn_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _engines: dict[str, Engine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._trusted = [
            ipaddress.ip_network(n, strict=False) for n in self.deps.settings.proxy.trusted_proxies
        ]

    def engine(self, protocol: str) -> Engine:
        if protocol not in self._engines:
            try:
                cls = ENGINES[protocol]
            except KeyError:
                raise ValueError(f"no engine is registered for protocol {protocol!r}") from None
            self._engines[protocol] = cls()
        return self._engines[protocol]

    async def add_listener(
        self, protocol: str, host: str, port: int, target: Target | None, *, shared: bool = True
    ) -> Listener:
        """Listen on ``host:port`` for ``protocol`` (``target``: a per-connection listener).

        ``shared``: the node's worker processes accept on this socket too (``node.py``); the
        private listeners of the node's own loopback sessions are not shared."""
        self.engine(protocol)  # fail early when the engine is missing
        name = f"connection {target.name}" if target else f"the shared {protocol} port"
        sock, claim = bind_listening_socket(host, port, name)
        sock.listen(1024)
        return self.adopt_listener(protocol, host, port, target, sock, claim=claim, shared=shared)

    def adopt_listener(
        self,
        protocol: str,
        host: str,
        port: int,
        target: Target | None,
        sock: socket.socket,
        *,
        claim: socket.socket | None = None,
        shared: bool = True,
    ) -> Listener:
        """Accept on an already listening socket (a worker process's copy of its node's)."""
        self.engine(protocol)
        sock.setblocking(False)
        lst = Listener(
            protocol=protocol, host=host, port=port, target=target, sock=sock, claim=claim, shared=shared
        )
        lst.task = asyncio.create_task(self._accept_loop(lst), name=f"listener-{protocol}-{lst.bound_port}")
        self.listeners.append(lst)
        log.info(
            "listening on %s:%s for %s (%s)",
            host,
            lst.bound_port,
            target.name if target else "routing by database name",
            protocol,
        )
        return lst

    async def remove_listener(self, lst: Listener) -> None:
        if lst.task:
            lst.task.cancel()
        lst.close()
        self.listeners.remove(lst)

    async def _accept_loop(self, lst: Listener) -> None:
        loop = asyncio.get_running_loop()
        assert lst.sock is not None
        while True:
            try:
                conn, addr = await loop.sock_accept(lst.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                log.warning("accept failed on port %s: %s", lst.bound_port, exc)
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._handle(lst, conn, addr), name=f"conn-{addr[0]}:{addr[1]}")
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)

    def _is_trusted(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    async def _handle(self, lst: Listener, conn: socket.socket, addr: tuple[str, int]) -> None:
        host, port = addr[0], addr[1]
        client = ClientAddress(host=host, port=port)
        initial = b""
        try:
            if self.local_dialers.claim((host, port), lst.bound_port):
                client, initial = await asyncio.wait_for(
                    self._read_proxy_header(conn, host, port), PROXY_HEADER_TIMEOUT
                )
                if client.source != "proxy-v2":
                    raise proxy_protocol.ProxyHeaderError("the SQL editor must send a PROXY v2 address")
                client = replace(client, source="web")
            elif self._is_trusted(host):
                client, initial = await asyncio.wait_for(
                    self._read_proxy_header(conn, host, port), PROXY_HEADER_TIMEOUT
                )
            cc = ClientConnection(
                sock=conn,
                client=client,
                listener_port=lst.bound_port,
                target=lst.target,
                initial_data=initial,
            )
            await self.engine(lst.protocol).serve(cc, self.deps)
        except asyncio.CancelledError:
            raise
        except (TimeoutError, proxy_protocol.ProxyHeaderError) as exc:
            log.warning(
                "connection from load balancer %s dropped: bad or missing PROXY header (%s)",
                host,
                exc,
            )
        except Exception:
            # A bug in one session must never take the process down.
            log.exception("session from %s:%s ended with an internal error", host, port)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    async def _read_proxy_header(
        self, conn: socket.socket, peer: str, peer_port: int
    ) -> tuple[ClientAddress, bytes]:
        loop = asyncio.get_running_loop()

        async def recv_into(buf: bytearray, n: int) -> None:
            while len(buf) < n:
                chunk = await loop.sock_recv(conn, n - len(buf))
                if not chunk:
                    raise proxy_protocol.ProxyHeaderError(
                        "the load balancer closed before sending a PROXY header"
                    )
                buf += chunk

        # 16 bytes hold the whole fixed part of v2 and at most one byte past the shortest v1
        # header ("PROXY UNKNOWN\r\n"); any such byte is handed to the engine as initial data.
        buf = bytearray()
        await recv_into(buf, 16)
        if buf.startswith(proxy_protocol.V2_SIGNATURE):
            need = proxy_protocol.needed(bytes(buf))
            assert need is not None
            await recv_into(buf, need)
        elif buf.startswith(proxy_protocol.V1_PREFIX):
            while b"\r\n" not in buf:
                if len(buf) >= proxy_protocol.V1_MAX:
                    raise proxy_protocol.ProxyHeaderError("PROXY v1 header longer than 107 bytes")
                await recv_into(buf, len(buf) + 1)
        hdr = proxy_protocol.parse(bytes(buf))
        rest = bytes(buf[hdr.length :])
        if hdr.src_host is None:
            return ClientAddress(host=peer, port=peer_port, source="direct"), rest
        if hdr.version == 2:
            return ClientAddress(
                host=hdr.src_host, port=hdr.src_port or 0, source="proxy-v2", peer_host=peer
            ), rest
        return ClientAddress(
            host=hdr.src_host, port=hdr.src_port or 0, source="proxy-v1", peer_host=peer
        ), rest

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop accepting, then give live sessions ``timeout`` seconds before cancelling them."""
        for lst in list(self.listeners):
            await self.remove_listener(lst)
        if self._conn_tasks:
            _done, pending = await asyncio.wait(set(self._conn_tasks), timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
