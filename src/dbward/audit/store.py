"""The store's copy of the audit trail: the store forwarder, search, export, retention, verify.

The journal is the first, durable record; this module copies it into the metadata store
(``audit_events``) so that it can be searched and exported across nodes, and verifies the
stored copy chain by chain. Pruning past the retention period leaves an anchor (the last
pruned record's seq and hash) so that what remains still verifies.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from dbward.audit.chain import record_hash
from dbward.audit.verify import VerifyReport, verify_lines
from dbward.store.db import Store
from dbward.store.models import AuditAnchor, AuditRecord

Batch = Sequence[tuple[str, dict[str, Any]]]


def _parse_time(value: Any) -> datetime:
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.now(UTC)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


#: the columns the forwarder fills, in the order of its rows
_COLUMNS = ("chain", "seq", "time", "type", "code", "user", "connection", "session_id", "effect", "line")


def _sqlite_time(value: Any, process: Callable[[Any], Any]) -> Any:
    """The stored form of a record's time on SQLite: ``process(_parse_time(value))``, with
    the journal's own form (``2026-01-07T12:00:00.000123+00:00``) cut into SQLite's
    (``2026-01-07 12:00:00.000123``, what SQLAlchemy's DATETIME writes) without building a
    datetime and formatting it again; once the text is known to be a valid time."""
    if (
        type(value) is str
        and len(value) == 32
        and value[10] == "T"
        and value[19] == "."
        and value.endswith("+00:00")
    ):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return f"{value[:10]} {value[11:26]}"
    return process(_parse_time(value))


class StoreForwarder:
    """Copies journal records into ``audit_events``; re-sent records are ignored (idempotent)."""

    name = "store"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._insert: tuple[str, Callable[[Any], Any]] | None = None

    def _sqlite_insert(self) -> tuple[str, Callable[[Any], Any]]:
        """SQLite: the insert compiled once, and SQLAlchemy's bind processor of ``time`` (the
        only column that has one there; checked, so a new one is never skipped)."""
        if self._insert is None:
            table: Any = AuditRecord.__table__
            dialect = self.store.engine.dialect
            ins = sqlite.insert(table).on_conflict_do_nothing(index_elements=["chain", "seq"])
            compiled: Any = ins.compile(dialect=dialect, column_keys=list(_COLUMNS))
            order = tuple(compiled.positiontup or ())
            processors = {
                name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order
            }
            process_time = processors.pop("time", None)
            if order != _COLUMNS or process_time is None or any(processors.values()):
                raise RuntimeError(f"the audit insert on SQLite is not as expected ({order})")
            self._insert = (str(compiled), process_time)
        return self._insert

    async def send(self, batch: Batch) -> None:
        if self.store.dialect != "postgresql":
            await self._send_sqlite(batch)
            return
        rows = [
            {
                "chain": rec["chain"],
                "seq": int(rec["seq"]),
                "time": _parse_time(rec.get("time")),
                "type": str(rec.get("type", "")),
                "code": str(rec.get("code", "")),
                "user": rec.get("user"),
                "connection": rec.get("connection"),
                "session_id": rec.get("session_id"),
                "effect": rec.get("effect"),
                "line": line,
            }
            for line, rec in batch
        ]
        table: Any = AuditRecord.__table__
        ins = postgresql.insert(table).on_conflict_do_nothing(index_elements=["chain", "seq"])
        # Core executemany on a connection, not the ORM session: this runs for every audit
        # event, and the ORM's per-row bookkeeping cost more CPU than the proxy itself.
        async with self.store.engine.begin() as conn:
            await conn.execute(ins, rows)

    async def _send_sqlite(self, batch: Batch) -> None:
        sql, process_time = self._sqlite_insert()
        rows = [
            (
                rec["chain"],
                int(rec["seq"]),
                _sqlite_time(rec.get("time"), process_time),
                str(rec.get("type", "")),
                str(rec.get("code", "")),
                rec.get("user"),
                rec.get("connection"),
                rec.get("session_id"),
                rec.get("effect"),
                line,
            )
            for line, rec in batch
        ]
        if not rows:
            return
        # One executemany of the driver in one transaction, with the rows as SQLAlchemy would
        # bind them: its per-row parameter processing in Python cost as much as the inserts.
        async with self.store.engine.begin() as conn:
            await conn.exec_driver_sql(sql, rows)

    async def close(self) -> None:
        return None


@dataclass(frozen=True, kw_only=True)
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    user: str | None = None
    connection: str | None = None
    type: str | None = None
    session_id: str | None = None
    effect: str | None = None
    text: str | None = None  # substring of the record (SQL text, reason...)

    def apply(self, q: Any) -> Any:
        if self.since:
            q = q.where(AuditRecord.time >= self.since)
        if self.until:
            q = q.where(AuditRecord.time < self.until)
        if self.user:
            q = q.where(AuditRecord.user == self.user)
        if self.connection:
            q = q.where(AuditRecord.connection == self.connection)
        if self.type:
            q = q.where(AuditRecord.type.startswith(self.type))
        if self.session_id:
            q = q.where(AuditRecord.session_id == self.session_id)
        if self.effect:
            q = q.where(AuditRecord.effect == self.effect)
        if self.text:
            q = q.where(AuditRecord.line.contains(self.text))
        return q


async def search(
    store: Store, query: AuditQuery, *, limit: int = 100, after_id: int = 0
) -> list[tuple[int, dict[str, Any]]]:
    """Records matching ``query`` in stored order, as (row id, record), for keyset pagination."""
    q = query.apply(select(AuditRecord.id, AuditRecord.line)).where(AuditRecord.id > after_id)
    async with store.session() as s:
        rows = (await s.execute(q.order_by(AuditRecord.id).limit(limit))).all()
    return [(r.id, json.loads(r.line)) for r in rows]


async def iter_lines(store: Store, query: AuditQuery | None = None, batch: int = 5000) -> AsyncIterator[str]:
    after = 0
    while True:
        q = select(AuditRecord.id, AuditRecord.line).where(AuditRecord.id > after)
        if query is not None:
            q = query.apply(q)
        async with store.session() as s:
            rows = (
                await s.execute(q.order_by(AuditRecord.chain, AuditRecord.seq, AuditRecord.id).limit(batch))
            ).all()
        if not rows:
            return
        for r in rows:
            yield r.line
        if len(rows) < batch:
            return
        after = max(r.id for r in rows) if query is None else rows[-1].id


EXPORT_COLUMNS = (
    "time",
    "code",
    "type",
    "user",
    "connection",
    "database",
    "client_addr",
    "client_program",
    "session_id",
    "effect",
    "sql",
    "reasons",
    "rule_ids",
    "rows",
    "affected",
    "duration_ms",
    "error",
    "chain",
    "seq",
)


def to_csv_rows(lines: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(EXPORT_COLUMNS)
    for line in lines:
        rec = json.loads(line)
        w.writerow(
            [
                "; ".join(map(str, v)) if isinstance(v := rec.get(c), list) else ("" if v is None else v)
                for c in EXPORT_COLUMNS
            ]
        )
    return buf.getvalue()


async def verify_store(store: Store, **kwargs: Any) -> VerifyReport:
    """Verify every chain in the store (records in seq order; pruned chains from their anchor)."""
    async with store.session() as s:
        anchors = {a.chain: a for a in (await s.execute(select(AuditAnchor))).scalars()}
        chains = [c for (c,) in (await s.execute(select(AuditRecord.chain).distinct())).all()]
    lines: list[str] = []
    for chain in chains:
        async with store.session() as s:
            rows = (
                await s.execute(
                    select(AuditRecord.line).where(AuditRecord.chain == chain).order_by(AuditRecord.seq)
                )
            ).scalars()
            lines.extend(rows)
    report = verify_lines(lines, allow_pruned_start=bool(anchors), **kwargs)
    # A pruned chain must start right after its anchor, linked to the anchor's hash.
    for chain, anchor in anchors.items():
        first = next((json.loads(x) for x in lines if json.loads(x)["chain"] == chain), None)
        if first is not None and (first["seq"] != anchor.seq + 1 or first["prev"] != anchor.hash):
            from dbward.audit.verify import Problem, ProblemKind

            report.problems.insert(
                0,
                Problem(
                    chain,
                    first["seq"],
                    ProblemKind.DELETED,
                    f"chain {chain}: retention pruned up to seq {anchor.seq}, but the stored trail starts at seq "
                    f"{first['seq']} without linking to it",
                ),
            )
    return report


async def prune(store: Store, retention_days: int, *, now: datetime | None = None) -> int:
    """Delete records older than the retention period, keeping an anchor per chain."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    removed = 0
    async with store.transaction() as s:
        chains = [c for (c,) in (await s.execute(select(AuditRecord.chain).distinct())).all()]
        for chain in chains:
            last = (
                await s.execute(
                    select(func.max(AuditRecord.seq)).where(
                        AuditRecord.chain == chain, AuditRecord.time < cutoff
                    )
                )
            ).scalar_one_or_none()
            if last is None:
                continue
            line = (
                await s.execute(
                    select(AuditRecord.line).where(AuditRecord.chain == chain, AuditRecord.seq == last)
                )
            ).scalar_one()
            anchor = await s.get(AuditAnchor, chain)
            if anchor is None:
                anchor = AuditAnchor(chain=chain, seq=last, hash=record_hash(line), pruned_before=cutoff)
                s.add(anchor)
            else:
                anchor.seq, anchor.hash, anchor.pruned_before = last, record_hash(line), cutoff
            res = await s.execute(
                delete(AuditRecord).where(AuditRecord.chain == chain, AuditRecord.seq <= last)
            )
            removed += int(getattr(res, "rowcount", 0) or 0)
    return removed
