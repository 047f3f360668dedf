"""PyMySQL through dbward: plain and TLS, multi-statements, denial, USE, GUI probes, tokens."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import pymysql
import pytest
from pymysql.constants import CLIENT

from dbward.identity.secrets import SecretVerifiers
from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.policy.model import ColumnMask, Decision, MaskingPlan
from dbward.proxy.engine import StoredSecret, UserCredentials
from dbward.store import repo
from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.mysql.conftest import completions, decisions, deny_word, listen_with_options

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def connect(port: int, **kw: Any) -> pymysql.connections.Connection:
    kw.setdefault("ssl_disabled", True)
    kw.setdefault("user", USER)
    kw.setdefault("password", PASSWORD)
    return pymysql.connect(host="127.0.0.1", port=port, autocommit=True, **kw)


def query(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return tuple(cur.fetchall())


async def test_plain_select_and_audit(dbward_node: RunningNode, maria_port: int) -> None:
    def go() -> tuple[Any, ...]:
        with connect(maria_port, database="dbward_test", program_name="billing-report") as c:
            return query(c, "SELECT id, name, balance FROM customers WHERE id <= %s ORDER BY id", (2,))

    rows = await in_thread(go)
    assert [(r[0], r[1], str(r[2])) for r in rows] == [(1, "Kim Minji", "1200.50"), (2, "Lee Jun", "-5.00")]
    sql = "SELECT id, name, balance FROM customers WHERE id <= 2 ORDER BY id"
    assert dbward_node.statements()[-1] == sql
    done = completions(dbward_node)[-1]
    assert done["rows"] == 2 and done["error"] is None and done["bytes_sent"] > 0
    start = dbward_node.journal.of_type("session.start")[-1]
    assert start["user"] == USER and start["connection"] == "maria" and start["tls"] is False
    assert start["client_program"] == "billing-report" and start["database"] == "dbward_test"


async def test_tls_to_dbward(dbward_node: RunningNode, maria_port: int) -> None:
    def go() -> tuple[Any, ...]:
        with connect(maria_port, ssl_disabled=False, ssl={"check_hostname": False}) as c:
            assert c._sock.version() is not None  # type: ignore[union-attr]
            return query(c, "SELECT COUNT(*) FROM customers")

    assert await in_thread(go) == ((3,),)
    assert dbward_node.journal.of_type("session.start")[-1]["tls"] is True


async def test_multi_statements_each_seen_and_denied_part_refuses_all(
    dbward_node: RunningNode, maria_port: int
) -> None:
    def ok() -> list[Any]:
        with connect(maria_port, client_flag=CLIENT.MULTI_STATEMENTS) as c, c.cursor() as cur:
            cur.execute("SELECT 1; SELECT 'x;y' /* ; */; UPDATE customers SET name = name WHERE id = 3")
            out = [cur.fetchall()]
            while cur.nextset():
                out.append(cur.fetchall() if cur.description else cur.rowcount)
            return out

    assert await in_thread(ok) == [((1,),), (("x;y",),), 0]
    assert dbward_node.statements()[-3:] == [
        "SELECT 1",
        "SELECT 'x;y' /* ; */",
        "UPDATE customers SET name = name WHERE id = 3",
    ]
    done = completions(dbward_node)[-3:]
    assert [d["rows"] for d in done] == [1, 1, None]
    assert done[2]["affected"] == 0

    deny_word(dbward_node, "DELETE")

    def denied() -> tuple[Any, ...]:
        with connect(maria_port, client_flag=CLIENT.MULTI_STATEMENTS) as c:
            with pytest.raises(pymysql.err.OperationalError) as ei:
                query(
                    c,
                    "INSERT INTO customers (id, name) VALUES (50, 'x'); DELETE FROM customers WHERE id = 50",
                )
            assert ei.value.args[0] == 1142
            assert "denied by rule no-delete" in ei.value.args[1]
            return query(c, "SELECT COUNT(*) FROM customers")  # the session stays usable

    assert await in_thread(denied) == ((3,),)  # the INSERT did not run either
    last = decisions(dbward_node)[-3:]
    assert [(e["sql"][:6], e["effect"]) for e in last] == [
        ("INSERT", "allow"),
        ("DELETE", "deny"),
        ("SELECT", "allow"),
    ]


async def test_use_changes_the_database_the_policy_sees(dbward_node: RunningNode, maria_port: int) -> None:
    def go() -> None:
        with connect(maria_port) as c:
            query(c, "USE information_schema")
            query(c, "SELECT 1")
            c.select_db("dbward_test")  # COM_INIT_DB
            query(c, "SELECT 2")

    await in_thread(go)
    events = decisions(dbward_node)
    by_sql = {e["sql"]: e for e in events}
    assert by_sql["SELECT 1"]["database"] == "information_schema"
    assert by_sql["USE `dbward_test`"]["origin"] == "init_db"
    assert by_sql["SELECT 2"]["database"] == "dbward_test"


async def test_gui_probes_pass_through(dbward_node: RunningNode, maria_port: int) -> None:
    probes = [
        "SET character_set_results = NULL",
        "SELECT @@version_comment, @@max_allowed_packet, @@tx_isolation",
        "SHOW VARIABLES LIKE 'query_cache_size'",
        "SELECT @@query_cache_size",
        "SHOW DATABASES",
        "SHOW FULL TABLES FROM `dbward_test`",
        "SHOW FULL COLUMNS FROM `dbward_test`.`customers`",
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'dbward_test'",
        "SHOW CREATE TABLE dbward_test.customers",
    ]

    def go() -> list[tuple[Any, ...]]:
        with connect(maria_port) as c:
            return [query(c, p) for p in probes]

    results = await in_thread(go)
    assert results[0] == ()
    assert ("dbward_test",) in results[4]
    assert any(r[0] == "customers" for r in results[5])
    assert [r[0] for r in results[6]][:2] == ["id", "name"]
    assert dbward_node.statements()[-len(probes) :] == probes


async def test_proxy_token_logs_in(dbward_node: RunningNode, maria_port: int) -> None:
    store = dbward_node.store
    async with store.transaction() as s:
        token = await repo.create_proxy_token(s, store.box, USER, "laptop")

    def go() -> tuple[Any, ...]:
        with connect(maria_port, password=token) as c:
            return query(c, "SELECT 5")

    assert await in_thread(go) == ((5,),)
    assert dbward_node.journal.of_type("session.start")[-1]["auth_method"] == "proxy_token"


async def test_caching_sha2_fast_path(dbward_node: RunningNode) -> None:
    port = await listen_with_options(dbward_node, client_auth_plugin="caching_sha2_password")

    def go() -> tuple[Any, ...]:
        with connect(port) as c:
            return query(c, "SELECT 6")

    assert await in_thread(go) == ((6,),)


class _NoSha2Verifier:
    """The real store's users, with their caching_sha2 verifier absent (as for an imported
    password hash): dbward must fall back to full authentication and check the cleartext."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def lookup(self, username: str) -> UserCredentials | None:
        creds: UserCredentials | None = await self.inner.lookup(username)
        if creds is None:
            return None
        secrets = tuple(
            StoredSecret(
                method=s.method,
                name=s.name,
                verifiers=SecretVerifiers(
                    argon2=s.verifiers.argon2,
                    scram=s.verifiers.scram,
                    mysql_native=s.verifiers.mysql_native,
                    mysql_sha2=b"",
                ),
            )
            for s in creds.secrets
        )
        return dataclasses.replace(creds, secrets=secrets)

    async def touch_token(self, username: str, token_name: str) -> None:
        await self.inner.touch_token(username, token_name)


