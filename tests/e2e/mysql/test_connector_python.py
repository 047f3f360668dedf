"""mysql-connector-python (pure Python and C extension) and asyncmy through dbward."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import asyncmy
import mysql.connector
import pytest

from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.mysql.conftest import completions, decisions, deny_word


@pytest.mark.parametrize("use_pure", [True, False], ids=["pure", "c-extension"])
async def test_connector_python_text_and_prepared(
    dbward_node: RunningNode, maria_port: int, use_pure: bool
) -> None:
    def go() -> dict[str, Any]:
        conn = mysql.connector.connect(
            host="127.0.0.1",
            port=maria_port,
            user=USER,
            password=PASSWORD,
            database="dbward_test",
            use_pure=use_pure,
            ssl_disabled=True,
        )
        out: dict[str, Any] = {}
        cur = conn.cursor()
        cur.execute("SELECT name FROM customers WHERE id = %s", (2,))
        out["text"] = cur.fetchall()
        cur.close()
        pc = conn.cursor(prepared=True)
        pc.execute(
            "SELECT id, name, balance, created FROM customers WHERE id = ? AND name <> ?", (1, "nobody")
        )
        out["prepared"] = pc.fetchall()
        pc.execute("SELECT id, name, balance, created FROM customers WHERE id = ? AND name <> ?", (3, "x"))
        out["prepared2"] = pc.fetchall()
        pc.close()
        conn.close()
        return out

    out = await asyncio.to_thread(go)
    assert [tuple(r) for r in out["text"]] == [("Lee Jun",)]
    row = tuple(out["prepared"][0])
    assert row[0] == 1 and row[1] == "Kim Minji" and row[2] == Decimal("1200.50")
    assert row[3] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert tuple(out["prepared2"][0])[:2] == (3, "Park Ara")
    prepared_sql = "SELECT id, name, balance, created FROM customers WHERE id = ? AND name <> ?"
    events = [(e["origin"], e["sql"], e["params"]) for e in decisions(dbward_node)]
    assert ("prepare", prepared_sql, None) in events
    assert ("execute", prepared_sql, [1, "nobody"]) in events
    assert ("execute", prepared_sql, [3, "x"]) in events
    executes = [
        c
        for c, e in zip(completions(dbward_node), decisions(dbward_node), strict=True)
        if e["origin"] == "execute"
    ]
    assert [c["rows"] for c in executes] == [1, 1]


async def test_connector_python_denied_prepare(dbward_node: RunningNode, maria_port: int) -> None:
    deny_word(dbward_node, "DELETE")

    def go() -> list[Any]:
        conn = mysql.connector.connect(
            host="127.0.0.1", port=maria_port, user=USER, password=PASSWORD, use_pure=True, ssl_disabled=True
        )
        pc = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as ei:
            pc.execute("DELETE FROM customers WHERE id = ?", (1,))
        assert ei.value.errno == 1142 and ei.value.sqlstate == "42000"
        assert "denied by rule no-delete" in ei.value.msg
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM customers")
        rows: list[Any] = cur.fetchall()
        conn.close()
        return rows

    assert [tuple(r) for r in await asyncio.to_thread(go)] == [(3,)]
    assert ("prepare", "deny") in [(e["origin"], e["effect"]) for e in decisions(dbward_node)]


async def test_asyncmy(dbward_node: RunningNode, maria_port: int) -> None:
    conn = await asyncmy.connect(
        host="127.0.0.1", port=maria_port, user=USER, password=PASSWORD, db="dbward_test"
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT id, email FROM customers ORDER BY id")
            rows = await cur.fetchall()
            await cur.execute("SELECT @@autocommit, DATABASE()")
            probe = await cur.fetchone()
    finally:
        conn.close()
    assert [tuple(r) for r in rows] == [(1, "minji@example.com"), (2, "jun@example.com"), (3, None)]
    assert tuple(probe)[1] == "dbward_test"
    assert "SELECT id, email FROM customers ORDER BY id" in dbward_node.statements()
