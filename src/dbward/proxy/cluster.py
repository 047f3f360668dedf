"""Live sessions across the nodes that share a store: snapshots, heartbeats and remote kills.

Each node writes one row (``node_sessions``) with its live proxy sessions: at most once a
second when a session came or went (``SessionRegistry.version``) and every few seconds as a
heartbeat, from a background task, so the proxy's hot path never writes to the store. The
session list reads every row whose heartbeat is fresh, with this node's own sessions taken
live from memory. A kill for a session on another node becomes a row in
``session_kill_requests``; every node polls for its own requests each second, ends the
session, records the administrator's change in its own audit journal, and marks the request
done. Counterparts: ``proxy/engine.py`` (the registry), ``api/routers/ops.py`` (list, kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from dbward.audit.events import AdminChange
from dbward.audit.journal import AuditJournal
from dbward.proxy.engine import LiveSession, SessionRegistry
from dbward.store.db import Store
from dbward.store.models import NodeSessionsRow, SessionKillRequestRow

log = logging.getLogger(__name__)


def session_view(live: LiveSession, node: str, now: float | None = None) -> dict[str, Any]:
    """What the API and the console show of one live session."""
    info = live.info
    now = time.monotonic() if now is None else now
    return {
        "id": info.id,
        "node": node,
        "user": info.principal.username,
        "connection": info.target.name,
        "database": info.database,
        "protocol": live.protocol,
        "client_addr": f"{info.client.host}:{info.client.port}",
        "client_program": info.client_program,
        "started_at": info.started_at,
        "statements": live.statements,
        "busy": live.busy,
        "idle_seconds": round(now - live.last_activity, 1),
    }


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


@dataclass(frozen=True)
class KillRequest:
    id: int
    instance: str


class ClusterSessions:
    """This node's part in the cluster-wide session list (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        sessions: SessionRegistry,
        journal: AuditJournal,
        node: str,
        poll_seconds: float = 1.0,
        heartbeat_seconds: float = 5.0,
        stale_seconds: float = 15.0,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.journal = journal
        self.node = node
        # one row per process: nodes of one host (one process per core) share a host name
        self.instance = f"{node}:{os.getpid()}:{id(self):x}"
        self.poll = poll_seconds
        self.heartbeat = heartbeat_seconds
        self.stale = stale_seconds
        self._published_version = -1
        self._published_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ background task
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"cluster-sessions-{self.node}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with self.store.transaction() as s:
                await s.execute(delete(NodeSessionsRow).where(NodeSessionsRow.node == self.instance))
        except Exception:
            log.warning("could not remove node %s from the shared session list", self.node, exc_info=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("sharing live sessions through the store failed; retrying", exc_info=True)
            await asyncio.sleep(self.poll)

    async def tick(self) -> None:
        """One round: publish the snapshot if it changed or the heartbeat is due; run kills."""
        now = time.monotonic()
        changed = self.sessions.version != self._published_version
        if (changed and now - self._published_at >= self.poll) or now - self._published_at >= self.heartbeat:
            await self.publish()
        await self.run_kill_requests()

    async def publish(self) -> None:
        version = self.sessions.version
        mono = time.monotonic()
        snapshot = [
            {**session_view(live, self.node, mono), "started_at": live.info.started_at.isoformat()}
            for live in self.sessions.list()
        ]
        now = datetime.now(UTC)
        async with self.store.transaction() as s:
            row = await s.get(NodeSessionsRow, self.instance)
            if row is None:
                s.add(NodeSessionsRow(node=self.instance, heartbeat_at=now, sessions=snapshot))
            else:
                row.heartbeat_at, row.sessions = now, snapshot
            # rows of nodes gone for a day, and kill requests done a day ago
            old = now - timedelta(days=1)
            await s.execute(delete(NodeSessionsRow).where(NodeSessionsRow.heartbeat_at < old))
            await s.execute(
                delete(SessionKillRequestRow).where(
                    SessionKillRequestRow.done_at.is_not(None), SessionKillRequestRow.done_at < old
                )
            )
        self._published_version, self._published_at = version, mono

    # ------------------------------------------------------------------ listing
    async def _fresh_rows(self) -> list[NodeSessionsRow]:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale)
        async with self.store.session() as s:
            rows = (await s.execute(select(NodeSessionsRow))).scalars().all()
        return [r for r in rows if r.node != self.instance and _aware(r.heartbeat_at) >= cutoff]

    async def list_all(self) -> list[dict[str, Any]]:
        """Live sessions of every node with a fresh heartbeat; this node's straight from memory."""
        out = [session_view(live, self.node) for live in self.sessions.list()]
        now = datetime.now(UTC)
        for row in await self._fresh_rows():
            age = (now - _aware(row.heartbeat_at)).total_seconds()
            for d in row.sessions or []:
                view = dict(d)
                view["started_at"] = datetime.fromisoformat(str(d["started_at"]))
                if not view.get("busy"):
                    view["idle_seconds"] = round(float(d.get("idle_seconds", 0)) + age, 1)
                out.append(view)
        return sorted(out, key=lambda d: d["started_at"])

    async def holder(self, session_id: str) -> tuple[str, dict[str, Any]] | None:
        """The instance (row key) of the other node holding ``session_id``, and its view."""
        for row in await self._fresh_rows():
            for d in row.sessions or []:
                if d.get("id") == session_id:
                    return row.node, d
        return None

    # ------------------------------------------------------------------ kills
    async def request_kill(
        self, instance: str, session_id: str, *, requested_by: str, requested_from: str | None, surface: str
    ) -> int:
        async with self.store.transaction() as s:
            req = SessionKillRequestRow(
                node=instance,
                session_id=session_id,
                requested_by=requested_by,
                requested_from=requested_from,
                surface=surface,
                requested_at=datetime.now(UTC),
            )
            s.add(req)
            await s.flush()
            return int(req.id)

    async def wait_done(self, request_id: int, timeout: float) -> str | None:
        """The outcome of a kill request (``killed`` or ``gone``), or None if not done in time."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.store.session() as s:
                req = await s.get(SessionKillRequestRow, request_id)
                if req is not None and req.done_at is not None:
                    return req.outcome
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(min(0.2, self.poll))

    async def run_kill_requests(self) -> None:
        async with self.store.session() as s:
            pending = (
                (
                    await s.execute(
                        select(SessionKillRequestRow)
                        .where(
                            SessionKillRequestRow.node == self.instance,
                            SessionKillRequestRow.done_at.is_(None),
                        )
                        .order_by(SessionKillRequestRow.id)
                    )
                )
                .scalars()
                .all()
            )
        for req in pending:
            outcome = await self._kill(req)
            async with self.store.transaction() as s:
                row = await s.get(SessionKillRequestRow, req.id)
                if row is not None:
                    row.done_at, row.outcome = datetime.now(UTC), outcome
        if pending:
            await self.publish()

    async def _kill(self, req: SessionKillRequestRow) -> str:
        live = self.sessions.get(req.session_id)
        if live is None:
            return "gone"
        before = {
            "user": live.info.principal.username,
            "connection": live.info.target.name,
            "node": self.node,
            "live": True,
        }
        # audited here, on the node that ends the session, in the requester's name
        await self.journal.append(
            AdminChange(
                object_type="session",
                object_name=req.session_id,
                action="delete",
                before=before,
                after={**before, "live": False},
                source=req.surface,
                user=req.requested_by,
                client_addr=req.requested_from,
                client_program=f"dbward-{req.surface}",
                node=self.node,
            )
        )
        await self.sessions.kill(req.session_id, f"killed by administrator {req.requested_by}")
        return "killed"