@pytest.mark.parametrize("tls", [True, False], ids=["cleartext-over-tls", "rsa-key-exchange"])
async def test_caching_sha2_full_authentication(dbward_node: RunningNode, tls: bool) -> None:
    dbward_node.node.deps.auth = _NoSha2Verifier(dbward_node.node.deps.auth)  # type: ignore[assignment]
    port = await listen_with_options(dbward_node, client_auth_plugin="caching_sha2_password")

    def go(password: str) -> tuple[Any, ...]:
        kw: dict[str, Any] = {"ssl_disabled": False, "ssl": {"check_hostname": False}} if tls else {}
        with connect(port, password=password, **kw) as c:
            return query(c, "SELECT 7")

    assert await in_thread(lambda: go(PASSWORD)) == ((7,),)
    with pytest.raises(pymysql.err.OperationalError) as ei:
        await in_thread(lambda: go("not-the-password"))
    assert ei.value.args[0] == 1045


async def test_unknown_user_and_bob(dbward_node: RunningNode, maria_port: int) -> None:
    with pytest.raises(pymysql.err.OperationalError) as ei:
        await in_thread(lambda: connect(maria_port, user="nobody", password="x"))
    assert ei.value.args[0] == 1045
    with pytest.raises(pymysql.err.OperationalError) as ei:
        await in_thread(lambda: connect(maria_port, user="bob", password="bob-password-1"))
    assert ei.value.args[0] == 1044
    assert "no grant" in ei.value.args[1]
    reasons = [e["error_code"] for e in dbward_node.journal.of_type("session.rejected")]
    assert reasons == ["authentication_failed", "connection_denied"]


