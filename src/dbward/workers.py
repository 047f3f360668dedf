"""Worker processes: how one dbward node uses more than one CPU core.

Python runs one thread of bytecode at a time, so a node's proxy is bound to one core. With
``proxy.workers`` above 1, ``dbward up`` (the *primary* process, index 0) opens its listeners,
then starts that many minus one *worker* processes (``python -m dbward.workers``) and hands
each a copy of every shared listening socket. The kernel gives each new client connection to
whichever process accepts it first, so an idle process takes the next one.

A worker is a node without the parts that must run once: it has its own store connection,
policy cache, masking catalogs and gate, appends to the same audit journal (the journal
serialises appends from several processes with a file lock, so there stays one hash chain),
and shares its live sessions through the store like any node (``proxy/cluster.py``). The API
and console, the audit shipper, approval notifications and expiry and the executor of approved
requests run in the primary only; the console's SQL editor and the executor connect to a
private listener of the primary (``proxy/loopback.py``), since only the primary knows their
one-login tokens.

A PostgreSQL CancelRequest or a MySQL ``KILL <id>`` arrives on a new connection, which may be
accepted by another process than the session's. The numbers that name sessions carry their
process's index (``number % SLOTS``), and each process listens on an abstract Unix socket
(``\\0dbward-worker-<node key>-<index>``) for such requests from its peers: one JSON line in,
one JSON line out.

A worker stops when its stdin closes (the primary stops, or dies): it closes its listeners,
gives its live sessions the same drain time as the primary, and exits. The primary restarts a
worker that exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbward.config import Settings
from dbward.proxy.engine import WORKER_SLOTS as SLOTS

if TYPE_CHECKING:
    from dbward.proxy.server import Listener, ProxyServer

log = logging.getLogger(__name__)

#: how long a peer has to answer a cancel or kill request
PEER_TIMEOUT = 5.0
#: a worker that exits on its own is started again after this many seconds
RESTART_DELAY = 1.0
#: how long a worker's live sessions get to finish when it is told to stop
DRAIN_SECONDS = 10.0


def control_address(node_key: str, index: int) -> str:
    """The abstract Unix socket of process ``index`` of the node whose key is ``node_key``."""
    return f"\0dbward-worker-{node_key}-{index}"


class WorkerControl:
    """One process's side of the node's worker group (implements ``engine.WorkerPeers``)."""

    def __init__(self, node_key: str, index: int, proxy: ProxyServer) -> None:
        self.node_key = node_key
        self.index = index
        self.proxy = proxy
        self._server: asyncio.AbstractServer | None = None

    def stamp(self, number: int) -> int:
        stamped = number - number % SLOTS + self.index
        return stamped if stamped > 0 else stamped + SLOTS

    def owner(self, number: int) -> int:
        return number % SLOTS

    # ------------------------------------------------------------------ serving peers
    async def start(self) -> None:
        # uvloop takes no abstract socket address as a path: bind the socket here
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(control_address(self.node_key, self.index))
        except OSError:
            sock.close()
            raise
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), PEER_TIMEOUT)
            request: dict[str, Any] = json.loads(line)
            answer = await self._answer(request)
        except Exception as exc:  # a bad request from a peer ends that request only
            log.warning("a request from another worker process failed: %s", exc)
            answer = {"error": f"the request could not be handled ({exc.__class__.__name__})"}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "cancel":
            engine = self.proxy.engine("postgres")
            await engine.cancel_local(int(request["pid"]), bytes.fromhex(request["secret"]))  # type: ignore[attr-defined]
            return {"ok": True}
        if op == "kill":
            engine = self.proxy.engine("mysql")
            error = await engine.kill_local(  # type: ignore[attr-defined]
                int(request["connection_id"]), str(request["user"]), whole=bool(request["whole"])
            )
            return {"ok": error is None, "error": error}
        return {"error": f"unknown request {op!r}"}

    # ------------------------------------------------------------------ asking peers
    async def _ask(self, owner: int, request: dict[str, Any]) -> dict[str, Any]:
        async with asyncio.timeout(PEER_TIMEOUT):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, control_address(self.node_key, owner))
            except OSError:
                sock.close()
                raise
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            try:
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
        answer: dict[str, Any] = json.loads(line) if line else {"error": "no answer"}
        return answer

    async def cancel(self, owner: int, pid: int, secret: bytes) -> None:
        try:
            await self._ask(owner, {"op": "cancel", "pid": pid, "secret": secret.hex()})
        except (OSError, TimeoutError, ValueError) as exc:
            log.info("cancel request for worker process %s could not be handed over: %s", owner, exc)

    async def kill(self, owner: int, connection_id: int, user: str, *, whole: bool) -> str | None:
        try:
            answer = await self._ask(
                owner, {"op": "kill", "connection_id": connection_id, "user": user, "whole": whole}
            )
        except (OSError, TimeoutError, ValueError):
            return (
                f"connection {connection_id} belongs to worker process {owner} of this dbward node, "
                "which did not answer"
            )
        if answer.get("ok"):
            return None
        return str(answer.get("error") or "the worker process refused")


# ---------------------------------------------------------------------- the primary's side
@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None
    started: float = 0.0


@dataclass
class WorkerPool:
    """The primary's handle on its worker processes."""

    settings: Settings
    node_name: str
    node_key: str
    listeners: list[Listener]
    count: int
    _workers: list[_Worker] = field(default_factory=list)
    _stopping: bool = False

    async def start(self) -> None:
        for index in range(1, self.count):
            worker = _Worker(index=index)
            self._workers.append(worker)
            await self._spawn(worker)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.returncode is None]

    async def _spawn(self, worker: _Worker) -> None:
        shared = [(lst, lst.sock) for lst in self.listeners if lst.shared and lst.sock is not None]
        fds = [sock.fileno() for _, sock in shared]
        spec = {
            "settings": json.loads(self.settings.model_dump_json()),
            "index": worker.index,
            "node": self.node_name,
            "key": self.node_key,
            "listeners": [
                {
                    "fd": sock.fileno(),
                    "protocol": lst.protocol,
                    "host": lst.host,
                    "port": lst.port,
                    "target": lst.target.name if lst.target is not None else None,
                }
                for lst, sock in shared
            ],
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dbward.workers", stdin=asyncio.subprocess.PIPE, pass_fds=fds
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode() + b"\n")
        await proc.stdin.drain()
        worker.proc, worker.started = proc, time.monotonic()
        worker.watcher = asyncio.create_task(self._watch(worker), name=f"worker-{worker.index}-watch")

    async def _watch(self, worker: _Worker) -> None:
        assert worker.proc is not None
        code = await worker.proc.wait()
        if self._stopping:
            return
        log.error(
            "proxy worker process %s (pid %s) exited with status %s; starting it again in %.0f s "
            "(its sessions were lost)",
            worker.index,
            worker.proc.pid,
            code,
            RESTART_DELAY,
        )
        await asyncio.sleep(RESTART_DELAY)
        if not self._stopping:
            await self._spawn(worker)

    async def stop(self, timeout: float = DRAIN_SECONDS + 5) -> None:
        self._stopping = True
        for w in self._workers:
            if w.watcher is not None:
                w.watcher.cancel()
            if w.proc is not None and w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in self._workers:
            if w.proc is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await w.proc.wait()
            except TimeoutError:
                log.warning("proxy worker process %s did not stop in %.0f s; killing it", w.index, timeout)
                w.proc.kill()
                await w.proc.wait()
        self._workers.clear()


