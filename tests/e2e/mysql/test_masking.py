"""Masking and row limits on the wire through the MySQL/MariaDB engine, with real clients (the
mariadb CLI, PyMySQL over the text protocol, mysql-connector-python prepared statements over the
binary protocol), real MariaDB and the node's own catalog provider (``proxy/catalog.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mysql.connector
import pymysql
import pytest

from dbward.domain import TlsMode
from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.patterns import BUILTIN
from dbward.policy.evaluator import PolicyEvaluator
from dbward.policy.model import ColumnMask, ConnectionPolicy, Decision, MaskingPlan
from dbward.proxy.mysql_upstream import UpstreamConnection, connect_upstream, read_packet
from dbward.store.policy_source import StorePolicyProvider
from dbward.wire.mysql.constants import (
    CURSOR_TYPE_READ_ONLY,
    PROXY_CAPABILITIES,
    Capability,
    FieldType,
    ServerStatus,
)
from dbward.wire.mysql.messages import ColumnDefinition41, EOFPacket, OKPacket, StmtPrepareOK
from dbward.wire.mysql.packets import Packet, encode_packet
from dbward.wire.mysql.rows import decode_binary_row
from dbward.wire.mysql.scanner import ResponseKind, ResponseScanner
from tests.conftest import PASSWORD, USER, RunningNode, mysql_root
from tests.e2e.mysql.conftest import completions, decisions, run
from tests.e2e.postgres.masking_fixtures import WithMasking
from tests.unit.masking.corpus import CASES, MASKING, MYSQL_DDL, BypassCase

T = TypeVar("T")

#: the corpus's database (its rules and three-part names say "shop")
SHOP = "shop"

TYPED_DDL = """
CREATE TABLE shop.accounts (id INT PRIMARY KEY, balance DECIMAL(12,2), born DATE, seen DATETIME(3),
                            card BIGINT UNSIGNED, doc JSON, secret VARCHAR(40), raw VARBINARY(16),
                            score DOUBLE, t TIME, note VARCHAR(20), yr YEAR, kind ENUM('a','b'));
INSERT INTO shop.accounts VALUES
  (1, 1234.50, '1990-01-01', '2024-01-02 03:04:05.678', 4111111111111111, '{"k": "v1"}', 'top secret',
   x'00ff10', 3.25, '12:34:56', 'hello', 1999, 'a'),
  (2, -7.25, '1985-05-05', NULL, 5500000000000004, '{"k": "v2"}', NULL, x'41', -1.5, '-01:00:00',
   'world', 2001, 'b');