async def test_large_packets_over_16_mib(dbward_node: RunningNode, maria_port: int) -> None:
    size = 17 * 1024 * 1024 + 5

    def go() -> tuple[int, int]:
        with connect(maria_port, max_allowed_packet=64 * 1024 * 1024) as c:
            blob = "x" * size
            with c.cursor() as cur:
                cur.execute("SELECT LENGTH(%s), REPEAT('y', %s)", (blob, size))
                length, big = cur.fetchone()
            return int(length), len(big)

    root = pymysql.connect(host="127.0.0.1", port=3306, user="root", ssl_disabled=True)
    with root.cursor() as cur:
        cur.execute("SELECT @@global.max_allowed_packet")
        (old,) = cur.fetchone()
        cur.execute("SET GLOBAL max_allowed_packet = 67108864")
    try:
        assert await in_thread(go) == (size, size)
    finally:
        with root.cursor() as cur:
            cur.execute(f"SET GLOBAL max_allowed_packet = {int(old)}")
        root.close()
    assert completions(dbward_node)[-1]["bytes_sent"] > size


async def test_field_list(dbward_node: RunningNode, maria_port: int) -> None:
    def go() -> list[str]:
        with connect(maria_port, database="dbward_test") as c:
            c._execute_command(0x04, b"customers\x00")  # COM_FIELD_LIST, as old GUIs send it
            names = []
            while True:
                pkt = c._read_packet()
                if pkt.is_eof_packet():
                    break
                names.append(pkt.read_length_coded_string().decode())  # catalog
                pkt.read_length_coded_string()  # schema
                pkt.read_length_coded_string()  # table
                pkt.read_length_coded_string()  # org_table
                names[-1] = pkt.read_length_coded_string().decode()  # name
            return names

    assert await in_thread(go) == ["id", "name", "email", "phone", "balance", "created"]
    last = decisions(dbward_node)[-1]
    assert (last["origin"], last["sql"]) == ("field_list", "SHOW COLUMNS FROM `customers`")


async def test_load_data_local_when_allowed(dbward_node: RunningNode, tmp_path: Any) -> None:
    dbward_node.node.deps.settings.proxy.allow_load_data_local = True
    port = await dbward_node.listen("maria")
    csv = tmp_path / "rows.csv"
    csv.write_text("100,Loaded One\n101,Loaded Two\n")

    def go() -> tuple[Any, ...]:
        with connect(port, database="dbward_test", local_infile=True) as c:
            query(c, "CREATE TEMPORARY TABLE imp (id INT, name VARCHAR(50))")
            query(c, f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE imp FIELDS TERMINATED BY ','")
            return query(c, "SELECT id, name FROM imp ORDER BY id")

    assert await in_thread(go) == ((100, "Loaded One"), (101, "Loaded Two"))
    load = [
        c
        for c, e in zip(completions(dbward_node), decisions(dbward_node), strict=True)
        if "LOAD DATA" in e["sql"]
    ]
    assert load[0]["affected"] == 2 and load[0]["error"] is None


async def test_masking_plan_is_applied_on_the_wire(dbward_node: RunningNode, maria_port: int) -> None:
    """A decision's masking plan masks the result (tests/e2e/mysql/test_masking.py has the rest)."""
    full = ColumnMask(spec=MaskSpec(algorithm=Algorithm.FULL), rule_ids=("rule:mask-email",))

    class MaskEmail:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def decide_connection(self, principal: Any, target: Any, client_host: str) -> Decision:
            d: Decision = await self.inner.decide_connection(principal, target, client_host)
            return d

        async def decide_statement(self, session: Any, statement: Any) -> Decision:
            if "email" in statement.sql:
                return Decision.allow(
                    "allowed with masking", "rule:mask-email", masking=MaskingPlan(columns={0: full})
                )
            return Decision.allow("allowed", "rule:allow")

    dbward_node.node.gate.policy = MaskEmail(dbward_node.node.gate.policy)

    def go() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        with connect(maria_port, database="dbward_test") as c:
            return query(c, "SELECT email FROM customers ORDER BY id"), query(c, "SELECT 1")

    masked, after = await in_thread(go)
    assert masked == (("*****************",), ("***************",), (None,))
    assert after == ((1,),)
    assert dbward_node.journal.of_type("statement.masked")[0]["columns"][0]["rules"] == ["rule:mask-email"]


async def test_no_backslash_escapes_cannot_smuggle_a_statement(
    dbward_node: RunningNode, maria_port: int
) -> None:
    """With sql_mode NO_BACKSLASH_ESCAPES, `'x\\'` ends the string: the gate must split as the server does."""
    deny_word(dbward_node, "DELETE")
    smuggle = "SELECT 'x\\'; DELETE FROM customers WHERE id = 3; -- '"

    def go() -> tuple[Any, ...]:
        with connect(maria_port, database="dbward_test", client_flag=CLIENT.MULTI_STATEMENTS) as c:
            query(c, "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
            with pytest.raises(pymysql.err.OperationalError) as ei:
                query(c, smuggle)
            assert ei.value.args[0] == 1142
            return query(c, "SELECT COUNT(*) FROM customers")

    assert await in_thread(go) == ((3,),)
    assert ("DELETE FROM customers WHERE id = 3", "deny") in [
        (e["sql"], e["effect"]) for e in decisions(dbward_node)
    ]