def new_node_key() -> str:
    """A key unique to one running node (its worker processes' control sockets carry it)."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------- the worker's side
async def serve_worker(spec: dict[str, Any]) -> None:
    from dbward.audit.ship import watch_stdin
    from dbward.heap import freeze_startup_heap
    from dbward.node import Node, load_engines

    settings = Settings(**spec["settings"])
    index = int(spec["index"])
    node = Node.from_settings(settings, name=f"{spec['node']}/w{index}")
    control = WorkerControl(str(spec["key"]), index, node.proxy)
    node.deps.workers = control
    closed = asyncio.Event()
    watcher = asyncio.create_task(watch_stdin(closed), name="worker-stdin")
    try:
        load_engines()
        await control.start()
        for item in spec["listeners"]:
            sock = socket.socket(fileno=int(item["fd"]))
            target = None
            if item["target"] is not None:
                target = await node.directory.by_name(item["target"])
                if target is None:
                    log.warning("connection %s is gone; worker %s does not serve it", item["target"], index)
                    sock.close()
                    continue
            node.proxy.adopt_listener(item["protocol"], item["host"], int(item["port"]), target, sock)
        node.start_cluster()
        freeze_startup_heap(f"proxy worker {index}")
        await closed.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await control.stop()
        await node.stop(drain_timeout=DRAIN_SECONDS)


def main() -> None:
    line = sys.stdin.buffer.readline()
    if not line:
        return  # the primary went away before handing over the listeners
    spec: dict[str, Any] = json.loads(line)
    settings = spec["settings"]
    logging.basicConfig(
        level=settings.get("log_level", "INFO"),
        format=f"%(asctime)s %(levelname)s worker {spec['index']} %(name)s: %(message)s",
    )
    # Ctrl-C in a terminal reaches the whole process group; the primary decides when workers
    # stop (it closes their stdin), so that sessions drain in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.setswitchinterval(0.0005)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        runner = asyncio.Runner()
    with runner:
        runner.run(serve_worker(spec))


if __name__ == "__main__":
    main()
