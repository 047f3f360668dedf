"""The `mariadb` command-line client through dbward (batch mode, TLS, errors, shared port)."""

from __future__ import annotations

import pytest

from dbward.node import load_engines
from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.mysql.conftest import completions, decisions, deny_word, run


def cli(port: int, *args: str, user: str = USER, password: str = PASSWORD, database: str = "") -> list[str]:
    cmd = ["mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", user, f"-p{password}", "--batch"]
    cmd += list(args)
    if database:
        cmd.append(database)
    return cmd


async def test_batch_queries_multi_statements_and_use(dbward_node: RunningNode, maria_port: int) -> None:
    script = (
        "SELECT name FROM customers WHERE id = 1;\n"
        "USE information_schema;\n"
        "SELECT DATABASE();\n"
        "SELECT 'a;b' AS x; SELECT `TABLE_NAME` FROM TABLES WHERE TABLE_SCHEMA = 'dbward_test' "
        "AND TABLE_NAME = 'customers';\n"
    )
    res = await run(*cli(maria_port, "--skip-ssl", "-N"), stdin=script)
    assert res.rc == 0, res.stderr
    assert res.stdout.split("\n")[:5] == ["Kim Minji", "information_schema", "a;b", "customers", ""]
    seen = dbward_node.statements()
    assert "SELECT name FROM customers WHERE id = 1" in seen
    assert "SELECT 'a;b' AS x" in seen
    assert any(s.startswith("SELECT `TABLE_NAME` FROM TABLES") for s in seen)
    # the mariadb client switches databases with COM_INIT_DB; the gate sees it and the database
    init_db = [e for e in decisions(dbward_node) if e["origin"] == "init_db"]
    assert init_db and init_db[0]["sql"] == "USE `information_schema`"
    later = [e for e in decisions(dbward_node) if e["sql"] == "SELECT DATABASE()"]
    assert later[-1]["database"] == "information_schema"
    assert all(e["error"] is None for e in completions(dbward_node))


async def test_tls_with_ssl_option(dbward_node: RunningNode, maria_port: int) -> None:
    res = await run(*cli(maria_port, "--ssl", "-N"), stdin="SHOW STATUS LIKE 'Ssl_cipher';\nSELECT 42;\n")
    assert res.rc == 0, res.stderr
    # The status is the target's (dbward talks plain TCP to this MariaDB), the answer relayed.
    assert "42" in res.stdout.split("\n")
    start = dbward_node.journal.of_type("session.start")[-1]
    assert start["tls"] is True
    assert dbward_node.statements()[-1] == "SELECT 42"


async def test_wrong_password_is_refused_and_audited(dbward_node: RunningNode, maria_port: int) -> None:
    res = await run(*cli(maria_port, "--skip-ssl", "-e", "SELECT 1", password="wrong"))
    assert res.rc == 1
    assert "ERROR 1045 (28000)" in res.stderr
    assert "password or proxy token is wrong" in res.stderr
    rejected = dbward_node.journal.of_type("session.rejected")
    assert rejected[-1]["user"] == USER and rejected[-1]["error_code"] == "authentication_failed"
    assert dbward_node.statements() == []


async def test_user_without_grant_is_refused(dbward_node: RunningNode, maria_port: int) -> None:
    res = await run(*cli(maria_port, "--skip-ssl", "-e", "SELECT 1", user="bob", password="bob-password-1"))
    assert res.rc == 1
    assert "ERROR 1044 (42000)" in res.stderr
    assert "bob has no grant on connection maria" in res.stderr
    assert dbward_node.statements() == []


async def test_denied_statement_keeps_session_usable(dbward_node: RunningNode, maria_port: int) -> None:
    deny_word(dbward_node, "DELETE")
    script = "SELECT 1;\nDELETE FROM customers WHERE id = 99;\nSELECT COUNT(*) FROM customers;\n"
    res = await run(*cli(maria_port, "--skip-ssl", "-N", "--force"), stdin=script)
    assert "ERROR 1142 (42000)" in res.stderr
    assert "denied by rule no-delete" in res.stderr
    assert res.stdout.split("\n")[:2] == ["1", "3"]
    effects = [(e["sql"], e["effect"]) for e in decisions(dbward_node)]
    assert ("DELETE FROM customers WHERE id = 99", "deny") in effects
    assert ("SELECT COUNT(*) FROM customers", "allow") in effects


async def test_load_data_local_is_refused(
    dbward_node: RunningNode, maria_port: int, tmp_path: object
) -> None:
    res = await run(
        *cli(
            maria_port,
            "--skip-ssl",
            "--local-infile=1",
            "-e",
            "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE customers",
        )
    )
    assert res.rc == 1
    assert "proxy.allow_load_data_local" in res.stderr


async def test_shared_port_routes_by_connection_slash_database(dbward_node: RunningNode) -> None:
    load_engines()
    lst = await dbward_node.node.proxy.add_listener("mysql", "127.0.0.1", 0, None)
    res = await run(
        *cli(
            lst.bound_port,
            "--skip-ssl",
            "-N",
            "-e",
            "SELECT DATABASE(), COUNT(*) FROM customers",
            database="maria/dbward_test",
        )
    )
    assert res.rc == 0, res.stderr
    assert res.stdout.strip() == "dbward_test\t3"
    missing = await run(*cli(lst.bound_port, "--skip-ssl", "-e", "SELECT 1", database="maria/nosuchdb"))
    assert missing.rc == 1
    assert "ERROR 1429" in missing.stderr and "has no database 'nosuchdb'" in missing.stderr
    bad = await run(*cli(lst.bound_port, "--skip-ssl", "-e", "SELECT 1", database="nosuch/x"))
    assert bad.rc == 1 and "no MySQL connection named 'nosuch'" in bad.stderr
    assert dbward_node.journal.of_type("session.rejected")[-1]["error_code"] == "connection_denied"


@pytest.mark.slow
async def test_mysqlslap_runs_without_errors(dbward_node: RunningNode, maria_port: int) -> None:
    res = await run(
        "mysqlslap",
        "-h",
        "127.0.0.1",
        "-P",
        str(maria_port),
        "-u",
        USER,
        f"-p{PASSWORD}",
        "--skip-ssl",
        "--create-schema=dbward_slap",
        "--auto-generate-sql",
        "--auto-generate-sql-load-type=mixed",
        "--concurrency=4",
        "--number-of-queries=400",
        "--iterations=1",
        timeout=120,
    )
    assert res.rc == 0, res.stderr
    assert "Average number of seconds to run all queries" in res.stdout
    assert res.stderr.strip() == ""
    assert len(dbward_node.statements()) >= 400
    assert all(e["error"] is None for e in completions(dbward_node))
