"""pgJDBC (Debian's libpostgresql-jdbc-java) and Node's `pg` through dbward."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.postgres.conftest import decisions

ROOT = Path(__file__).resolve().parents[2]
JAR = Path("/usr/share/java/postgresql.jar")


def _exists(path: Path) -> bool:
    return path.exists()


async def run(*cmd: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_pgjdbc_prepared_and_metadata(deny_deletes: RunningNode) -> None:
    if not _exists(JAR):
        pytest.fail(f"{JAR} is missing: install the Debian package libpostgresql-jdbc-java")
    port = await deny_deletes.listen("pg")
    rc, out, err = await run(
        "java",
        "-cp",
        str(JAR),
        str(ROOT / "e2e" / "java" / "PgProbe.java"),
        str(port),
        USER,
        PASSWORD,
        "dbward_test",
    )
    assert rc == 0, err + out
    lines = out.splitlines()
    for expected in (
        "product=PostgreSQL",
        "catalog=dbward_test",
        "schema=public",
        "table=customers",
        "pk=id",
        "index=customers_pkey",
        "types=true",
        "names=Kim Minji|Lee Jun|Park Ara|",
        "batch=50",
        "sum=2001000",
        "delete=42501",
        "after=50",
    ):
        assert expected in lines, (expected, out)
    assert any(line.startswith("columns=id,name,email,phone,balance,created") for line in lines)
    seen = decisions(deny_deletes)
    executes = [
        d for d in seen if d["sql"] == "SELECT name FROM customers WHERE id = $1" and d["origin"] == "execute"
    ]
    assert [d["params"] for d in executes] == [[1], [2], [3]]  # pgJDBC binds int4 in binary
    assert (
        sum(1 for d in seen if d["sql"] == "INSERT INTO jt VALUES ($1, $2)" and d["origin"] == "execute")
        == 50
    )
    assert any("pg_catalog" in d["sql"] for d in seen)  # the metadata queries went through the gate


async def test_node_pg(dbward_node: RunningNode) -> None:
    node_dir = ROOT / "e2e" / "node"
    if not _exists(node_dir / "node_modules" / "pg"):
        pytest.fail("tests/e2e/node/node_modules/pg is missing: run scripts/ensure-test-tools.sh")
    port = await dbward_node.listen("pg")
    rc, out, err = await run(
        "node", str(node_dir / "pg_probe.js"), str(port), USER, PASSWORD, "dbward_test", cwd=node_dir
    )
    assert rc == 0, err + out
    result = json.loads(out)
    assert result["names"] == ["Kim Minji", "Lee Jun", "Park Ara"]
    assert result["param"] == "Lee Jun"
    assert result["sum"] == 500500
    assert result["error"] == "42P01"
    assert result["after"] == 1
    seen = decisions(dbward_node)
    assert any(d["sql"] == "SELECT name FROM customers WHERE id = $1" and d["params"] == ["2"] for d in seen)
