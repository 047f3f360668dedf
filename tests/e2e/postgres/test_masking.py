"""Masking and row limits on the wire through the PostgreSQL engine, with real clients (psql,
psycopg in text and binary, asyncpg), real PostgreSQL and the node's own catalog provider."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.conftest import PASSWORD, USER, RunningNode, pg_dsn
from tests.e2e.postgres.conftest import completions, decisions, dsn, pg_env
from tests.e2e.postgres.masking_fixtures import (
    MASK_DB,
    PROTECTED,
    fresh_mask_db,
    mask_db,
    use_masking,
)
from tests.unit.masking.corpus import CASES, BypassCase

__all__ = ["fresh_mask_db", "mask_db"]  # fixtures


def psql(port: int, sql: str, *, dbname: str = MASK_DB) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "psql",
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            USER,
            "-d",
            dbname,
            "-At",
            "-F",
            "|",
            "-c",
            sql,
        ],
        env=pg_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _exists(path: Path) -> bool:
    return path.exists()


def masked_events(node: RunningNode) -> list[dict[str, Any]]:
    return node.journal.of_type("statement.masked")


# ----------------------------------------------------------------------------- text, simple Query
async def test_psql_masks_text_results_and_leaves_other_columns(
    dbward_node: RunningNode, mask_db: str
) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    out = await asyncio.to_thread(
        psql, port, "SELECT id, name, phone, email, city FROM customers ORDER BY id; SELECT 1"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "1|Kim Minji|010-****-5678|mi***@example.com|Seoul"
    assert lines[1].startswith("2|Lee Jun|010-****-5432|")
    assert lines[2] == "1"
    ev = masked_events(dbward_node)
    assert len(ev) == 1
    cols = {c["column"]: c for c in ev[0]["columns"]}
    assert set(cols) == {"phone", "email"}
    assert cols["phone"]["rule"] == "masking:mask-phone-pg" and cols["phone"]["position"] == 3
    assert cols["phone"]["algorithm"] == "pattern phone"
    assert cols["phone"]["sources"] == ["public.customers.phone"]
    assert cols["phone"]["wire_origin"] is False
    decided = [d for d in decisions(dbward_node) if d["sql"].startswith("SELECT id, name")]
    assert ev[0]["statement_id"] == decided[0]["statement_id"]


async def test_views_functions_and_server_errors(dbward_node: RunningNode, mask_db: str) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        rows = await (await conn.execute("SELECT p, id FROM v_nested ORDER BY id")).fetchall()
        assert rows == [("*************", 1), ("*************", 2)]
        rows = await (await conn.execute("SELECT upper(email) FROM customers ORDER BY id")).fetchall()
        assert all(set(r[0]) == {"*"} for r in rows)
        # the server's error quotes the value it could not cast: dbward replaces the text
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as err:
            await conn.execute("SELECT phone::int FROM customers")
        text = str(err.value)
        assert "010-" not in text and "mask-phone-pg" in text
        # the session is still usable
        assert (await (await conn.execute("SELECT 42")).fetchone()) == (42,)


# ----------------------------------------------------------------------------- binary, extended
async def test_psycopg_binary_and_text_types_adjusted(dbward_node: RunningNode, mask_db: str) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    sql = "SELECT id, balance, born, uid, doc, card, seen, secret, note FROM accounts WHERE id = %s"
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            await cur.execute(sql, (1,))
            row = await cur.fetchone()
            assert row is not None
            assert cur.description is not None
            types = [c.type_code for c in cur.description]
            # masked numbers, dates, uuid, json: announced as text; NULL masking keeps the type
            assert types[1:6] == [25, 25, 25, 25, 25], (binary, types)
            assert types[0] == 23 and types[6] == 1184 and types[8] == 1043
            assert row[0] == 1
            assert row[1] == "*******"  # 1234.50, every character masked
            assert row[2] == "1990-**-**"  # keep_first:4 over the date's text, separators kept
            assert row[3] == "[REDACTED]"
            assert row[4] == "{}"
            assert row[5] == "************1111"
            assert row[6] is None
            assert isinstance(row[7], str) and row[7].startswith("tok_") and "secret" not in row[7]
            assert row[8] == "hello"
            # the token is deterministic within the node: equal values give equal tokens
            cur2 = conn.cursor(binary=binary)
            await cur2.execute("SELECT secret FROM accounts WHERE id = 1")
            assert (await cur2.fetchone()) == (row[7],)


async def test_asyncpg_binary_prepared_and_describe(dbward_node: RunningNode, mask_db: str) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    conn = await asyncpg.connect(
        host="127.0.0.1", port=port, user=USER, password=PASSWORD, database=MASK_DB, ssl=False
    )
    try:
        rows = await conn.fetch(
            "SELECT id, phone, balance, born, name FROM customers c JOIN accounts a USING (id) ORDER BY id"
        )
        assert [r["phone"] for r in rows] == ["010-****-5678", "010-****-5432"]
        assert rows[0]["balance"] == "*******" and rows[0]["born"].startswith("1990")
        assert rows[0]["name"] == "Kim Minji"
        stmt = await conn.prepare("SELECT phone, id FROM customers WHERE id = $1")
        assert [a.type.name for a in stmt.get_attributes()] == ["text", "int4"]
        for i, want in ((1, "010-****-5678"), (2, "010-****-5432")):
            assert (await stmt.fetchrow(i)) == (want, i)
        # the unmasked column of another schema is untouched
        assert await conn.fetchval("SELECT phone FROM other.customers") == "not personal"
        # a cursor in a transaction (Execute with a row count, PortalSuspended)
        async with conn.transaction():
            got = [r["phone"] async for r in conn.cursor("SELECT phone FROM big ORDER BY g", prefetch=50)]
        assert len(got) == 2000 and all(p.endswith("-5678") and "****" in p for p in got)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- row limit
async def test_row_limit_cuts_with_notice_and_session_stays_usable(
    dbward_node: RunningNode, mask_db: str
) -> None:
    use_masking(dbward_node, max_rows=5)
    port = await dbward_node.listen("pg")
    out = await asyncio.to_thread(psql, port, "SELECT g FROM generate_series(1, 100000) g; SELECT 'after'")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1", "2", "3", "4", "5", "after"]
    assert "dbward cut the result at 5 rows (connection policy max_rows of connection pg)" in out.stderr
    cut = [c for c in completions(dbward_node) if c["truncated"]]
    assert len(cut) == 1 and cut[0]["rows"] == 5
    notices: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        # extended protocol, binary, masked and limited at once
        cur = conn.cursor(binary=True)
        await cur.execute("SELECT g, phone FROM big WHERE g > %s ORDER BY g", (0,))
        rows = await cur.fetchall()
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
        assert all("****" in r[1] for r in rows)
        assert cur.rowcount == 5
        # pipeline: a limited statement between two others keeps the protocol in sync
        async with conn.pipeline():
            c1 = await conn.execute("SELECT 1")
            c2 = await conn.execute("SELECT g FROM generate_series(1, 50) g")
            c3 = await conn.execute("SELECT %s::text", ("tail",))
        assert (await c1.fetchall()) == [(1,)]
        assert len(await c2.fetchall()) == 5
        assert (await c3.fetchall()) == [("tail",)]
        # COPY TO STDOUT is cut too
        async with (
            conn.cursor() as cur,
            cur.copy("COPY (SELECT g FROM generate_series(1, 40) g) TO STDOUT") as copy,
        ):
            got = [row async for row in copy.rows()]
        assert len(got) == 5
    assert sum("dbward cut the result at 5 rows" in n for n in notices) == 3
    conn2 = await asyncpg.connect(
        host="127.0.0.1", port=port, user=USER, password=PASSWORD, database=MASK_DB, ssl=False
    )
    try:
        assert len(await conn2.fetch("SELECT g FROM generate_series(1, 100) g")) == 5
        async with conn2.transaction():
            got2 = [r[0] async for r in conn2.cursor("SELECT g FROM generate_series(1, 100) g", prefetch=2)]
        assert got2 == [1, 2, 3, 4, 5]
        assert await conn2.fetchval("SELECT 7") == 7
    finally:
        await conn2.close()


# ----------------------------------------------------------------------------- COPY
async def test_copy_to_stdout_masked_and_binary_refused(dbward_node: RunningNode, mask_db: str) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        async with conn.cursor() as cur:
            async with cur.copy("COPY (SELECT id, name, phone FROM customers ORDER BY id) TO STDOUT") as copy:
                rows = [r async for r in copy.rows()]
            assert rows == [("1", "Kim Minji", "010-****-5678"), ("2", "Lee Jun", "010-****-5432")]
            data = b""
            async with cur.copy("COPY customers (id, email) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
                async for chunk in copy:
                    data += bytes(chunk)
            assert data.decode().splitlines() == ["id,email", "1,mi***@example.com", "2,ju*****@example.org"]
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                async with cur.copy("COPY customers TO STDOUT WITH (FORMAT binary)") as copy:
                    async for _ in copy:
                        pass
            assert "binary COPY output cannot be masked" in str(err.value)
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)


# ----------------------------------------------------------------------------- catalog changes
async def test_renamed_table_does_not_leave_a_stale_view(
    dbward_node: RunningNode, fresh_mask_db: str
) -> None:
    use_masking(dbward_node)
    dbward_node.node.catalogs.suspect_interval = 0  # every suspicion re-reads (no rate limit here)
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        assert (await (await conn.execute("SELECT phone FROM customers WHERE id = 1")).fetchone()) == (
            "010-****-5678",
        )
        loads = dbward_node.node.catalogs.loads
        # another tool renames a table whose phone column a rule masks (schema crm, any table)
        with psycopg.connect(pg_dsn(MASK_DB), autocommit=True) as direct:
            direct.execute('ALTER TABLE crm."Contacts" RENAME TO people')
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            await conn.execute('SELECT "Phone" FROM crm.people')
        assert "not in dbward's catalog" in str(err.value)
        # the denial made dbward read the catalog again: the next attempt is masked
        cur = await conn.execute('SELECT id, "Phone" FROM crm.people')
        assert (await cur.fetchall()) == [(1, "010-****-2222")]
        assert dbward_node.node.catalogs.loads > loads
        # a table dropped and created again with the masked column moved: its OID is new, so
        # the wire origin is unknown; every column is masked until the catalog is read again
        with psycopg.connect(pg_dsn(MASK_DB), autocommit=True) as direct:
            direct.execute("DROP VIEW v_nested; DROP VIEW v_contacts; DROP TABLE customers")
            direct.execute(
                "CREATE TABLE customers (phone text, id int, name text, email text, rrn text, city text)"
            )
            direct.execute("INSERT INTO customers VALUES ('010-1234-5678', 1, 'Kim', NULL, NULL, NULL)")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        rows = await (await conn.execute("SELECT * FROM customers")).fetchall()
        assert "010-1234-5678" not in str(rows)
        assert notices and "not in dbward's catalog" in notices[0]
        rows = await (await conn.execute("SELECT * FROM customers")).fetchall()
        assert rows == [("010-****-5678", 1, "Kim", None, None, None)]
        # DDL run through dbward makes dbward read the catalog before the next statement
        await conn.execute("ALTER TABLE customers RENAME COLUMN phone TO mobile")
        await conn.execute("ALTER TABLE customers RENAME COLUMN name TO phone")
        rows = await (await conn.execute("SELECT mobile, phone FROM customers")).fetchall()
        assert rows == [("010-1234-5678", "***")]


# ----------------------------------------------------------------------------- the bypass corpus
PG_CASES = [c for c in CASES if c.dialect == "postgres"]
#: cases the engine or the connection settings refuse before masking looks at them (as clearly)
ENGINE_DENIALS = {
    "pg-copy-to-file": "refused by the setting proxy.allow_copy_program",
    "pg-do-block": "allow_procedural is off",
}


@functools.cache
def reports_search_path() -> bool:
    """PostgreSQL 18 reports search_path changes to the client (and so to dbward)."""
    with psycopg.connect(pg_dsn()) as conn:
        return conn.info.server_version >= 180000


def _run_case(conn: psycopg.Connection[Any], case: BypassCase) -> list[tuple[Any, ...]]:
    sql = case.sql.replace("shop.public.", f"{MASK_DB}.public.")
    if case.search_path:
        conn.execute("SET search_path TO " + ", ".join(case.search_path))
    if sql.upper().startswith("COPY") and "STDOUT" in sql.upper():
        data = b""
        with conn.cursor() as cur, cur.copy(sql) as copy:
            for chunk in copy:
                data += bytes(chunk)
        text = data.decode()
        if "csv" in sql.lower():
            return [tuple(r) for r in csv.reader(io.StringIO(text))]
        return [tuple(line.split("\t")) for line in text.splitlines()]
    cur = conn.execute(sql)
    return cur.fetchall() if cur.description is not None else []


@pytest.mark.parametrize("case", PG_CASES, ids=[c.id for c in PG_CASES])
async def test_bypass_corpus(dbward_node: RunningNode, mask_db: str, case: BypassCase) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")

    def run() -> tuple[list[tuple[Any, ...]] | None, str | None]:
        with psycopg.connect(dsn(port, dbname=MASK_DB)) as conn:
            try:
                return _run_case(conn, case), None
            except psycopg.Error as exc:
                return None, str(exc)
            finally:
                conn.rollback()

    rows, error = await asyncio.to_thread(run)
    text = repr(rows) + (error or "")
    for value in PROTECTED:
        assert value not in text, f"{case.id}: the unmasked value {value!r} reached the client: {text}"
    if case.expect == "deny":
        assert error is not None, f"{case.id}: expected a denial, got {rows}"
        assert (case.deny_contains or "") in error or ENGINE_DENIALS.get(case.id, "-") in error, error
        assert "denied:" in error or "statement" in error
        return
    if error is not None and case.search_path and not reports_search_path():
        # PostgreSQL before 18 does not report search_path changes, so dbward reads the name
        # under the default path, does not find it, and fails closed
        assert error.startswith("denied: dbward cannot establish the origin"), error
        return
    if error is not None:
        # only a server error of the statement itself, its text hidden when it could quote values
        assert "dbward hides the server's error text" in error, f"{case.id}: {error}"
        return
    assert rows is not None
    for row in rows:
        for i in case.clear:
            assert i < len(row)
        for i in case.masked:
            if row[i] is not None:
                assert "*" in str(row[i]) or "[REDACTED]" in str(row[i]), f"{case.id}: column {i}: {row}"


async def test_corpus_rows_differ_from_direct_connection(dbward_node: RunningNode, mask_db: str) -> None:
    """The clear columns of a masked result are what the target says (masking touched only
    the masked ones)."""
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    sql = "SELECT id, name, city, phone FROM customers ORDER BY id"
    with psycopg.connect(pg_dsn(MASK_DB)) as direct:
        plain = direct.execute(sql).fetchall()
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        got = await (await conn.execute(sql)).fetchall()
    assert [r[:3] for r in got] == [r[:3] for r in plain]
    assert [r[3] for r in got] != [r[3] for r in plain]


async def test_inference_allowed_with_flag_is_audited(dbward_node: RunningNode, mask_db: str) -> None:
    use_masking(dbward_node, masking_inference="allow_and_flag")
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        rows = await (await conn.execute("SELECT name FROM customers WHERE rrn LIKE '9001%'")).fetchall()
        assert rows == [("Kim Minji",)]
    ev = masked_events(dbward_node)
    assert len(ev) == 1 and ev[0]["columns"] == []
    assert ev[0]["inference"] == [f"{MASK_DB}.public.customers.rrn"] or ev[0]["inference"][0].endswith(
        "public.customers.rrn"
    )


async def test_sessions_without_masking_rules_read_no_catalog(dbward_node: RunningNode, mask_db: str) -> None:
    port = await dbward_node.listen("pg")  # the store's policy: no masking rules
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        assert len(await (await conn.execute("SELECT * FROM customers")).fetchall()) == 2
        cur = conn.cursor(binary=True)
        await cur.execute("SELECT phone FROM customers WHERE id = %s", (1,))
        assert (await cur.fetchone()) == ("010-1234-5678",)
    assert dbward_node.node.catalogs.loads == 0
    assert masked_events(dbward_node) == []


JAR = Path("/usr/share/java/postgresql.jar")
PROBE = Path(__file__).resolve().parents[1] / "java" / "PgMaskProbe.java"


async def test_pgjdbc_named_statements_and_cursor(dbward_node: RunningNode, mask_db: str) -> None:
    jar = JAR
    if not _exists(jar):
        pytest.fail(f"{jar} is missing: install the Debian package libpostgresql-jdbc-java")
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    probe = PROBE
    proc = await asyncio.create_subprocess_exec(
        "java",
        "-cp",
        str(jar),
        str(probe),
        str(port),
        USER,
        PASSWORD,
        MASK_DB,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 120)
    out = out_b.decode()
    assert proc.returncode == 0, err_b.decode() + out
    lines = out.splitlines()
    assert lines[0] == "types=text,text,text"
    rows = [line for line in lines if line.startswith("row=")]
    assert (
        rows
        == [
            "row=1|010-****-5678|*******|1990-**-**|Kim Minji",
            "row=2|010-****-5432|*****|1985-**-**|Lee Jun",
        ]
        * 3
    )
    assert "cursor=2000,true" in lines


async def test_table_swapped_under_a_known_name_is_masked_by_wire_origin(
    dbward_node: RunningNode, fresh_mask_db: str
) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB), autocommit=True) as conn:
        assert len(await (await conn.execute("SELECT * FROM archive")).fetchall()) == 0
        # another tool swaps the tables: "archive" now holds the customers (and their phones),
        # while dbward's catalog still says archive has columns a and b
        with psycopg.connect(pg_dsn(MASK_DB), autocommit=True) as direct:
            direct.execute(
                "ALTER TABLE archive RENAME TO tmp; ALTER TABLE customers RENAME TO archive; "
                "ALTER TABLE tmp RENAME TO customers"
            )
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            await cur.execute("SELECT * FROM archive ORDER BY id")
            rows = await cur.fetchall()
            assert len(rows) == 2
            for value in PROTECTED:
                assert value not in str(rows)
            assert rows[0][1] == "Kim Minji" and rows[0][2] == "010-****-5678"
    ev = masked_events(dbward_node)
    assert ev and all(c["wire_origin"] for c in ev[-1]["columns"])


async def test_psql_metadata_commands_in_a_masking_session(dbward_node: RunningNode, mask_db: str) -> None:
    use_masking(dbward_node)
    port = await dbward_node.listen("pg")
    out = await asyncio.to_thread(psql, port, "\\d customers")
    assert out.returncode == 0, out.stderr
    assert "phone|text|||" in out.stdout.splitlines()
    out = await asyncio.to_thread(psql, port, "\\dt")
    assert out.returncode == 0, out.stderr
    assert "accounts" in out.stdout


async def test_row_limit_cancels_the_rest_of_a_large_result(dbward_node: RunningNode, mask_db: str) -> None:
    """The only statement of a simple Query outside a transaction block: dbward cancels the
    rest on the target instead of reading a hundred million rows; inside a transaction block
    it reads and drops the rest, so the transaction is not aborted."""
    use_masking(dbward_node, max_rows=3)
    port = await dbward_node.listen("pg")
    huge = "SELECT a.g FROM generate_series(1, 10000) a(g), generate_series(1, 10000) b(g)"
    out = await asyncio.to_thread(psql, port, huge)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1", "1", "1"]
    assert "dbward cut the result at 3 rows" in out.stderr and "canceling" not in out.stderr
    done = completions(dbward_node)[-1]
    assert done["truncated"] and done["rows"] == 3 and done["error"] is None
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname=MASK_DB)) as conn:
        cur = await conn.execute("SELECT g FROM generate_series(1, 1000) g")  # in a transaction
        assert len(await cur.fetchall()) == 3
        await conn.execute("CREATE TEMP TABLE t_after (x int)")
        await conn.commit()  # the transaction was not aborted
        assert conn.info.transaction_status.name == "IDLE"


async def test_row_limit_counts_over_every_fetch_of_a_cursor(dbward_node: RunningNode, mask_db: str) -> None:
    use_masking(dbward_node, max_rows=5)
    port = await dbward_node.listen("pg")
    # psql's FETCH_COUNT runs DECLARE ... CURSOR and FETCH FORWARD 2 until no row is left
    out = await asyncio.to_thread(
        subprocess.run,
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", MASK_DB, "-At"],
        input="\\set FETCH_COUNT 2\nSELECT g FROM generate_series(1, 20) g;\nSELECT 'after';\n",
        env=pg_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["1", "2", "3", "4", "5", "after"]
    fetches = [d for d in decisions(dbward_node) if d["sql"].upper().startswith("FETCH")]
    assert fetches  # the cursor was used
