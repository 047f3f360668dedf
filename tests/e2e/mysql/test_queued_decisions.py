"""The MySQL engine's fast path with a file journal: a command waits for the journal's write
that carries its decision; when that write fails, the command never reaches MariaDB, the
client gets the error and the session goes on."""

from __future__ import annotations

import asyncio
import time

import pymysql
import pytest

from tests.conftest import RunningNode, mysql_root
from tests.e2e.journal_swap import CountingJournal, break_journal, records
from tests.e2e.mysql.test_fast_path import count_calls
from tests.e2e.mysql.test_lifecycle import connect


async def test_concurrent_sessions_are_answered_and_audited_in_order(
    dbward_node: RunningNode, maria_port: int, queued_journal: CountingJournal
) -> None:
    def client(c: int) -> list[int]:
        conn = connect(maria_port)
        out = []
        with conn.cursor() as cur:
            for i in range(30):
                cur.execute(f"SELECT {c * 100 + i} + 0")
                out.append(cur.fetchone()[0])
        conn.close()
        return out

    results = await asyncio.gather(*(asyncio.to_thread(client, c) for c in range(6)))
    assert results == [[c * 100 + i for i in range(30)] for c in range(6)]
    assert queued_journal.queued > 150  # all but the first statements of each session, about
    await queued_journal.close()
    recs = records(queued_journal)
    for c in range(6):
        for i in range(30):
            mine = [
                r
                for r in recs
                if r["type"] == "statement.decision" and r["sql"] == f"SELECT {c * 100 + i} + 0"
            ]
            assert len(mine) == 1 and mine[0]["effect"] == "allow"
            after = [
                r
                for r in recs
                if r["type"] == "statement.complete" and r["statement_id"] == mine[0]["statement_id"]
            ]
            assert len(after) == 1 and after[0]["rows"] == 1 and after[0]["seq"] > mine[0]["seq"]


async def test_a_command_whose_decision_cannot_be_written_never_runs(
    dbward_node: RunningNode,
    maria_port: int,
    queued_journal: CountingJournal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = mysql_root()
    with root.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS dbward_test.queued_probe")
        cur.execute("CREATE TABLE dbward_test.queued_probe (a int)")

    def go() -> tuple[int, str]:
        conn = connect(maria_port, database="dbward_test")
        try:
            with conn.cursor() as cur:
                for a in (1, 2):  # decided by the full path, then from the cache (queued)
                    cur.execute(f"INSERT INTO queued_probe VALUES ({a})")
                time.sleep(0.2)  # the completion of the last one is written meanwhile
                break_journal(queued_journal)
                with pytest.raises(pymysql.err.MySQLError) as exc:
                    cur.execute("INSERT INTO queued_probe VALUES (3)")
                conn.ping(reconnect=False)  # the session goes on (its statements are refused)
                return exc.value.args[0], exc.value.args[1]
        finally:
            conn.close()

    not_sent = count_calls(monkeypatch, "_fast_not_sent")
    errno, message = await asyncio.to_thread(go)
    assert not_sent[0] == 1  # the fast path held it, and dropped it when the write failed
    assert errno == 1105
    assert "audit journal" in message and "audit.fail_closed" in message
    with root.cursor() as cur:
        cur.execute("SELECT a FROM dbward_test.queued_probe ORDER BY a")
        rows = cur.fetchall()
        cur.execute("DROP TABLE dbward_test.queued_probe")
    root.close()
    assert rows == ((1,), (2,))