CREATE TABLE shop.big (g INT PRIMARY KEY, phone VARCHAR(20));
INSERT INTO shop.big SELECT seq, concat('010-', lpad(seq % 10000, 4, '0'), '-5678') FROM seq_1_to_2000;
"""

TYPED_RULES: list[dict[str, Any]] = [
    {"name": "acc-balance", "schema": SHOP, "table": "accounts", "column": "balance", "algorithm": "full"},
    {"name": "acc-born", "schema": SHOP, "table": "accounts", "column": "born", "algorithm": "keep_first:4"},
    {"name": "acc-seen", "schema": SHOP, "table": "accounts", "column": "seen", "algorithm": "null"},
    {"name": "acc-card", "schema": SHOP, "table": "accounts", "column": "card", "algorithm": "keep_last:4"},
    {"name": "acc-doc", "schema": SHOP, "table": "accounts", "column": "doc", "algorithm": "fixed:{}"},
    {"name": "acc-secret", "schema": SHOP, "table": "accounts", "column": "secret", "algorithm": "token"},
    {"name": "acc-raw", "schema": SHOP, "table": "accounts", "column": "raw", "algorithm": "redact"},
    {"name": "acc-score", "schema": SHOP, "table": "accounts", "column": "score", "algorithm": "full"},
    {"name": "acc-t", "schema": SHOP, "table": "accounts", "column": "t", "algorithm": "full"},
    {"name": "acc-yr", "schema": SHOP, "table": "accounts", "column": "yr", "algorithm": "full"},
    {"name": "acc-kind", "schema": SHOP, "table": "accounts", "column": "kind", "algorithm": "full"},
    {"name": "big-phone", "schema": SHOP, "table": "big", "column": "phone", "pattern": "phone"},
]

#: every value of a protected column of the corpus data: none may reach a client as it is
PROTECTED = (
    "010-1234-5678",
    "010-9876-5432",
    "minji@example.com",
    "jun.lee@example.org",
    "900101-1234567",
    "850505-2345678",
)


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def reset_shop() -> None:
    conn = mysql_root()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {SHOP}")
        for stmt in (MYSQL_DDL + TYPED_DDL).split(";"):
            if stmt.strip():
                cur.execute(stmt)
    conn.close()


@pytest.fixture(scope="module")
def shop(mysql_upstream: None) -> Iterator[str]:
    reset_shop()
    yield SHOP


def use_masking(node: RunningNode, *, max_rows: int | None = None, **conn: Any) -> PolicyEvaluator:
    """Make ``node`` decide with the store's policy plus the corpus's masking rules and the typed
    ones (and settings of connection ``maria``), with the node's own catalog provider."""
    connections: tuple[ConnectionPolicy, ...] = ()
    if max_rows is not None or conn:
        connections = (ConnectionPolicy(connection="maria", max_rows=max_rows, **conn),)
    masking = {"patterns": MASKING["patterns"], "rules": list(MASKING["rules"]) + TYPED_RULES}  # type: ignore[call-overload]
    provider = WithMasking(StorePolicyProvider(node.store), masking, connections)
    evaluator = PolicyEvaluator(provider, catalog=node.node.catalogs)
    node.node.gate.policy = evaluator
    return evaluator


def connect(port: int, **kw: Any) -> pymysql.connections.Connection:
    kw.setdefault("ssl_disabled", True)
    kw.setdefault("database", SHOP)
    return pymysql.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, autocommit=True, **kw)


