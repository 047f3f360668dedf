"""One dbward node: wires settings, store, audit journal, gate and proxy listeners together.

This is the composition root that ``dbward up`` / ``dbward serve`` run and that tests use to
start a real node. Nothing here decides anything; it only builds and connects the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field

from dbward.approvals.executor import ScheduledExecutor
from dbward.approvals.notify import ManagedNotifier, build_notifier
from dbward.approvals.service import ApprovalService
from dbward.audit.chain import Signer, generate_signing_key, load_signing_key
from dbward.audit.forward import Dispatcher
from dbward.audit.journal import AuditJournal, FileJournal
from dbward.audit.ship import ShipperProcess, build_dispatcher, forwarder_names
from dbward.config import Settings
from dbward.domain import Target
from dbward.identity.ephemeral import EphemeralTokens
from dbward.policy.decider import PolicyDecider
from dbward.policy.evaluator import PolicyEvaluator
from dbward.proxy.catalog import TargetCatalogs
from dbward.proxy.cluster import ClusterSessions
from dbward.proxy.engine import ENGINES, EngineDeps, SessionRegistry
from dbward.proxy.gate import Gate
from dbward.proxy.server import Listener, ProxyServer
from dbward.proxy.tls import server_context
from dbward.store.crypto import SecretBox, load_key
from dbward.store.db import Store
from dbward.store.directory import StoreDirectory
from dbward.store.policy_source import StorePolicyProvider
from dbward.workers import WorkerControl, WorkerPool, new_node_key

log = logging.getLogger(__name__)

#: seconds a node with one proxy process keeps the audit journal's file lock after a write:
#: its writes of that time share one lock (a loop iteration writes once); an admin command
#: appending to the same journal waits at most that long
JOURNAL_LOCK_HOLD = 0.002


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
    #: one-login proxy tokens of the console SQL editor (see identity/ephemeral.py)
    ephemeral: EphemeralTokens = field(init=False)
    policy_decider: PolicyDecider = field(init=False)
    #: the targets' catalogs masking's lineage reads (both engines)
    catalogs: TargetCatalogs = field(init=False)
    gate: Gate = field(init=False)
    sessions: SessionRegistry = field(init=False)
    deps: EngineDeps = field(init=False)
    proxy: ProxyServer = field(init=False)
    dispatcher: Dispatcher | None = field(init=False, default=None)
    #: the audit shipper child process (``audit.forwarding: process``)
    shipper: ShipperProcess | None = field(init=False, default=None)
    _shipper_start: asyncio.Task[None] | None = field(init=False, default=None)
    #: this node's share of the cluster-wide session list (started by ``start_cluster``)
    cluster: ClusterSessions = field(init=False)
    #: approval requests: the gate's broker, the API's service (approvals/service.py)
    approvals: ApprovalService = field(init=False)
    notifier: ManagedNotifier = field(init=False)
    #: approved SQL requests run by dbward through this node's own proxy (approvals/executor.py)
    executor: ScheduledExecutor = field(init=False)
    _expiry_task: asyncio.Task[None] | None = field(init=False, default=None)
    #: this process's part in the node's worker group, and the worker processes it started
    #: (``proxy.workers`` above 1, see workers.py)
    worker_control: WorkerControl | None = field(init=False, default=None)
    workers: WorkerPool | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.ephemeral = EphemeralTokens()
        self.directory = StoreDirectory(self.store, self.ephemeral)
        self.catalogs = TargetCatalogs(self.directory, self.settings)
        self.policy_decider = self.policy or PolicyEvaluator(
            StorePolicyProvider(self.store), catalog=self.catalogs
        )
        self.notifier = build_notifier(self.settings.approvals.notifications)
        self.approvals = ApprovalService(
            self.store, self.journal, self.settings, notifier=self.notifier, node_name=self.name
        )
        self.gate = Gate(
            self.policy_decider,
            self.journal,
            fail_closed=self.settings.audit.fail_closed,
            catalogs=self.catalogs,
            approvals=self.approvals,
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
            catalogs=self.catalogs,
            masking_key=self.store.box.derive_key("masking-token"),
        )
        self.proxy = ProxyServer(self.deps)
        self.executor = ScheduledExecutor(
            self.approvals,
            proxy=self.proxy,
            tokens=self.ephemeral,
            settings=self.settings,
            node_name=self.name,
        )
        self.cluster = ClusterSessions(
            store=self.store, sessions=self.sessions, journal=self.journal, node=self.name
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, name: str | None = None) -> Node:
        box = SecretBox(load_key(settings.encryption_key, settings.key_file))
        store = Store.open(settings.resolved_store_url, box)
        key_path = settings.signing_key_path
        if key_path.exists():
            key = load_signing_key(key_path)
        else:
            log.warning("audit signing key %s is missing; generating a new one", key_path)
            key = generate_signing_key(key_path)
        name = name or socket.gethostname()
        journal = FileJournal(
            settings.journal_path,
            fsync=settings.audit.journal_fsync,
            signer=Signer(key),
            node=name,
            checkpoint_every=settings.audit.checkpoint_every,
            checkpoint_interval=settings.audit.checkpoint_interval_seconds,
            durability=settings.audit.durability,
            fsync_interval=settings.audit.fsync_interval_ms / 1000,
            # one proxy process: the journal's file lock is kept for a few ms after a write
            # (admin commands wait that long); with workers each write takes and frees it
            hold_lock=JOURNAL_LOCK_HOLD if settings.proxy.worker_count() == 1 else 0.0,
        )
        return cls(settings=settings, store=store, journal=journal, name=name)

    def start_audit_forwarding(self) -> Dispatcher | None:
        """Follow the journal into the store and the configured SIEM forwarders: in a child
        process (``audit.forwarding: process``, see audit/ship.py) or in this event loop."""
        journal = self.journal
        if not isinstance(journal, FileJournal):
            return None
        journal.open()
        if self.settings.audit.forwarding == "process":
            if forwarder_names(self.settings):
                self.shipper = ShipperProcess(self.settings, journal.path)
                self._shipper_start = asyncio.create_task(self.shipper.start(), name="audit-shipper-start")
            return None
        self.dispatcher = build_dispatcher(self.settings, self.store, journal.path, journal.chain)
        if self.dispatcher is None:
            return None
        journal.on_durable = self.dispatcher.notify
        self.dispatcher.start()
        return self.dispatcher

    def start_approvals(self) -> None:
        """Start the notifier, the task that expires due approval requests and the executor
        of scheduled ones. Every node runs them; each step is a conditional update, so two
        nodes expire (or claim) a request once."""
        self.notifier.start()
        if self._expiry_task is None:
            self._expiry_task = asyncio.create_task(self._expire_loop(), name="dbward-approval-expiry")
        self.executor.start()

    async def _expire_loop(self) -> None:
        interval = self.settings.approvals.expiry_interval_seconds
        while True:
            try:
                await self.approvals.expire_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiring approval requests failed; trying again in %s s", interval)
            await asyncio.sleep(interval)

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

    async def start_workers(self) -> int:
        """Start the worker processes ``proxy.workers`` asks for, sharing the listeners opened
        so far (call after :meth:`start_proxies`); returns how many processes serve clients."""
        count = self.settings.proxy.worker_count()
        if count <= 1:
            return 1
        self.proxy.has_workers = True
        control = WorkerControl(new_node_key(), 0, self.proxy)
        await control.start()
        self.worker_control = self.deps.workers = control
        self.workers = WorkerPool(
            settings=self.settings,
            node_name=self.name,
            node_key=control.node_key,
            listeners=list(self.proxy.listeners),
            count=count,
        )
        await self.workers.start()
        return count

    def start_cluster(self) -> None:
        """Share this node's live sessions through the store and run kills asked of it."""
        self.cluster.start()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        # the workers drain their sessions while this process drains its own
        workers = asyncio.create_task(self.workers.stop()) if self.workers is not None else None
        await self.executor.stop(drain_timeout)
        await self.proxy.drain(drain_timeout)
        if workers is not None:
            await workers
            self.workers = None
        if self.worker_control is not None:
            await self.worker_control.stop()
            self.worker_control = None
        await self.cluster.stop()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        await self.notifier.aclose()
        await self.catalogs.close()
        await self.journal.close()
        if self.dispatcher is not None:
            journal = self.journal
            if isinstance(journal, FileJournal):
                try:
                    await self.dispatcher.wait_delivered(journal.last_seq, timeout=5)
                except TimeoutError:
                    log.warning(
                        "some audit events were not forwarded before shutdown; they will be on restart"
                    )
            await self.dispatcher.stop()
        if self.shipper is not None:
            if self._shipper_start is not None:
                with contextlib.suppress(Exception):
                    await self._shipper_start
            await self.shipper.stop()  # it delivers what the journal holds, then exits
        await self.store.close()

    async def run_forever(self) -> None:
        self.start_audit_forwarding()
        self.start_approvals()
        await self.start_proxies()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
