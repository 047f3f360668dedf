"""psycopg 3 through dbward: simple, prepared, pipeline, COPY, binary, server-side cursors, denials."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from tests.conftest import RunningNode
from tests.e2e.postgres.conftest import completions, decisions, dsn


async def test_simple_prepared_binary(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(
        dsn(port, application_name="probe-app"), autocommit=True
    ) as conn:
        cur = await conn.execute("SELECT id, name, balance FROM customers ORDER BY id")
        rows = await cur.fetchall()
        assert rows[0] == (1, "Kim Minji", Decimal("1200.50"))
        # server-side parameters, prepared after the first use (prepare=True forces it)
        for i in (1, 2, 3):
            cur = await conn.execute("SELECT name FROM customers WHERE id = %s", (i,), prepare=True)
            assert (await cur.fetchone()) is not None
        cur = conn.cursor(binary=True)
        await cur.execute(
            "SELECT id, created, balance, %s::text, %s::int8 FROM customers WHERE id = %s",
            ("héllo", 2**40, 1),
        )
        row = await cur.fetchone()
        assert row == (1, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), Decimal("1200.50"), "héllo", 2**40)
    seen = decisions(dbward_node)
    prepares = [d for d in seen if d["origin"] == "prepare"]
    executes = [d for d in seen if d["origin"] == "execute"]
    assert any(d["sql"] == "SELECT name FROM customers WHERE id = $1" for d in prepares)
    by_id = [d["params"] for d in executes if d["sql"] == "SELECT name FROM customers WHERE id = $1"]
    assert by_id == [[1], [2], [3]]  # psycopg binds Python ints in binary (int2/int4/int8)
    binary = [d for d in executes if "::int8" in d["sql"]]
    assert binary and binary[0]["params"] == ["héllo", 2**40, 1]
    assert dbward_node.journal.of_type("session.start")[-1]["client_program"] == "probe-app"
    assert all(c["error"] is None for c in completions(dbward_node))


async def test_pipeline_mode_and_copy(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port), autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS pipe_t")
        await conn.execute("CREATE TABLE pipe_t (id int PRIMARY KEY, v text)")
        async with conn.pipeline():
            cur = conn.cursor()
            for i in range(20):
                await cur.execute("INSERT INTO pipe_t VALUES (%s, %s)", (i, f"v{i}"))
            await cur.execute("SELECT count(*) FROM pipe_t")
        assert (await cur.fetchone()) == (20,)
        async with conn.cursor() as cur:
            async with cur.copy("COPY pipe_t (id, v) FROM STDIN") as copy:
                for i in range(100, 3100):
                    await copy.write_row((i, f"row {i}"))
            got = []
            async with cur.copy("COPY (SELECT id FROM pipe_t WHERE id >= 100 ORDER BY id) TO STDOUT") as copy:
                async for row in copy.rows():
                    got.append(int(row[0]))
            assert got == list(range(100, 3100))
        await conn.execute("DROP TABLE pipe_t")
    inserts = [
        d
        for d in decisions(dbward_node)
        if d["sql"].startswith("INSERT INTO pipe_t") and d["origin"] == "execute"
    ]
    assert len(inserts) == 20
    assert [c["rows"] for c in completions(dbward_node)].count(3000) == 2


async def test_server_side_cursor(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port)) as conn:
        async with conn.cursor(name="big") as cur:
            cur.itersize = 1000
            await cur.execute("SELECT g FROM generate_series(1, 5000) g")
            total = 0
            async for (g,) in cur:
                total += g
        assert total == 5000 * 5001 // 2
        await conn.commit()
    stmts = dbward_node.statements()
    assert any(s.startswith('DECLARE "big"') for s in stmts)
    assert sum(1 for s in stmts if s.startswith('FETCH FORWARD 1000 FROM "big"')) >= 5


async def test_denied_statement_keeps_session_usable(deny_deletes: RunningNode) -> None:
    node = deny_deletes
    port = await node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
            await conn.execute("DELETE FROM customers WHERE id = 3")
        assert "rule no-deletes forbids DELETE" in str(exc.value)
        # a multi-statement Query with one denied statement is refused whole
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT 1; DELETE FROM customers; SELECT 2", prepare=False)
        cur = await conn.execute("SELECT count(*) FROM customers")
        assert (await cur.fetchone()) == (3,)
        # extended protocol with parameters: refused at Parse
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("DELETE FROM customers WHERE id = %s", (3,))
        cur = await conn.execute("SELECT name FROM customers WHERE id = %s", (3,))
        assert (await cur.fetchone()) == ("Park Ara",)
        # in a pipeline: the error arrives in order, the rest until Sync is skipped, then all is well
        async with conn.pipeline() as p:
            c1 = await conn.execute("SELECT 1")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("DELETE FROM customers WHERE id = %s", (1,))
                await p.sync()
            assert (await c1.fetchone()) == (1,)
        cur = await conn.execute("SELECT count(*) FROM customers")
        assert (await cur.fetchone()) == (3,)
        # inside a transaction the refusal aborts it, as a permission error from the server would
        async with conn.transaction():
            await conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with conn.transaction():
                await conn.execute("DELETE FROM customers")
        assert (await (await conn.execute("SELECT 42")).fetchone()) == (42,)
    denied = [d for d in decisions(node) if d["effect"] == "deny"]
    assert len(denied) == 5
    assert all("DELETE" in d["sql"] for d in denied)
    assert all(d["rule_ids"] == ["rule:no-deletes"] for d in denied)


async def test_async_notifications_and_notices(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    notices: list[str] = []
    async with (
        await psycopg.AsyncConnection.connect(dsn(port), autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(dsn(port), autocommit=True) as sender,
    ):
        listener.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        await listener.execute("LISTEN dbward_chan")
        await sender.execute("NOTIFY dbward_chan, 'hello through dbward'")
        gen = listener.notifies(timeout=10, stop_after=1)
        got = [n async for n in gen]
        assert got and got[0].payload == "hello through dbward" and got[0].channel == "dbward_chan"
        await listener.execute("DROP TABLE IF EXISTS no_such_table_for_a_notice")
        assert notices == ['table "no_such_table_for_a_notice" does not exist, skipping']
        await listener.execute("SET application_name = 'renamed'")
        assert listener.info.parameter_status("application_name") == "renamed"
        await listener.execute("SELECT 'after rename'")
        # the policy sees what the target reports about the session
        infos = {live.info.client_program: live.info for live in dbward_node.node.sessions.list()}
        assert infos["renamed"].attributes["server_version"] == listener.info.parameter_status(
            "server_version"
        )
        with pytest.raises(psycopg.errors.UndefinedTable) as exc:
            await listener.execute("SELECT * FROM no_such_table")
        assert exc.value.diag.sqlstate == "42P01"
    failed = [c for c in completions(dbward_node) if c["error_code"] == "42P01"]
    assert len(failed) == 1
    renamed = [d for d in decisions(dbward_node) if d["sql"] == "SELECT 'after rename'"]
    assert renamed[0]["client_program"] == "renamed"


async def test_large_values_both_ways_and_errors_in_a_pipeline(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    big = "y" * 3_000_000
    async with await psycopg.AsyncConnection.connect(dsn(port), autocommit=True) as conn:
        # a DataRow larger than a relay chunk, and a Bind parameter of megabytes
        cur = await conn.execute("SELECT repeat('x', 5000000), length(%s::text)", (big,))
        row = await cur.fetchone()
        assert row is not None and len(row[0]) == 5_000_000 and row[1] == 3_000_000
        await conn.execute("CREATE TEMP TABLE bigcopy (v text)")
        async with conn.cursor().copy("COPY bigcopy FROM STDIN") as copy:
            await copy.write(("z" * 2_000_000 + "\n") * 3)  # CopyData messages larger than a chunk
        cur = await conn.execute("SELECT count(*), sum(length(v)) FROM bigcopy")
        assert (await cur.fetchone()) == (3, 6_000_000)
        # a target error inside a pipeline: the rest until Sync is skipped, then all is well
        await conn.execute("CREATE TEMP TABLE uniq (id int PRIMARY KEY)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.pipeline():
                await conn.execute("INSERT INTO uniq VALUES (%s)", (1,))
                await conn.execute("INSERT INTO uniq VALUES (%s)", (1,))
                await conn.execute("INSERT INTO uniq VALUES (%s)", (2,))
        cur = await conn.execute("SELECT count(*) FROM uniq")
        assert (await cur.fetchone()) == (0,)  # the implicit transaction was rolled back
    done = completions(dbward_node)
    assert [c["error_code"] for c in done if c["error_code"] in ("23505", "skipped")] == [
        "23505",
        "skipped",
        "skipped",
    ]  # Parse and Execute of the third
    decided = [d for d in decisions(dbward_node) if d["sql"].startswith("SELECT repeat")]
    assert decided and decided[-1]["params"] == [big]
