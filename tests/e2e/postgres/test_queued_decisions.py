"""The PostgreSQL engine with a file journal: the decisions of one loop iteration are written
together, and a statement waits for the write that carries its decision; when that write
fails, the statement never reaches PostgreSQL and the client is told why."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.conftest import RunningNode, pg_dsn
from tests.e2e.journal_swap import CountingJournal, break_journal, records
from tests.e2e.postgres.conftest import dsn


async def test_concurrent_sessions_are_answered_and_audited_in_order(
    dbward_node: RunningNode, queued_journal: CountingJournal
) -> None:
    port = await dbward_node.listen("pg")

    async def client(c: int) -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn(port), autocommit=True) as conn:
            out = []
            for i in range(30):
                row = await (await conn.execute(f"SELECT {c * 100 + i} + 0")).fetchone()
                assert row is not None
                out.append(row[0])
            return out

    results = await asyncio.gather(*(client(c) for c in range(6)))
    assert results == [[c * 100 + i for i in range(30)] for c in range(6)]
    assert queued_journal.queued > 150  # all but the first statements of each session, about
    await queued_journal.close()
    recs = records(queued_journal)
    decided = {r["statement_id"]: r for r in recs if r["type"] == "statement.decision"}
    done = [r for r in recs if r["type"] == "statement.complete"]
    for c in range(6):
        for i in range(30):
            mine = [r for r in decided.values() if r["sql"] == f"SELECT {c * 100 + i} + 0"]
            assert len(mine) == 1 and mine[0]["effect"] == "allow"
            after = [r for r in done if r["statement_id"] == mine[0]["statement_id"]]
            assert len(after) == 1 and after[0]["rows"] == 1 and after[0]["seq"] > mine[0]["seq"]


async def test_a_statement_whose_decision_cannot_be_written_never_runs(
    dbward_node: RunningNode, queued_journal: CountingJournal
) -> None:
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(pg_dsn("dbward_test"), autocommit=True) as direct:
        await direct.execute("DROP TABLE IF EXISTS queued_probe")
        await direct.execute("CREATE TABLE queued_probe (a int)")
        await direct.execute("GRANT ALL ON queued_probe TO dbward_upstream")
    conn = await psycopg.AsyncConnection.connect(dsn(port), autocommit=True)
    try:
        for a in (1, 2):  # decided by the full path, then from the cache (queued)
            await conn.execute(f"INSERT INTO queued_probe VALUES ({a})")
        await asyncio.sleep(0.1)  # the completion of the last one is written meanwhile
        queued = queued_journal.queued
        break_journal(queued_journal)
        with pytest.raises(psycopg.Error) as exc:
            await conn.execute("INSERT INTO queued_probe VALUES (3)")
        assert queued_journal.queued == queued + 1  # it was held for the write that failed
        assert exc.value.sqlstate == "58030"
        assert "audit journal" in str(exc.value) and "audit.fail_closed" in str(exc.value)
    finally:
        await conn.close()
    async with await psycopg.AsyncConnection.connect(pg_dsn("dbward_test"), autocommit=True) as direct:
        rows = await (await direct.execute("SELECT a FROM queued_probe ORDER BY a")).fetchall()
        await direct.execute("DROP TABLE queued_probe")
    assert rows == [(1,), (2,)]
