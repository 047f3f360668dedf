"""One dbward node: wires settings, store, audit journal, gate and proxy listeners together.

This is the composition root that ``dbward up`` / ``dbward serve`` run and that tests use to
start a real node. Nothing here decides anything; it only builds and connects the parts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from dbward.audit.journal import AuditJournal, FileJournal
from dbward.config import Settings
from dbward.domain import Target
from dbward.policy.decider import GrantDecider, PolicyDecider
from dbward.proxy.engine import ENGINES, EngineDeps, SessionRegistry
from dbward.proxy.gate import Gate
from dbward.proxy.server import Listener, ProxyServer
from dbward.proxy.tls import server_context
from dbward.store.crypto import SecretBox, load_key
from dbward.store.db import Store
from dbward.store.directory import StoreDirectory

log = logging.getLogger(__name__)


def load_engines() -> None:
    """Import the engine modules so they register themselves (no work at import time elsewhere)."""
    import importlib

    for mod in ("dbward.proxy.mysql", "dbward.proxy.postgres"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


@dataclass(kw_only=True)
class Node:
    settings: Settings
    store: Store
    journal: AuditJournal
    policy: PolicyDecider | None = None
    name: str = field(default_factory=socket.gethostname)
    directory: StoreDirectory = field(init=False)
    policy_decider: PolicyDecider = field(init=False)
    gate: Gate = field(init=False)
    sessions: SessionRegistry = field(init=False)
    deps: EngineDeps = field(init=False)
    proxy: ProxyServer = field(init=False)

    def __post_init__(self) -> None:
        self.directory = StoreDirectory(self.store)
        self.policy_decider = self.policy or GrantDecider(self.directory)
        self.gate = Gate(
            self.policy_decider,
            self.journal,
            fail_closed=self.settings.audit.fail_closed,
        )
        self.sessions = SessionRegistry()
        p = self.settings.proxy
        self.deps = EngineDeps(
            settings=self.settings,
            auth=self.directory,
            directory=self.directory,
            gate=self.gate,
            sessions=self.sessions,
            server_tls=server_context(p.tls_cert, p.tls_key, self.settings.data_dir),
            node=self.name,
        )
        self.proxy = ProxyServer(self.deps)

    @classmethod
    def from_settings(cls, settings: Settings) -> Node:
        box = SecretBox(load_key(settings.encryption_key, settings.key_file))
        store = Store.open(settings.resolved_store_url, box)
        journal = FileJournal(settings.journal_path, fsync=settings.audit.journal_fsync)
        return cls(settings=settings, store=store, journal=journal)

    async def listen_for(self, target: Target, port: int | None = None) -> Listener:
        """Open the per-connection listener of ``target`` (its listen_port, or ``port``)."""
        load_engines()
        listen_port = port if port is not None else (target.listen_port or 0)
        return await self.proxy.add_listener(
            target.engine.value, self.settings.proxy.listen_host, listen_port, target
        )

    async def start_proxies(self) -> list[Listener]:
        """Open a listener for every connection that has a listen_port, plus the shared ports."""
        load_engines()
        opened: list[Listener] = []
        for target in await self.directory.all_targets():
            if target.listen_port and target.engine.value in ENGINES:
                opened.append(await self.listen_for(target))
        p = self.settings.proxy
        for protocol, port in (("mysql", p.mysql_port), ("postgres", p.postgres_port)):
            if port and protocol in ENGINES:
                opened.append(await self.proxy.add_listener(protocol, p.listen_host, port, None))
        return opened

    async def stop(self, drain_timeout: float = 10.0) -> None:
        await self.proxy.drain(drain_timeout)
        await self.journal.close()
        await self.store.close()

    async def run_forever(self) -> None:
        await self.start_proxies()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
