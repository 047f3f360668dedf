"""The MySQL engine's fast path (one statement, a cached decision, no rewrite, handled in the
loop's callbacks): results, audit events and order stay exactly those of the task's path, for
COM_QUERY, COM_STMT_EXECUTE, pipelined commands, refusals and a client that vanishes."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import mysql.connector
import pymysql
import pytest

from dbward.proxy.mysql import MySQLSession
from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.mysql.conftest import completions, decisions
from tests.e2e.mysql.test_lifecycle import connect, start_long_query, upstream_queries, wait_until


def count_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """How many times the engine's own ``MySQLSession.<method>`` ran (a counter around it)."""
    count = [0]
    inner = getattr(MySQLSession, method)

    def counted(self: MySQLSession, *args: Any) -> None:
        count[0] += 1
        inner(self, *args)

    monkeypatch.setattr(MySQLSession, method, counted)
    return count


@pytest.fixture
def fast_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many commands the fast path finished."""
    return count_calls(monkeypatch, "_fast_finish")


def _events_of(node: RunningNode, sql: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    decided = [e for e in decisions(node) if e["sql"] == sql]
    ids = {e["statement_id"] for e in decided}
    return decided, [e for e in completions(node) if e["statement_id"] in ids]


async def test_repeated_queries_are_answered_and_audited_alike(
    dbward_node: RunningNode, maria_port: int, fast_count: list[int]
) -> None:
    def go() -> list[Any]:
        conn = connect(maria_port)
        out = []
        with conn.cursor() as cur:
            for i in range(6):
                cur.execute(f"SELECT {i} AS n, 'x' AS s")
                out.append(cur.fetchall())
        conn.close()
        return out

    rows = await asyncio.to_thread(go)
    assert rows == [((i, "x"),) for i in range(6)]
    assert fast_count[0] >= 4  # the first ones fill the decision cache
    for i in range(6):
        decided, done = _events_of(dbward_node, f"SELECT {i} AS n, 'x' AS s")
        assert len(decided) == 1 and decided[0]["effect"] == "allow"
        assert len(done) == 1 and done[0]["rows"] == 1 and done[0]["error"] is None
        assert done[0]["bytes_sent"] > 0


async def test_repeated_prepared_executions_keep_their_parameters(
    dbward_node: RunningNode, maria_port: int, fast_count: list[int]
) -> None:
    sql = "SELECT ? + 1 AS n, ? AS s, ? AS f, ? AS z"

    def go() -> list[Any]:
        conn = mysql.connector.connect(
            host="127.0.0.1", port=maria_port, user=USER, password=PASSWORD, use_pure=True, ssl_disabled=True
        )
        pc = conn.cursor(prepared=True)
        out = []
        for i in range(6):
            pc.execute(sql, (i, f"v{i}", 1.5, None))
            out.append(pc.fetchall())
        pc.close()
        conn.close()
        return out

    rows = await asyncio.to_thread(go)
    assert [r[0][0] for r in rows] == [i + 1 for i in range(6)]
    assert [r[0][1] for r in rows] == [f"v{i}" for i in range(6)]
    assert fast_count[0] >= 4
    executed = [e for e in decisions(dbward_node) if e["sql"] == sql and e["origin"] == "execute"]
    assert [e["params"] for e in executed] == [[i, f"v{i}", 1.5, None] for i in range(6)]
    ids = {e["statement_id"] for e in executed}
    done = [e for e in completions(dbward_node) if e["statement_id"] in ids]
    assert len(done) == 6 and all(e["rows"] == 1 and e["error"] is None for e in done)


def _com_query(sql: str) -> bytes:
    body = b"\x03" + sql.encode()
    return struct.pack("<I", len(body))[:3] + b"\x00" + body


async def test_pipelined_commands_are_answered_in_order(
    dbward_node: RunningNode, maria_port: int, fast_count: list[int]
) -> None:
    def go() -> list[Any]:
        conn = connect(maria_port)
        with conn.cursor() as cur:
            for i in range(3):  # fill the decision cache
                cur.execute(f"SELECT {i} AS n")
        # three commands in one write: dbward answers them one after the other
        conn._sock.sendall(b"".join(_com_query(f"SELECT {i} AS n") for i in (7, 8, 9)))  # type: ignore[union-attr]
        out = []
        for _ in range(3):
            conn._next_seq_id = 1  # type: ignore[attr-defined]
            result = pymysql.connections.MySQLResult(conn)
            result.read()
            out.append(result.rows)
        with conn.cursor() as cur:
            cur.execute("SELECT 10 AS n")
            out.append(cur.fetchall())
        conn.close()
        return out

    rows = await asyncio.to_thread(go)
    assert rows == [((7,),), ((8,),), ((9,),), ((10,),)]
    assert [e["sql"] for e in decisions(dbward_node)][-4:] == [f"SELECT {i} AS n" for i in (7, 8, 9, 10)]


async def test_refused_statements_decided_on_the_fast_path(
    dbward_node: RunningNode, maria_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed = [0]  # statements the fast path decided and left to the session's task
    inner = MySQLSession._check

    async def counted(self: MySQLSession, statement: Any) -> Any:
        handed[0] += self._prechecked is not None
        return await inner(self, statement)

    monkeypatch.setattr(MySQLSession, "_check", counted)
    sql = "HANDLER dbward_no_such_table OPEN"

    def go() -> list[Any]:
        conn = connect(maria_port)
        errors = []
        with conn.cursor() as cur:
            for _ in range(3):
                with pytest.raises(pymysql.err.MySQLError) as ei:
                    cur.execute(sql)
                errors.append(ei.value.args[0])
            cur.execute("SELECT 2 AS n")
            errors.append(cur.fetchall())
        conn.close()
        return errors

    out = await asyncio.to_thread(go)
    assert out[:3] == [out[0]] * 3 and out[3] == ((2,),)
    decided = [e for e in decisions(dbward_node) if e["sql"] == sql]
    assert len(decided) == 3 and all(e["effect"] != "allow" for e in decided)
    assert handed[0] >= 1


async def test_client_vanishing_during_a_fast_statement(
    dbward_node: RunningNode, maria_port: int, fast_count: list[int]
) -> None:
    marker = "dbward_fast_cancel_probe"
    conn = await asyncio.to_thread(connect, maria_port)
    # the first statement fills the decision cache
    t, ended = await start_long_query(conn, marker, first=f"SELECT SLEEP(0) AS {marker}")
    assert fast_count[0] == 0  # the long one is in flight on the fast path (not finished)
    conn._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    await wait_until(lambda: not upstream_queries(marker), "dbward to KILL QUERY on the target")
    await asyncio.to_thread(t.join, 10)
    assert ended and isinstance(ended[0], BaseException)
    await wait_until(lambda: bool(dbward_node.journal.of_type("session.end")), "the session end event")
    assert "KILL QUERY" in dbward_node.journal.of_type("session.end")[-1]["reason"]
    _, done = _events_of(dbward_node, f"SELECT SLEEP(600) AS {marker}")
    assert len(done) == 1
    assert done[0]["rows"] == 1 or "interrupted" in (done[0]["error"] or "").lower()
    # the statement's end is recorded before the session's
    types = [e["type"] for e in dbward_node.journal.events]
    assert types.index("session.end") > max(
        i
        for i, e in enumerate(dbward_node.journal.events)
        if e.get("statement_id") == done[0]["statement_id"]
    )
