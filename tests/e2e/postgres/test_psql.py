"""psql through dbward: -c, scripts, \\copy both ways, Ctrl-C, TLS, refusals."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.postgres.conftest import completions, decisions, pg_env


async def psql(
    port: int, *args: str, user: str = USER, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "psql",
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        user,
        "-d",
        "dbward_test",
        *args,
        env=env or pg_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_psql_command(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    rc, out, err = await psql(port, "-c", "SELECT name FROM customers WHERE id = 2")
    assert rc == 0, err
    assert out.strip() == "Lee Jun"
    assert dbward_node.statements() == ["SELECT name FROM customers WHERE id = 2"]
    done = completions(dbward_node)
    assert done[-1]["rows"] == 1 and done[-1]["error"] is None
    started = dbward_node.journal.of_type("session.start")
    assert started and started[-1]["user"] == USER and started[-1]["client_program"] == "psql"


async def test_psql_script_each_statement_reaches_the_gate(dbward_node: RunningNode, tmp_path: Path) -> None:
    port = await dbward_node.listen("pg")
    script = tmp_path / "s.sql"
    script.write_text(
        "CREATE TEMP TABLE t (a int, b text);\n"
        "INSERT INTO t VALUES (1, 'x;y'), (2, $$semi;colon$$);\n"
        "UPDATE t SET b = E'it\\'s; fine' WHERE a = 1;\n"
        "SELECT a || ':' || b FROM t ORDER BY a;\n"
    )
    rc, out, err = await psql(port, "-f", str(script))
    assert rc == 0, err
    assert out.splitlines()[-2:] == ["1:it's; fine", "2:semi;colon"], out
    # one Query message with several statements is split too: the gate sees each one
    rc, out, err = await psql(port, "-c", "SELECT 1; SELECT 'a;b' /* ; */; -- trailing ;\nSELECT 3")
    assert rc == 0, err
    stmts = dbward_node.statements()
    assert "INSERT INTO t VALUES (1, 'x;y'), (2, $$semi;colon$$)" in stmts
    assert "UPDATE t SET b = E'it\\'s; fine' WHERE a = 1" in stmts
    assert stmts[-3:] == ["SELECT 1", "SELECT 'a;b' /* ; */", "-- trailing ;\nSELECT 3"]
    affected = [c["affected"] for c in completions(dbward_node)]
    assert 2 in affected and 1 in affected


async def test_psql_copy_both_ways(dbward_node: RunningNode, tmp_path: Path) -> None:
    port = await dbward_node.listen("pg")
    src = tmp_path / "in.csv"
    src.write_text("".join(f"{i},name {i}\n" for i in range(5000)))
    dst = tmp_path / "out.csv"
    rc, _, err = await psql(
        port,
        "-c",
        "DROP TABLE IF EXISTS copy_t; CREATE TABLE copy_t (id int, name text)",
        "-c",
        f"\\copy copy_t FROM '{src}' WITH (FORMAT csv)",
        "-c",
        f"\\copy (SELECT * FROM copy_t ORDER BY id) TO '{dst}' WITH (FORMAT csv)",
        "-c",
        "DROP TABLE copy_t",
    )
    assert rc == 0, err
    assert dst.read_text() == src.read_text()
    stmts = dbward_node.statements()
    assert "COPY  copy_t FROM STDIN WITH (FORMAT csv)" in stmts
    assert "COPY  ( SELECT * FROM copy_t ORDER BY id ) TO STDOUT WITH (FORMAT csv)" in stmts
    copies = [c for c in completions(dbward_node) if c["rows"] == 5000]
    assert len(copies) == 2


async def test_copy_program_refused_by_default(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    rc, _, err = await psql(port, "-c", "COPY customers TO PROGRAM 'cat > /dev/null'")
    assert rc != 0
    assert "proxy.allow_copy_program" in err
    rc, _, err = await psql(port, "-c", "COPY customers FROM '/etc/passwd'")
    assert rc != 0 and "proxy.allow_copy_program" in err
    refused = [d for d in decisions(dbward_node) if d["effect"] == "deny"]
    assert len(refused) == 2 and refused[0]["rule_ids"] == ["setting:proxy.allow_copy_program"]


async def test_psql_ctrl_c_cancels_through_dbward(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    proc = await asyncio.create_subprocess_exec(
        "psql",
        "-X",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        USER,
        "-d",
        "dbward_test",
        "-c",
        "SELECT pg_sleep(30)",
        env=pg_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # wait until the statement is running on the target
    for _ in range(200):
        if any("pg_sleep" in s for s in dbward_node.statements()):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert "canceling statement due to user request" in err.decode()
    done = completions(dbward_node)
    assert done[-1]["error_code"] == "57014"


async def test_psql_sslmode_require(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    rc, _, err = await psql(
        port,
        "-c",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        env=pg_env(PGSSLMODE="require"),
    )
    assert rc == 0, err
    started = dbward_node.journal.of_type("session.start")
    assert started[-1]["tls"] is True


async def test_wrong_password_and_no_grant_refused(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    rc, _, err = await psql(port, "-c", "SELECT 1", env=pg_env(PGPASSWORD="wrong-password"))
    assert rc != 0 and 'password authentication failed for user "alice"' in err
    rc, _, err = await psql(port, "-c", "SELECT 1", env=pg_env(PGPASSWORD="wrong", PGSSLMODE="require"))
    assert rc != 0 and 'password authentication failed for user "alice"' in err
    rc, _, err = await psql(port, "-c", "SELECT 1", user="nobody-here")
    assert rc != 0 and 'password authentication failed for user "nobody-here"' in err
    rc, _, err = await psql(port, "-c", "SELECT 1", user="bob", env=pg_env(PGPASSWORD="bob-password-1"))
    assert rc != 0 and "bob has no grant on connection pg" in err
    rejected = dbward_node.journal.of_type("session.rejected")
    assert [r["user"] for r in rejected] == ["alice", "alice", "nobody-here", "bob"]
    assert rejected[0]["error_code"] == "authentication_failed"
    assert dbward_node.statements() == []
    assert PASSWORD not in str(dbward_node.journal.records)


async def test_psql_catalog_commands(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    rc, out, err = await psql(port, "-c", "\\d customers", "-c", "\\dt", "-c", "\\l")
    assert rc == 0, err
    assert "id|integer||not null" in out and "balance|numeric(12,2)|||" in out
    assert "public|customers|table|dbward_upstream" in out
    assert "dbward_test|" in out
    assert all(d["effect"] == "allow" for d in decisions(dbward_node))
    assert any("pg_catalog.pg_class" in s for s in dbward_node.statements())
