"""The exact audit events of one session per engine: start, an allowed statement with its
completion, a denied statement (no completion: it never reached the target), end."""

from __future__ import annotations

import asyncio

import psycopg
import pymysql
import pytest

from tests.conftest import RunningNode
from tests.e2e.policy.test_enforcement import READER, READER_PW, reader_node  # noqa: F401


def _session_events(node: RunningNode, user: str) -> list[tuple[str, str | None, str | None]]:
    recs = [r for r in node.journal.records if r.get("user") == user]
    sid = next(r["session_id"] for r in recs if r["type"] == "session.start")
    return [(r["type"], r.get("effect"), r.get("sql")) for r in recs if r.get("session_id") == sid]


async def test_postgres_session_events(reader_node: RunningNode) -> None:  # noqa: F811
    port = await reader_node.listen("pg")

    def go() -> None:
        dsn = f"host=127.0.0.1 port={port} user={READER} password={READER_PW} dbname=dbward_test sslmode=disable"
        with psycopg.connect(dsn, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM customers").fetchone() == (3,)
            with pytest.raises(psycopg.Error):
                c.execute("DELETE FROM customers")

    await asyncio.to_thread(go)
    await asyncio.sleep(0.2)  # the session end is recorded as the connection closes
    assert _session_events(reader_node, READER) == [
        ("session.start", None, None),
        ("statement.decision", "allow", "SELECT count(*) FROM customers"),
        ("statement.complete", None, None),
        ("statement.decision", "deny", "DELETE FROM customers"),
        ("session.end", None, None),
    ]
    start = next(
        r for r in reader_node.journal.records if r["type"] == "session.start" and r["user"] == READER
    )
    assert (
        start["connection"] == "pg"
        and start["client_addr"] == "127.0.0.1"
        and start["client_addr_source"] == "direct"
    )
    done = next(
        r for r in reader_node.journal.records if r["type"] == "statement.complete" and r["user"] == READER
    )
    assert done["rows"] == 1 and done["error"] is None
    deny = next(r for r in reader_node.journal.records if r.get("effect") == "deny" and r["user"] == READER)
    assert deny["kind"] == "DELETE" and deny["rule_ids"] and deny["reasons"][0].startswith("denied")


async def test_mysql_session_events(reader_node: RunningNode) -> None:  # noqa: F811
    port = await reader_node.listen("maria")

    def go() -> None:
        with (
            pymysql.connect(
                host="127.0.0.1",
                port=port,
                user=READER,
                password=READER_PW,
                database="dbward_test",
                ssl_disabled=True,
                autocommit=None,
            ) as c,
            c.cursor() as cur,
        ):
            cur.execute("SELECT count(*) FROM customers")
            assert cur.fetchone() == (3,)
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("DELETE FROM customers")

    await asyncio.to_thread(go)
    await asyncio.sleep(0.2)
    events = _session_events(reader_node, READER)
    assert events == [
        ("session.start", None, None),
        ("statement.decision", "allow", "SET NAMES utf8mb4"),  # PyMySQL's own, audited like any other
        ("statement.complete", None, None),
        ("statement.decision", "allow", "SELECT count(*) FROM customers"),
        ("statement.complete", None, None),
        ("statement.decision", "deny", "DELETE FROM customers"),
        ("session.end", None, None),
    ], events


async def _mask_phone(node: RunningNode, connection: str) -> None:
    from dbward.store import masking_repo, repo

    async with node.store.transaction() as s:
        await masking_repo.put(
            s,
            masking_repo.RULES,
            {
                "name": f"phone-{connection}",
                "connection": connection,
                "table": "customers",
                "column": "phone",
                "pattern": "phone",
            },
            create=True,
        )
        await repo.bump_policy_version(s)


async def test_postgres_session_events_with_masking(reader_node: RunningNode) -> None:  # noqa: F811
    await _mask_phone(reader_node, "pg")
    port = await reader_node.listen("pg")

    def go() -> list[tuple[object, ...]]:
        dsn = f"host=127.0.0.1 port={port} user={READER} password={READER_PW} dbname=dbward_test sslmode=disable"
        with psycopg.connect(dsn, autocommit=True) as c:
            rows = c.execute("SELECT name, phone FROM customers WHERE id = 1").fetchall()
            with pytest.raises(psycopg.Error):
                c.execute("DELETE FROM customers")
            return rows

    assert await asyncio.to_thread(go) == [("Kim Minji", "010-****-5678")]
    await asyncio.sleep(0.2)
    assert _session_events(reader_node, READER) == [
        ("session.start", None, None),
        ("statement.decision", "allow", "SELECT name, phone FROM customers WHERE id = 1"),
        ("statement.masked", None, None),
        ("statement.complete", None, None),
        ("statement.decision", "deny", "DELETE FROM customers"),
        ("session.end", None, None),
    ]
    masked = next(r for r in reader_node.journal.records if r["type"] == "statement.masked")
    assert [(c["column"], c["rule"]) for c in masked["columns"]] == [("phone", "masking:phone-pg")]
    decision = next(
        r for r in reader_node.journal.records if r.get("sql", "").startswith("SELECT name, phone")
    )
    assert decision["statement_id"] == masked["statement_id"]
