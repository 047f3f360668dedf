"""The store's copy of the trail on SQLite and PostgreSQL: copied once, searchable, verifiable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from dbward.audit.chain import Signer
from dbward.audit.events import StatementDecided
from dbward.audit.forward import Dispatcher
from dbward.audit.journal import FileJournal
from dbward.audit.store import AuditQuery, StoreForwarder, prune, search, to_csv_rows, verify_store
from dbward.audit.verify import ProblemKind
from dbward.store.db import Store
from dbward.store.models import AuditRecord


async def _fill(tmp_path: Path, store: Store, key: Ed25519PrivateKey, n: int) -> FileJournal:
    j = FileJournal(tmp_path / "journal.jsonl", fsync=False, signer=Signer(key), checkpoint_every=5)
    for i in range(n):
        await j.append(
            StatementDecided(
                user="alice" if i % 2 else "bob",
                connection="maria",
                sql=f"SELECT {i}",
                effect="deny" if i == 3 else "allow",
                reasons=["r1", "r2"],
            )
        )
    d = Dispatcher(j.path, j.chain, [(StoreForwarder(store), 4)], tmp_path / "cursors", poll_interval=0.05)
    d.start()
    await d.wait_delivered(j.last_seq)
    # Sending the same batch again (a crash between insert and cursor save) adds nothing.
    from dbward.audit.journal import iter_records

    await StoreForwarder(store).send(list(iter_records(j.path))[:3])
    await d.stop()
    return j


async def test_store_copy_verifies_and_catches_an_edit(tmp_path: Path, store: Store) -> None:
    key = Ed25519PrivateKey.generate()
    j = await _fill(tmp_path, store, key, 12)
    report = await verify_store(store, public_key=key.public_key())
    assert report.ok, report.problems
    (summary,) = report.chains.values()
    assert summary.records == j.last_seq
    denied = await search(store, AuditQuery(effect="deny"))
    assert [r["sql"] for _, r in denied] == ["SELECT 3"]
    alice = await search(store, AuditQuery(user="alice", type="statement"))
    assert len(alice) == 6
    csv_text = to_csv_rows([json.dumps(r) for _, r in denied])
    assert "SELECT 3" in csv_text and "r1; r2" in csv_text
    async with store.transaction() as s:
        row = (await s.execute(select(AuditRecord).where(AuditRecord.seq == 2))).scalar_one()
        rec = json.loads(row.line)
        rec["sql"] = "SELECT 'edited'"
        await s.execute(update(AuditRecord).where(AuditRecord.id == row.id).values(line=json.dumps(rec)))
    report = await verify_store(store, public_key=key.public_key())
    assert not report.ok
    assert report.problems[0].kind is ProblemKind.ALTERED
    assert report.problems[0].seq == 3


async def test_pruning_keeps_the_rest_verifiable(tmp_path: Path, store: Store) -> None:
    key = Ed25519PrivateKey.generate()
    await _fill(tmp_path, store, key, 10)
    async with store.transaction() as s:
        old = datetime.now(UTC) - timedelta(days=3000)
        await s.execute(update(AuditRecord).where(AuditRecord.seq <= 4).values(time=old))
    removed = await prune(store, retention_days=5 * 365)
    assert removed == 4
    report = await verify_store(store, public_key=key.public_key())
    assert report.ok, report.problems
    async with store.transaction() as s:
        await s.execute(AuditRecord.__table__.delete().where(AuditRecord.seq == 5))
    report = await verify_store(store, public_key=key.public_key())
    assert report.problems and report.problems[0].kind is ProblemKind.DELETED