def query(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def masked_events(node: RunningNode) -> list[dict[str, Any]]:
    return node.journal.of_type("statement.masked")


def cli(port: int, *args: str) -> list[str]:
    return ["mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", USER, f"-p{PASSWORD}", "--skip-ssl", *args]


# ----------------------------------------------------------------------------- text protocol
async def test_pymysql_masks_text_results_and_leaves_other_columns(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    use_masking(dbward_node)

    def go() -> list[tuple[Any, ...]]:
        with connect(maria_port) as c:
            return query(c, "SELECT id, name, phone, email, city FROM customers ORDER BY id")

    rows = await in_thread(go)
    assert rows[0] == (1, "Kim Minji", "010-****-5678", "mi***@example.com", "Seoul")
    assert rows[1][:3] == (2, "Lee Jun", "010-****-5432") and rows[1][4] == "Busan"
    assert "jun.lee@example.org" not in rows[1]
    ev = masked_events(dbward_node)
    assert len(ev) == 1
    cols = {c["column"]: c for c in ev[0]["columns"]}
    assert set(cols) == {"phone", "email"}
    assert cols["phone"]["rules"] == ["masking:mask-phone"]
    assert cols["phone"]["algorithm"] == "pattern phone"
    assert cols["phone"]["position"] == 3 and cols["phone"]["wire_origin"] is False
    decided = [d for d in decisions(dbward_node) if d["sql"].startswith("SELECT id, name, phone")]
    assert ev[0]["statement_id"] == decided[0]["statement_id"]
    done = [c for c in completions(dbward_node) if c["statement_id"] == decided[0]["statement_id"]]
    assert done[0]["rows"] == 2 and done[0]["truncated"] is False


ACCOUNTS_MASKED = [
    (
        1,
        "*******",
        "1990-**-**",
        None,
        "************1111",
        "{}",
        None,
        "[REDACTED]",
        "****",
        "********",
        "hello",
        "****",
        "*",
    ),
    (
        2,
        "*****",
        "1985-**-**",
        None,
        "************0004",
        "{}",
        None,
        "[REDACTED]",
        "****",
        "*********",
        "world",
        "****",
        "*",
    ),
]
#: result columns of `SELECT * FROM accounts` announced as VAR_STRING once masked
RETYPED = {"balance", "born", "card", "doc", "secret", "raw", "score", "t", "yr", "kind"}
VAR_STRING = 253


def _check_accounts(rows: list[tuple[Any, ...]]) -> None:
    """The masked `accounts` rows: every masked value as its rule says, unmasked ones as stored."""
    assert len(rows) == 2
    for got, want in zip(rows, ACCOUNTS_MASKED, strict=True):
        token = got[6]
        assert got[:6] == want[:6] and got[7:] == want[7:]
        if want[0] == 1:
            assert isinstance(token, str) and token.startswith("tok_") and "secret" not in token
        else:
            assert token is None  # NULL stays NULL


async def test_typed_columns_text_and_binary_protocol(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    """Masked numbers, decimals, dates, times, JSON, binary, ENUM and YEAR come back as strings
    announced as VAR_STRING; a NULL mask keeps the type; the same over COM_QUERY (PyMySQL) and
    COM_STMT_EXECUTE (mysql-connector prepared statements, pure Python and C extension)."""
    use_masking(dbward_node)
    sql = "SELECT * FROM accounts ORDER BY id"

    def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with connect(maria_port) as c, c.cursor() as cur:
            cur.execute(sql)
            out["text"] = list(cur.fetchall())
            out["text_types"] = {d[0]: d[1] for d in cur.description}
            cur.execute("SELECT secret FROM accounts WHERE id = 1")
            out["token_again"] = cur.fetchone()
        for pure in (True, False):
            conn = mysql.connector.connect(
                host="127.0.0.1",
                port=maria_port,
                user=USER,
                password=PASSWORD,
                database=SHOP,
                use_pure=pure,
                ssl_disabled=True,
            )
            pc = conn.cursor(prepared=True)
            pc.execute("SELECT * FROM accounts WHERE id > ? ORDER BY id", (0,))
            out[f"binary-{pure}"] = list(pc.fetchall())
            out[f"binary-types-{pure}"] = {d[0]: d[1] for d in pc.description or ()}
            pc.execute("SELECT id, note FROM accounts WHERE id = ?", (2,))
            out[f"after-{pure}"] = pc.fetchall()
            pc.close()
            conn.close()
        return out

    out = await in_thread(go)
    _check_accounts(out["text"])
    assert out["token_again"] == (out["text"][0][6],)  # deterministic tokens
    for types in (out["text_types"], out["binary-types-True"], out["binary-types-False"]):
        assert {n for n, t in types.items() if t == VAR_STRING} == RETYPED | {"note"}
        assert types["id"] == 3 and types["seen"] == 12  # untouched; NULL mask keeps DATETIME
    for pure in (True, False):
        assert out[f"binary-{pure}"] == out["text"], pure
        assert out[f"after-{pure}"] == [(2, "world")]
    ev = masked_events(dbward_node)
    assert [len(e["columns"]) for e in ev] == [11, 1, 11, 11]  # one per masked execution
    for e in (ev[0], ev[2], ev[3]):
        cols = {c["column"]: c for c in e["columns"] if c["column"] in RETYPED | {"seen"}}
        assert set(cols) == RETYPED | {"seen"}
        assert cols["seen"]["algorithm"] == "null" and cols["card"]["rules"] == ["masking:acc-card"]


async def test_mariadb_cli_masks_and_cut_warning(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    """The mariadb client in table mode: masked values, a cut result with dbward's warning
    (fetched by the client's own SHOW WARNINGS), then further statements in the session."""
    use_masking(dbward_node, max_rows=3)
    script = (
        "SELECT g, phone FROM big ORDER BY g;\n"
        "SELECT id, name, phone FROM customers ORDER BY id;\n"
        "SELECT count(*) FROM big;\n"
    )
    res = await run(*cli(maria_port, "--show-warnings", "--table", SHOP), stdin=script)
    assert res.rc == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "| 3 | 010-****-5678 |" in lines and "| 4 | 010-****-5678 |" not in lines
    assert (
        "Warning (Code 1105): dbward cut the result at 3 rows (connection policy max_rows of connection "
        "maria); the remaining rows were not sent"
    ) in lines
    assert "|  1 | Kim Minji | 010-****-5678 |" in lines and "|  2 | Lee Jun   | 010-****-5432 |" in lines
    assert "|     2000 |" in lines  # an aggregate has one row: not cut
    assert "010-1234-5678" not in res.stdout
    done = {c["statement_id"]: c for c in completions(dbward_node)}
    by_sql = {d["sql"]: done[d["statement_id"]] for d in decisions(dbward_node) if d["statement_id"] in done}
    assert by_sql["SELECT g, phone FROM big ORDER BY g"]["truncated"] is True
    assert by_sql["SELECT g, phone FROM big ORDER BY g"]["rows"] == 3
    assert by_sql["SELECT count(*) FROM big"]["truncated"] is False


async def test_row_limit_cuts_text_binary_and_multi_results(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    """max_rows cuts every result set at N rows over both protocols; the client sees a complete
    result with one more warning, SHOW WARNINGS says why, and the session stays usable."""
    use_masking(dbward_node, max_rows=5)

    def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        flag = pymysql.constants.CLIENT.MULTI_STATEMENTS
        with connect(maria_port, client_flag=flag) as c, c.cursor() as cur:
            cur.execute("SELECT g FROM big ORDER BY g")
            out["rows"] = cur.fetchall()
            out["warnings"] = cur._result.warning_count if cur._result else None
            cur.execute("SHOW WARNINGS")
            out["show"] = cur.fetchall()
            cur.execute(
                "SELECT g, phone FROM big WHERE g > 1990 ORDER BY g; SELECT id FROM orders ORDER BY id"
            )
            out["multi"] = [cur.fetchall()]
            while cur.nextset():
                out["multi"].append(cur.fetchall())
            cur.execute("SELECT 7")
            out["after"] = cur.fetchall()
            cur.execute("SHOW WARNINGS")
            out["show_after"] = cur.fetchall()
        conn = mysql.connector.connect(
            host="127.0.0.1", port=maria_port, user=USER, password=PASSWORD, database=SHOP, ssl_disabled=True
        )
        pc = conn.cursor(prepared=True)
        pc.execute("SELECT g, phone FROM big WHERE g > ? ORDER BY g", (100,))
        out["binary"] = pc.fetchall()
        shown = conn.cursor()
        shown.execute("SHOW WARNINGS")
        out["binary_show"] = shown.fetchall()
        shown.close()
        pc.execute("SELECT g FROM big WHERE g = ?", (7,))
        out["binary_after"] = pc.fetchall()
        pc.close()
        conn.close()
        return out

    out = await in_thread(go)
    assert out["rows"] == ((1,), (2,), (3,), (4,), (5,))
    assert out["warnings"] == 1
    assert out["show"] == (
        (
            "Warning",
            1105,
            "dbward cut the result at 5 rows (connection policy max_rows of connection maria); "
            "the remaining rows were not sent",
        ),
    )
    assert out["multi"][0] == tuple((g, "010-****-5678") for g in range(1991, 1996))
    assert out["multi"][1] == ((1,), (2,))  # the second statement's result is its own
    assert out["after"] == ((7,),) and out["show_after"] == ()
    assert out["binary"] == [(g, "010-****-5678") for g in range(101, 106)]
    assert [w[2] for w in out["binary_show"]] == [out["show"][0][2]]
    assert out["binary_after"] == [(7,)]
    cut = [c for c in completions(dbward_node) if c["truncated"]]
    assert len(cut) == 3 and all(c["rows"] == 5 for c in cut)


async def test_server_errors_and_warnings_redacted(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    """An error of a statement reading masked columns keeps its errno and SQLSTATE with dbward's
    sentence; SHOW WARNINGS after it cannot quote masked values; the session stays usable."""
    use_masking(dbward_node)

    def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with connect(maria_port) as c:
            with pytest.raises(pymysql.err.OperationalError) as err:
                query(c, "SELECT phone FROM customers WHERE id = (SELECT id FROM orders)")
            out["error"] = err.value.args
            out["cast"] = query(c, "SELECT CAST(phone AS SIGNED) FROM customers ORDER BY id")
            out["warnings"] = query(c, "SHOW WARNINGS")
            out["errors"] = query(c, "SHOW ERRORS")
            out["plain"] = query(c, "SELECT 1 + 'x'")
            out["warnings2"] = query(c, "SHOW WARNINGS")
        conn = mysql.connector.connect(
            host="127.0.0.1", port=maria_port, user=USER, password=PASSWORD, database=SHOP, ssl_disabled=True
        )
        pc = conn.cursor(prepared=True)
        pc.execute("SELECT CAST(email AS DATE) FROM customers WHERE id > ?", (0,))
        out["binary_cast"] = pc.fetchall()
        pc.execute("SHOW WARNINGS")  # prepared too: binary rows
        out["binary_warnings"] = pc.fetchall()
        pc.close()
        conn.close()
        return out

    out = await in_thread(go)
    code, message = out["error"]
    assert code == 1242  # ER_SUBQUERY_NO_1_ROW, errno kept
    assert "dbward hides the server's error text" in message and "mask-phone" in message
    assert out["cast"] == [("**",), ("**",)]
    assert len(out["warnings"]) == 2
    for level, wcode, text in out["warnings"]:
        assert level == "Warning" and wcode == 1292
        assert "010-" not in text and "masking rule mask-phone" in text
    assert out["errors"] == []
    assert out["plain"] == [(1,)]
    # once a masked statement left conditions, dbward cannot tell when the target forgets them
    assert all("masking rule mask-phone" in w[2] for w in out["warnings2"])
    assert out["binary_cast"] == [(None,), (None,)]  # NULL stays NULL
    assert len(out["binary_warnings"]) == 2
    assert all("masking rule mask-email" in w[2] and "example" not in w[2] for w in out["binary_warnings"])


async def test_multi_statement_each_result_its_own_plan(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    use_masking(dbward_node)

    def go() -> list[Any]:
        with (
            connect(maria_port, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as c,
            c.cursor() as cur,
        ):
            cur.execute(
                "SELECT name, email FROM customers ORDER BY id; SELECT item, note FROM orders ORDER BY id; "
                "SELECT rrn, city FROM customers ORDER BY id"
            )
            out = [cur.fetchall()]
            while cur.nextset():
                out.append(cur.fetchall())
            return out

    out = await in_thread(go)
    assert out[0] == (("Kim Minji", "mi***@example.com"), ("Lee Jun", "ju*****@example.org"))
    assert out[1] == (("book", "leave at door"), ("pen", None))
    assert out[2][0][1] == "Seoul" and out[2][0][0] != "900101-1234567" and out[2][0][0].startswith("900101-")
    ev = masked_events(dbward_node)
    assert [[c["column"] for c in e["columns"]] for e in ev] == [["email"], ["rrn"]]


async def test_wire_origin_masks_what_lineage_missed(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    """A plan whose lineage found no column (as if it had missed one) still masks the column whose
    origin on the wire (column definition: database, org_table, org_name) is a masked column."""
    evaluator = use_masking(dbward_node)

    class ForgetColumns:
        async def decide_connection(self, *a: Any) -> Any:
            return await evaluator.decide_connection(*a)

        async def decide_statement(self, session: Any, statement: Any) -> Any:
            d = await evaluator.decide_statement(session, statement)
            if d.masking is not None:
                d = dataclasses.replace(d, masking=dataclasses.replace(d.masking, columns={}))
            return d

    dbward_node.node.gate.policy = ForgetColumns()

    def go() -> list[tuple[Any, ...]]:
        with connect(maria_port) as c:
            return query(c, "SELECT id, phone AS x FROM customers ORDER BY id")

    rows = await in_thread(go)
    assert rows == [(1, "010-****-5678"), (2, "010-****-5432")]
    col = masked_events(dbward_node)[0]["columns"][0]
    assert col["column"] == "x" and col["wire_origin"] is True and col["rules"] == ["masking:mask-phone"]


async def test_fast_path_for_statements_without_plan(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    """Statements reading no masked column are relayed as they are: no rewrite, no masking event."""
    use_masking(dbward_node)

    def go() -> list[tuple[Any, ...]]:
        with connect(maria_port) as c:
            return query(c, "SELECT id, customer_id, item FROM orders ORDER BY id")

    assert await in_thread(go) == [(1, 1, "book"), (2, 2, "pen")]
    assert masked_events(dbward_node) == []
    decided = [d for d in decisions(dbward_node) if d["sql"].startswith("SELECT id, customer_id")]
    assert decided and completions(dbward_node)[-1]["truncated"] is False


# ----------------------------------------------------------------------------- the bypass corpus
MYSQL_CASES = [c for c in CASES if c.dialect == "mysql"]


def _direct(sql: str) -> list[tuple[Any, ...]]:
    conn = mysql_root()
    try:
        with conn.cursor() as cur:
            cur.execute(f"USE {SHOP}")
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _cells(rows: list[tuple[Any, ...]]) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for r in rows for v in r]


#: statements dbward cannot analyse at all: with the connection's default (allow_unknown off)
#: they are refused as unknown before masking looks at them; the corpus's sentence is the one
#: masking gives when the connection allows unknown statements
UNKNOWN_STATEMENTS = {"my-handler", "my-prepare-from-var"}


@pytest.mark.parametrize("case", MYSQL_CASES, ids=[c.id for c in MYSQL_CASES])
async def test_bypass_corpus(dbward_node: RunningNode, maria_port: int, shop: str, case: BypassCase) -> None:
    """Each MySQL case of the corpus through PyMySQL: no unmasked value of a protected column in
    any row; masked columns masked the way the case says; clear columns as MariaDB has them;
    denials with the case's sentence."""
    use_masking(dbward_node, allow_unknown=case.id in UNKNOWN_STATEMENTS)

    def go() -> list[tuple[Any, ...]] | pymysql.MySQLError:
        with connect(maria_port) as c:
            try:
                return query(c, case.sql)
            except pymysql.MySQLError as exc:
                return exc

    got = await in_thread(go)
    if case.expect == "deny":
        assert isinstance(got, pymysql.MySQLError), f"{case.id} was not denied: {got!r}"
        message = str(got.args[1])
        assert message.startswith("denied: ") and case.deny_contains in message, message
        assert not any(p in message for p in PROTECTED)
        return
    try:
        direct: list[tuple[Any, ...]] | pymysql.MySQLError = await in_thread(lambda: _direct(case.sql))
    except pymysql.MySQLError as exc:
        direct = exc
    if isinstance(direct, pymysql.MySQLError):
        # MariaDB itself refuses it (table names are case-sensitive here): the same error number,
        # with dbward's sentence in place of the server's text
        assert isinstance(got, pymysql.MySQLError) and got.args[0] == direct.args[0], got
        assert "dbward hides the server's error text" in str(got.args[1])
        return
    assert not isinstance(got, pymysql.MySQLError), f"{case.id} failed: {got!r}"
    cells = _cells(got)
    leaked = [p for p in PROTECTED for cell in cells if p in cell]
    assert not leaked, f"{case.id} leaked {leaked}"
    assert len(direct) == len(got)
    for i in case.clear:
        assert sorted(map(str, (r[i] for r in got))) == sorted(map(str, (r[i] for r in direct))), i
    for i in case.masked:
        originals = {str(r[i]) for r in direct if r[i] is not None}
        assert not originals & {str(r[i]) for r in got}, f"column {i} came back unmasked"
    ev = masked_events(dbward_node)
    assert len(ev) == 1
    how = {c["position"] - 1: c["algorithm"] for c in ev[0]["columns"]}
    for i, expected in case.masked.items():
        assert how.get(i) == expected, (i, how)


# ----------------------------------------------------------------------------- Connector/J
JAVA_SOURCE = Path(__file__).parents[1] / "java" / "MariaDbMaskProbe.java"
JAR = Path("/usr/share/java/mariadb-java-client.jar")
HAVE_JAVA = shutil.which("javac") is not None and JAR.exists()


async def test_connector_j_text_and_server_prepared(
    dbward_node: RunningNode, maria_port: int, shop: str, tmp_path: Path
) -> None:
    """MariaDB Connector/J (as DBeaver uses it): masked values and adjusted types over text and
    server-side prepared statements, a cut result with dbward's warning, the session usable."""
    if not HAVE_JAVA:
        pytest.fail("Connector/J tests need javac and Debian's libmariadb-java (/usr/share/java)")
    use_masking(dbward_node, max_rows=3)
    shutil.copy(JAVA_SOURCE, tmp_path / JAVA_SOURCE.name)
    res = await run("javac", "-cp", str(JAR), "-d", str(tmp_path), str(tmp_path / JAVA_SOURCE.name))
    assert res.rc == 0, res.stderr
    res = await run(
        "java", "-cp", f"{JAR}:{tmp_path}", "MariaDbMaskProbe", str(maria_port), USER, PASSWORD, timeout=90
    )
    assert res.rc == 0, res.stderr + res.stdout
    out = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    types = "id:INTEGER,balance:VARCHAR,born:VARCHAR,card:VARCHAR,note:VARCHAR,"
    assert out["text_types"] == types and out["binary_types"] == types
    rows = "1|*******|1990-**-**|************1111|hello;2|*****|1985-**-**|************0004|world;"
    assert out["text"] == rows and out["binary"] == rows
    assert out["cut"] == "11|010-****-5678;12|010-****-5678;13|010-****-5678;"
    assert out["warning"] == (
        "1105/dbward cut the result at 3 rows (connection policy max_rows of connection maria); "
        "the remaining rows were not sent"
    )
    assert out["after"] == "2000;"


async def test_each_result_of_a_call_gets_its_statements_plan(
    dbward_node: RunningNode, maria_port: int, shop: str
) -> None:
    """A plan with one plan per statement (``plan.statements``) masks each result set with its
    own: a procedure answering with two result sets, under a test policy that plans them."""
    conn = mysql_root()
    with conn.cursor() as cur:
        cur.execute("DROP PROCEDURE IF EXISTS shop.two_results")
        cur.execute(
            "CREATE PROCEDURE shop.two_results() BEGIN SELECT phone, name FROM shop.customers ORDER BY id; "
            "SELECT email, name FROM shop.customers ORDER BY id; END"
        )
    conn.close()
    evaluator = use_masking(dbward_node)
    phone = ColumnMask(pattern=BUILTIN["phone"], rule_ids=("masking:test-phone",))
    email = ColumnMask(spec=MaskSpec(algorithm=Algorithm.FULL), rule_ids=("masking:test-email",))
    plan = MaskingPlan(
        columns={0: phone},
        statements=(MaskingPlan(columns={0: phone}), MaskingPlan(columns={0: email})),
    )

    class PlanTheCall:
        async def decide_connection(self, *a: Any) -> Any:
            return await evaluator.decide_connection(*a)

        async def decide_statement(self, session: Any, statement: Any) -> Any:
            if statement.sql.startswith("CALL"):
                return Decision.allow(
                    "allowed with a plan per result (test policy)", "rule:test", masking=plan
                )
            return await evaluator.decide_statement(session, statement)

    dbward_node.node.gate.policy = PlanTheCall()

    def go() -> list[Any]:
        flag = pymysql.constants.CLIENT.MULTI_RESULTS
        with connect(maria_port, client_flag=flag) as c, c.cursor() as cur:
            cur.execute("CALL two_results()")
            out = [cur.fetchall()]
            while cur.nextset():
                out.append(cur.fetchall())
            cur.execute("SELECT 5")
            out.append(cur.fetchall())
            return out

    out = await in_thread(go)
    assert out[0] == (("010-****-5678", "Kim Minji"), ("010-****-5432", "Lee Jun"))
    assert out[1] == (("*****************", "Kim Minji"), ("*******************", "Lee Jun"))
    assert out[-1] == ((5,),)
    ev = masked_events(dbward_node)
    assert [c["rules"] for c in ev[0]["columns"]] == [["masking:test-phone"], ["masking:test-email"]]


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["ok-terminators", "eof-packets"])
async def test_cursor_fetches_masked_and_cut(
    dbward_node: RunningNode, maria_port: int, shop: str, deprecate_eof: bool
) -> None:
    """COM_STMT_EXECUTE with a read-only cursor and COM_STMT_FETCH (what Connector/J's
    useCursorFetch sends), spoken by dbward's own protocol client (none of the installed drivers
    opens cursors): fetched rows are masked and the row limit counts over all fetches."""
    use_masking(dbward_node, max_rows=3)
    proxy = dataclasses.replace(
        dbward_node.targets["maria"],
        host="127.0.0.1",
        port=maria_port,
        username=USER,
        tls_mode=TlsMode.DISABLE,
    )
    caps = int(PROXY_CAPABILITIES)
    if not deprecate_eof:
        caps &= ~Capability.DEPRECATE_EOF
    up = await connect_upstream(
        proxy,
        PASSWORD,
        client_capabilities=caps,
        database=SHOP,
        attributes={},
        charset=45,
        timeout=10,
        allow_local_infile=False,
    )
    try:
        prep = await _command(up, b"\x16SELECT g, phone FROM big WHERE g < ? ORDER BY g", deprecate_eof)
        sid = StmtPrepareOK.parse(prep[0]).statement_id
        execute = (
            b"\x17"
            + sid.to_bytes(4, "little")
            + bytes((CURSOR_TYPE_READ_ONLY,))
            + (1).to_bytes(4, "little")
            + b"\x00\x01"
            + bytes((FieldType.LONGLONG, 0))
            + (10).to_bytes(8, "little")
        )
        head = await _command(up, execute, deprecate_eof)
        types = [(FieldType.LONG, False), (FieldType.VAR_STRING, False)]
        got: list[Any] = []
        last = b""
        for _ in range(3):
            rows = await _command(
                up, b"\x1c" + sid.to_bytes(4, "little") + (2).to_bytes(4, "little"), deprecate_eof
            )
            got += [decode_binary_row(p, types) for p in rows[:-1]]
            last = rows[-1]
        assert ColumnDefinition41.parse(head[2]).type == FieldType.VAR_STRING
        assert got == [(1, "010-****-5678"), (2, "010-****-5678"), (3, "010-****-5678")]
        status = EOFPacket.parse(last).status if len(last) <= 5 else OKPacket.parse(last).status
        assert status & ServerStatus.LAST_ROW_SENT  # the client stops fetching
        assert (await _command(up, b"\x03SELECT 1", deprecate_eof))[-2] == b"\x011"  # the session goes on
    finally:
        up.close()


async def _command(up: UpstreamConnection, payload: bytes, deprecate_eof: bool) -> list[bytes]:
    """Send one command and read its whole response (payloads)."""
    up.writer.write(encode_packet(payload, 0))
    pk = [await read_packet(up.reader)]
    while not _complete(pk, payload[0], deprecate_eof):
        pk.append(await read_packet(up.reader))
    return [p.payload for p in pk]


def _complete(packets: list[Packet], command: int, deprecate_eof: bool) -> bool:
    """Whether a response to this test's commands is complete (a small scanner of its own)."""
    sc = ResponseScanner(
        {0x16: ResponseKind.PREPARE, 0x17: ResponseKind.EXECUTE, 0x1C: ResponseKind.FETCH}.get(
            command, ResponseKind.QUERY
        ),
        deprecate_eof=deprecate_eof,
    )
    sc.feed(b"".join(encode_packet(p.payload, p.seq) for p in packets))
    return sc.done
