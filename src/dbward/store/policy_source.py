"""The policy set as the store holds it, for the evaluator: grants, privilege types, query
rules, per-connection settings, masking and the approved unmask requests, reloaded when the
store's policy version changes.

Approved unmask requests become :class:`~dbward.policy.model.Unmask` entries (one per column)
with their period; the masking view applies each only while its period holds, so a period
ending needs no reload to take effect. Approving, cancelling and expiring one bumps the
version (``approvals/service.py``), so every node drops it from its set.

Every change through the repositories bumps ``store_meta.policy_version``; each node checks
the version at most every ``check_interval`` seconds (one indexed single-row read), so a
change reaches every node without a restart. Counterpart: ``policy/evaluator.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from dbward.policy.model import (
    ConnectionPolicy,
    Grant,
    PolicySet,
    PrivilegeType,
    QueryRule,
    Unmask,
)
from dbward.store import masking_repo, repo
from dbward.store.db import Store
from dbward.store.models import ApprovalRequestRow, Connection, PrivilegeTypeRow, QueryRuleRow
from dbward.store.models import Grant as GrantRow

log = logging.getLogger(__name__)


def grant_conditions(conditions: dict[str, Any], expires_at: datetime | None) -> dict[str, Any]:
    """The store's grant conditions (the `dbward apply` shape) as policy.model.Conditions data.

    Store shape: ``valid_from``, ``weekdays``, ``hours`` ("09:00-18:00"), ``timezone``,
    ``client_ips``; the grant's ``expires_at`` becomes ``valid_until``. Data already in the
    policy shape (``windows``, ``valid_until``) passes through.
    """
    out: dict[str, Any] = {}
    if conditions.get("valid_from"):
        out["valid_from"] = conditions["valid_from"]
    until = conditions.get("valid_until") or expires_at
    if until:
        out["valid_until"] = until
    if conditions.get("client_ips"):
        out["client_ips"] = conditions["client_ips"]
    if conditions.get("windows"):
        out["windows"] = conditions["windows"]
    elif conditions.get("weekdays") or conditions.get("hours"):
        window: dict[str, Any] = {"timezone": conditions.get("timezone") or "UTC"}
        if conditions.get("weekdays"):
            window["weekdays"] = conditions["weekdays"]
        if conditions.get("hours"):
            start, _, end = str(conditions["hours"]).partition("-")
            window["start"], window["end"] = start.strip(), end.strip()
        out["windows"] = [window]
    return out


def unmasks_from(rows: list[ApprovalRequestRow]) -> list[Unmask]:
    """The exemptions of approved unmask requests: one per column, for the requester on the
    request's connection until its ``valid_until``. A request without a period or a
    connection, or with a column that does not validate, gives none (fail closed: masked)."""
    out: list[Unmask] = []
    for r in rows:
        if r.valid_until is None or not r.connection:
            log.warning("approved unmask request #%s has no period or connection; it is not applied", r.id)
            continue
        for c in (r.payload or {}).get("columns") or []:
            try:
                out.append(
                    Unmask.model_validate(
                        {
                            "request_id": r.id,
                            "user": r.requester,
                            "connection": r.connection,
                            "database": c.get("database") or "*",
                            "schema": c.get("schema") or "*",
                            "table": c.get("table"),
                            "column": c.get("column"),
                            "valid_from": r.valid_from,
                            "valid_until": r.valid_until,
                        }
                    )
                )
            except (ValueError, AttributeError) as exc:
                log.warning("a column of approved unmask request #%s is not applied: %s", r.id, exc)
    return out


async def load_policy_set(store: Store) -> PolicySet:
    async with store.session() as s:
        version = await repo.policy_version(s)
        masking_patterns = await masking_repo.load(s, masking_repo.PATTERNS)
        masking_rules = await masking_repo.load(s, masking_repo.RULES)
        conns = {c.id: c for c in (await s.execute(select(Connection))).scalars()}
        grants = (await s.execute(select(GrantRow).order_by(GrantRow.name))).scalars().all()
        ptypes = (await s.execute(select(PrivilegeTypeRow).order_by(PrivilegeTypeRow.name))).scalars().all()
        rules = (
            (await s.execute(select(QueryRuleRow).order_by(QueryRuleRow.priority, QueryRuleRow.rule_id)))
            .scalars()
            .all()
        )
        unmask_rows = list(
            (
                await s.execute(
                    select(ApprovalRequestRow)
                    .where(ApprovalRequestRow.type == "unmask", ApprovalRequestRow.state == "approved")
                    .order_by(ApprovalRequestRow.id)
                )
            ).scalars()
        )
    data = {
        "version": version,
        "grants": [
            Grant.model_validate(
                {
                    "name": g.name,
                    "subject": {"type": g.subject_type, "name": g.subject_name},
                    "connection": conns[g.connection_id].name,
                    "privileges": list(g.privileges or []),
                    "scope": {k: v for k, v in (g.scope or {}).items() if v},
                    "conditions": grant_conditions(dict(g.conditions or {}), g.expires_at),
                }
            )
            for g in grants
            if g.connection_id in conns
        ],
        "privilege_types": [
            PrivilegeType.model_validate(
                {
                    "name": p.name,
                    "kinds": p.kinds or [],
                    "includes": p.includes or [],
                    "description": p.description or "",
                }
            )
            for p in ptypes
        ],
        "rules": [
            QueryRule.model_validate(
                {
                    "id": r.rule_id,
                    "priority": r.priority,
                    "match": r.match,
                    "pattern": r.pattern,
                    "action": r.action,
                    "connection": r.connection,
                    "subjects": r.subjects or [],
                    "message": r.message,
                    "enabled": r.enabled,
                }
            )
            for r in rules
        ],
        "connections": [
            ConnectionPolicy.model_validate({"connection": c.name, "engine": c.engine, **(c.policy or {})})
            for c in conns.values()
        ],
        "masking_patterns": masking_patterns,
        "masking_rules": masking_rules,
        "unmasks": unmasks_from(unmask_rows),
    }
    return PolicySet.model_validate(data)


class StorePolicyProvider:
    """``PolicySetProvider`` over the store, reloading when the policy version changes."""

    def __init__(
        self, store: Store, *, check_interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.check_interval = check_interval
        self._clock = clock
        self._current: PolicySet | None = None
        self._checked = -math.inf  # never checked (monotonic time may start near 0 at boot)
        self._lock = asyncio.Lock()

    async def current(self) -> PolicySet:
        cur = self._current
        if cur is not None and self._clock() - self._checked < self.check_interval:
            return cur
        async with self._lock:
            cur = self._current
            if cur is not None and self._clock() - self._checked < self.check_interval:
                return cur
            async with self.store.session() as s:
                version = await repo.policy_version(s)
            if cur is None or cur.version != version:
                try:
                    cur = await load_policy_set(self.store)
                except ValueError as exc:
                    if self._current is None:
                        raise
                    # Keep deciding with the last good policy and say so loudly.
                    log.error(
                        "the changed policy does not load (%s); keeping version %s",
                        exc,
                        self._current.version,
                    )
                    cur = self._current
                else:
                    log.info("policy version %s loaded", cur.version)
                self._current = cur
            self._checked = self._clock()
            return cur

    def current_nowait(self) -> PolicySet | None:
        """The set :meth:`current` would return now without asking the store, or None when it
        must ask (not loaded yet, or the version check is due): the gate's synchronous path
        serves cached decisions only while this is the set they were made with."""
        cur = self._current
        if cur is not None and self._clock() - self._checked < self.check_interval:
            return cur
        return None

    def invalidate(self) -> None:
        self._checked = -math.inf
