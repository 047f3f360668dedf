"""The real policy, enforced through both engines with real clients.

A read-only user can SELECT and is refused writes and DDL with a native error and an intact
session, including when the write hides in a multi-statement, a prepared statement, a CTE,
an EXPLAIN ANALYZE / MariaDB ANALYZE, an executable comment or a routine call; an expired
grant stops working; a grant limited to an IP range refuses other addresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import mysql.connector
import psycopg
import pymysql
import pytest
from pymysql.constants import CLIENT

from dbward.store import repo
from tests.conftest import RunningNode

T = TypeVar("T")
READER, READER_PW = "reader", "reader-password-1"


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


@pytest.fixture
async def reader_node(dbward_node: RunningNode) -> RunningNode:
    store = dbward_node.store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, READER, password=READER_PW)
        await repo.create_user(s, store.box, "late", password="late-password-1")
        await repo.create_user(s, store.box, "remote", password="remote-password-1")
        for conn in ("maria", "pg"):
            await repo.create_grant(
                s,
                f"reader-{conn}",
                subject_type="user",
                subject_name=READER,
                connection=conn,
                privileges=["read-only"],
            )
            await repo.create_grant(
                s,
                f"late-{conn}",
                subject_type="user",
                subject_name="late",
                connection=conn,
                privileges=["read-only"],
                expires_at=datetime.now(UTC) - timedelta(minutes=1),
            )
            await repo.create_grant(
                s,
                f"remote-{conn}",
                subject_type="user",
                subject_name="remote",
                connection=conn,
                privileges=["read-only"],
                conditions={"client_ips": ["10.0.0.0/8"]},
            )
    return dbward_node


def _my(
    port: int, user: str = READER, password: str = READER_PW, **kw: Any
) -> pymysql.connections.Connection:
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        database="dbward_test",
        ssl_disabled=True,
        autocommit=True,
        **kw,
    )


MYSQL_REFUSED = [
    "INSERT INTO customers (id, name) VALUES (99, 'x')",
    "UPDATE customers SET name = 'x' WHERE id = 1",
    "DELETE FROM customers WHERE id = 1",
    "CREATE TABLE sneaky (a int)",
    "DROP TABLE customers",
    "/*!50000 DELETE FROM customers */",
    "ANALYZE DELETE FROM customers WHERE id = 1",
    "CALL refresh_everything()",
    "SELECT 1; DELETE FROM customers",
]


async def test_mysql_read_only_user(reader_node: RunningNode) -> None:
    port = await reader_node.listen("maria")

    def go() -> list[tuple[str, int, str]]:
        out: list[tuple[str, int, str]] = []
        with _my(port, client_flag=CLIENT.MULTI_STATEMENTS) as c, c.cursor() as cur:
            cur.execute("SELECT id, name FROM customers ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
            for sql in MYSQL_REFUSED:
                with pytest.raises(pymysql.err.OperationalError) as err:
                    cur.execute(sql)
                out.append((sql, err.value.args[0], err.value.args[1]))
                cur.execute("SELECT COUNT(*) FROM customers")  # the session stays usable
                assert cur.fetchone() == (3,)
        return out

    refused = await in_thread(go)
    for sql, errno, message in refused:
        assert errno == 1142, (sql, errno, message)
        assert message.startswith("denied"), (sql, message)
        assert "reader" in message, message
    assert any("needs read-write" in m for _, _, m in refused)
    # Nothing refused reached the database, and every refusal is in the trail.
    denials = [e["sql"] for e in reader_node.journal.of_type("statement.decision") if e["effect"] == "deny"]
    # a multi-statement is decided statement by statement
    assert set(MYSQL_REFUSED) - {"SELECT 1; DELETE FROM customers"} <= set(denials)
    assert "DELETE FROM customers" in denials


async def test_mysql_prepared_write_is_refused(reader_node: RunningNode) -> None:
    port = await reader_node.listen("maria")

    def go() -> str:
        c = mysql.connector.connect(
            host="127.0.0.1",
            port=port,
            user=READER,
            password=READER_PW,
            database="dbward_test",
            ssl_disabled=True,
            use_pure=True,
        )
        try:
            cur = c.cursor(prepared=True)
            with pytest.raises(mysql.connector.Error) as err:
                cur.execute("DELETE FROM customers WHERE id = %s", (1,))
            cur = c.cursor(prepared=True)
            cur.execute("SELECT name FROM customers WHERE id = %s", (1,))
            assert cur.fetchall() == [("Kim Minji",)]
            return str(err.value)
        finally:
            c.close()

    message = await in_thread(go)
    assert "1142" in message and "read-write" in message


PG_REFUSED = [
    "INSERT INTO customers (id, name) VALUES (99, 'x')",
    "DELETE FROM customers WHERE id = 1",
    "CREATE TABLE sneaky (a int)",
    "WITH d AS (DELETE FROM customers RETURNING *) SELECT count(*) FROM d",
    "EXPLAIN ANALYZE DELETE FROM customers",
    "SELECT 1; UPDATE customers SET name = 'x'",
    "DO $$ BEGIN DELETE FROM customers; END $$",
    "COPY customers FROM PROGRAM 'cat /etc/passwd'",
]


async def test_postgres_read_only_user(reader_node: RunningNode) -> None:
    port = await reader_node.listen("pg")

    def go() -> list[tuple[str, str | None, str]]:
        out: list[tuple[str, str | None, str]] = []
        dsn = f"host=127.0.0.1 port={port} user={READER} password={READER_PW} dbname=dbward_test sslmode=disable"
        with psycopg.connect(dsn, autocommit=True) as c:
            assert [r[0] for r in c.execute("SELECT id FROM customers ORDER BY id").fetchall()] == [1, 2, 3]
            for sql in PG_REFUSED:
                with pytest.raises(psycopg.Error) as err:
                    c.execute(sql)
                out.append((sql, err.value.sqlstate, str(err.value)))
                assert c.execute("SELECT count(*) FROM customers").fetchone() == (3,)
            # prepared (extended protocol, server-side prepared statement)
            with pytest.raises(psycopg.Error) as err:
                c.execute("DELETE FROM customers WHERE id = %s", (1,), prepare=True)
            out.append(("prepared DELETE", err.value.sqlstate, str(err.value)))
            assert c.execute("SELECT name FROM customers WHERE id = %s", (2,), prepare=True).fetchone() == (
                "Lee Jun",
            )
        return out

    refused = await in_thread(go)
    for sql, state, message in refused:
        assert state == "42501", (sql, state, message)
        assert "denied" in message, (sql, message)


async def test_expired_grant_and_ip_range(reader_node: RunningNode) -> None:
    maria = await reader_node.listen("maria")
    pg = await reader_node.listen("pg")

    def go() -> list[str]:
        messages = []
        for user in ("late", "remote"):
            with pytest.raises(pymysql.err.OperationalError) as err:
                _my(maria, user=user, password=f"{user}-password-1")
            messages.append(str(err.value))
            with pytest.raises(psycopg.OperationalError) as perr:
                psycopg.connect(
                    f"host=127.0.0.1 port={pg} user={user} password={user}-password-1 dbname=dbward_test sslmode=disable"
                )
            messages.append(str(perr.value))
        return messages

    late_my, late_pg, remote_my, remote_pg = await in_thread(go)
    assert "1044" in late_my and "expired" in late_my
    assert "expired" in late_pg
    assert "1044" in remote_my and "10.0.0.0/8" in remote_my
    assert "10.0.0.0/8" in remote_pg
    rejected = reader_node.journal.of_type("session.rejected")
    assert {e["user"] for e in rejected} >= {"late", "remote"}
