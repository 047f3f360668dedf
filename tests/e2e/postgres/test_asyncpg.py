"""asyncpg through dbward: extended protocol and binary formats throughout."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from tests.conftest import RunningNode
from tests.e2e.postgres.conftest import completions, decisions, url


async def test_asyncpg_extended_binary(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    conn = await asyncpg.connect(url(port), ssl=False)
    try:
        rows = await conn.fetch(
            "SELECT id, name, created FROM customers WHERE id IN ($1, $2) ORDER BY id", 1, 3
        )
        assert [(r["id"], r["name"]) for r in rows] == [(1, "Kim Minji"), (3, "Park Ara")]
        assert rows[0]["created"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        u = uuid.UUID("12345678-1234-5678-1234-567812345678")
        got = await conn.fetchrow(
            "SELECT $1::uuid AS u, $2::bool AS b, $3::float8 AS f, $4::text AS t, $5::date AS d, $6::bytea AS x",
            u,
            True,
            2.5,
            "naïve",
            dt.date(2024, 5, 6),
            b"\x00\xff",
        )
        assert tuple(got) == (u, True, 2.5, "naïve", dt.date(2024, 5, 6), b"\x00\xff")
        stmt = await conn.prepare("SELECT name FROM customers WHERE id = $1")
        assert [await stmt.fetchval(i) for i in (1, 2)] == ["Kim Minji", "Lee Jun"]
        await conn.executemany("SELECT $1::int + $2::int", [(1, 2), (3, 4), (5, 6)])
        async with conn.transaction():
            cur = conn.cursor("SELECT g FROM generate_series(1, 1000) g", prefetch=100)
            assert sum([r["g"] async for r in cur]) == 500500
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.fetch("SELECT * FROM nope_table")
        assert await conn.fetchval("SELECT 7") == 7
    finally:
        await conn.close()
    seen = decisions(dbward_node)
    params = [d["params"] for d in seen if d["origin"] == "execute" and "$1::uuid" in d["sql"]]
    assert params == [[str(u), True, 2.5, "naïve", "2024-05-06", "\\x00ff"]]
    assert [
        d["params"] for d in seen if d["sql"] == "SELECT $1::int + $2::int" and d["origin"] == "execute"
    ] == [[1, 2], [3, 4], [5, 6]]
    assert any(c["error_code"] == "42P01" for c in completions(dbward_node))


async def test_asyncpg_denied_then_usable(deny_deletes: RunningNode) -> None:
    port = await deny_deletes.listen("pg")
    conn = await asyncpg.connect(url(port), ssl=False)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no-deletes"):
            await conn.execute("DELETE FROM customers WHERE id = $1", 2)
        assert await conn.fetchval("SELECT count(*) FROM customers") == 3
    finally:
        await conn.close()
