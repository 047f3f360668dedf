"""Client sessions dbward opens to its own listeners over loopback: the console's SQL editor
(``web/editor.py``) and the executor of approved requests (``approvals/executor.py``).

They connect with ordinary drivers (asyncpg, PyMySQL) so that the gate, policy, masking and
audit path are the same as for any client; each first binds its socket to a local address that
the listener recognises (``proxy/server.py``'s :class:`LocalDialers`). These are the pieces both
need for that.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbward.domain import Target
    from dbward.proxy.server import ProxyServer


def loopback_host(host: str) -> str:
    """Where to reach a listener bound to ``host`` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def loopback_tls() -> ssl.SSLContext:
    """TLS to our own listener over loopback: encrypted, the node's own certificate accepted."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class DialingLoop:
    """The running event loop, except that ``create_connection`` uses a socket from ``dial``.

    Handed to ``asyncpg.connect(loop=...)`` because asyncpg has no socket factory
    (MagicStack/asyncpg#1054); every other attribute is the real loop's, so futures, tasks and
    TLS belong to the real loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, dial: Callable[[], Awaitable[socket.socket]]) -> None:
        self._loop = loop
        self._dial = dial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        **kw: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        sock = await self._dial()
        try:
            return await self._loop.create_connection(protocol_factory, sock=sock, **kw)
        except BaseException:
            sock.close()
            raise


async def endpoint_for(
    proxy: ProxyServer, target: Target, database: str | None, opened: dict[int, int]
) -> tuple[str, int, str]:
    """Host, port and database name to reach ``target`` through this node's own proxy: its
    own listener, else a shared port of its protocol (routing by ``connection/db``), else a
    loopback listener opened for it now (remembered in ``opened``, by target id).

    When the node runs worker processes, its listeners' connections may be accepted by any of
    them, and only this process knows the session's one-login token and its PROXY v2 trust;
    so those listeners are passed over and a private loopback listener is used instead."""
    protocol = target.engine.value
    db = database or target.database or ""
    ours = [lst for lst in proxy.listeners if not (lst.shared and proxy.has_workers)]
    for lst in ours:
        if lst.target is not None and lst.target.id == target.id:
            return loopback_host(lst.host), lst.bound_port, db
    for lst in ours:
        if lst.target is None and lst.protocol == protocol:
            return loopback_host(lst.host), lst.bound_port, f"{target.name}/{db}" if db else target.name
    port = opened.get(target.id)
    if port is None:
        lst = await proxy.add_listener(protocol, "127.0.0.1", 0, target, shared=False)
        port = opened[target.id] = lst.bound_port
    return "127.0.0.1", port, db
