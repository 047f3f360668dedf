"""The audit shipper: follows the journal into the store and the SIEM forwarders.

Counterpart of ``audit/journal.py`` (which writes the file) and ``audit/forward.py`` (the
dispatcher and forwarders it runs). With ``audit.forwarding: process`` (the default) it runs in
a child process of the node, ``python -m dbward.audit.ship``: copying every event into the
store costs about as much CPU as relaying the statement itself, and in the node's process that
work would compete with the proxy's event loop for the GIL. With ``inline`` the same
dispatcher runs in the node's loop (tests, one-core machines).

The parent hands the child its settings as one JSON line on stdin and keeps the pipe open.
The child stops when the pipe closes: at the parent's shutdown, or when the parent dies (even
by SIGKILL), so no shipper outlives its node. Before it stops it delivers what the journal
holds, for a few seconds at most; what is left is delivered at the next start, from the
forwarders' cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from dbward.audit.forward import Cursor, Dispatcher, Forwarder, build_forwarder
from dbward.audit.journal import chain_id_for, read_tail
from dbward.audit.store import StoreForwarder
from dbward.config import Settings
from dbward.heap import freeze_startup_heap
from dbward.store.db import Store

log = logging.getLogger(__name__)

#: how long a stopping shipper keeps delivering what the journal already holds
DRAIN_SECONDS = 5.0


def cursor_dir(settings: Settings) -> Path:
    return settings.data_dir / "audit" / "cursors"


def build_dispatcher(settings: Settings, store: Store, journal_path: Path, chain: str) -> Dispatcher | None:
    """The dispatcher for the configured forwarders (the store copy first); None when none is on."""
    forwarders: list[tuple[Forwarder, int]] = []
    if settings.audit.store_events:
        forwarders.append((StoreForwarder(store), 2000))
    for cfg in settings.audit.forwarders:
        if cfg.enabled:
            forwarders.append((build_forwarder(cfg), cfg.batch_size))
    if not forwarders:
        return None
    return Dispatcher(journal_path, chain, forwarders, cursor_dir(settings), linger=1.0)


def forwarder_names(settings: Settings) -> list[str]:
    names = ["store"] if settings.audit.store_events else []
    return names + [f.name for f in settings.audit.forwarders if f.enabled]


class ShipperProcess:
    """The parent's handle on a shipper child process."""

    def __init__(self, settings: Settings, journal_path: Path) -> None:
        self.settings = settings
        self.journal_path = journal_path
        self.chain = chain_id_for(journal_path)
        self.names = forwarder_names(settings)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dbward.audit.ship",
            stdin=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.settings.model_dump_json().encode() + b"\n")
        await self.proc.stdin.drain()

    def delivered(self) -> dict[str, int]:
        """The last seq each forwarder delivered, from its cursor file."""
        return {n: Cursor(cursor_dir(self.settings) / f"{n}.json").load(self.chain) for n in self.names}

    async def wait_delivered(self, seq: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while any(v < seq for v in self.delivered().values()):
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"the audit shipper exited with status {self.proc.returncode}")
                await asyncio.sleep(0.05)

    async def stop(self, timeout: float = DRAIN_SECONDS + 5) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            log.warning("the audit shipper did not stop in %.0f s; killing it", timeout)
            proc.kill()
            await proc.wait()
        self.proc = None


def journal_end(path: Path) -> int:
    """The seq of the journal's last complete record (0 when it is empty or missing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        tail, _ = read_tail(fd, size)
    finally:
        os.close(fd)
    lines = [x for x in tail.split(b"\n")[:-1] if x.strip()]  # the part after the last newline is unfinished
    return int(json.loads(lines[-1]).get("seq", 0)) if lines else 0


async def run(settings: Settings, stdin_closed: asyncio.Event) -> None:
    from dbward.store.crypto import SecretBox, load_key

    store = Store.open(
        settings.resolved_store_url, SecretBox(load_key(settings.encryption_key, settings.key_file))
    )
    path = settings.journal_path
    dispatcher = build_dispatcher(settings, store, path, chain_id_for(path))
    try:
        if dispatcher is None:
            await stdin_closed.wait()
            return
        dispatcher.start()
        freeze_startup_heap("audit shipper")
        await stdin_closed.wait()
        end = journal_end(path)
        try:
            await dispatcher.wait_delivered(end, timeout=DRAIN_SECONDS)
        except TimeoutError:
            log.warning(
                "audit events after seq %s were not forwarded before shutdown; they will be on restart", end
            )
        await dispatcher.stop()
    finally:
        await store.close()


async def watch_stdin(closed: asyncio.Event) -> None:
    """Set ``closed`` when this child process's stdin (its parent's pipe) reaches its end."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    closed.set()


async def _main() -> None:
    line = await asyncio.to_thread(sys.stdin.buffer.readline)
    if not line:
        return  # the parent went away before handing over its settings
    data: dict[str, Any] = json.loads(line)
    settings = Settings(**data)
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    closed = asyncio.Event()
    watcher = asyncio.create_task(watch_stdin(closed), name="audit-shipper-stdin")
    try:
        await run(settings, closed)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def main() -> None:
    started = time.monotonic()
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:  # the terminal's Ctrl-C reaches the whole process group
        pass
    log.debug("audit shipper %s ran %.1f s", os.getpid(), time.monotonic() - started)


if __name__ == "__main__":
    main()
