"""Figures for the console dashboard, from the stored audit trail (``audit_events``)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dbward.store.db import Store
from dbward.store.models import AuditRecord

MAX_ROWS = 200_000


async def figures(store: Store, hours: int = 24, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=hours)
    q = (
        select(
            AuditRecord.time, AuditRecord.type, AuditRecord.user, AuditRecord.effect, AuditRecord.connection
        )
        .where(AuditRecord.time >= since)
        .where(
            AuditRecord.type.in_(
                ("statement.decision", "statement.masked", "auth.signin_failed", "session.rejected")
            )
        )
        .limit(MAX_ROWS)
    )
    async with store.session() as s:
        rows = (await s.execute(q)).all()
    per_hour: Counter[str] = Counter()
    users: Counter[str] = Counter()
    denied_users: Counter[str] = Counter()
    statements = denials = masked = signin_failures = rejected = 0
    for t, type_, user, effect, _conn in rows:
        t = t if t.tzinfo else t.replace(tzinfo=UTC)
        if type_ == "statement.decision":
            statements += 1
            per_hour[t.strftime("%m-%d %H:00")] += 1
            users[user or "?"] += 1
            if effect and effect != "allow":
                denials += 1
                denied_users[user or "?"] += 1
        elif type_ == "statement.masked":
            masked += 1
        elif type_ == "auth.signin_failed":
            signin_failures += 1
        elif type_ == "session.rejected":
            rejected += 1
    hours_list = []
    for i in range(hours - 1, -1, -1):
        label = (now - timedelta(hours=i)).strftime("%m-%d %H:00")
        hours_list.append((label, per_hour.get(label, 0)))
    return {
        "hours": hours,
        "statements": statements,
        "denials": denials,
        "masked": masked,
        "signin_failures": signin_failures,
        "rejected_sessions": rejected,
        "per_hour": hours_list,
        "per_hour_max": max([c for _, c in hours_list] + [1]),
        "top_users": users.most_common(10),
        "top_denied": denied_users.most_common(5),
    }
