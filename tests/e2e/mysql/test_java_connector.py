"""MariaDB Connector/J (Debian's libmariadb-java) through dbward, as DBeaver drives it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.mysql.conftest import decisions, deny_word, run

SOURCE = Path(__file__).parents[1] / "java" / "MariaDbProbe.java"
JAR = Path("/usr/share/java/mariadb-java-client.jar")


@pytest.fixture(scope="session")
def probe_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("java")
    shutil.copy(SOURCE, out / SOURCE.name)
    return out


async def test_connector_j_prepared_and_metadata(
    dbward_node: RunningNode, maria_port: int, probe_classes: Path
) -> None:
    if not (probe_classes / "MariaDbProbe.class").exists():
        res = await run("javac", "-cp", str(JAR), "-d", str(probe_classes), str(probe_classes / SOURCE.name))
        assert res.rc == 0, res.stderr
    deny_word(dbward_node, "DELETE")
    cp = f"{JAR}:{probe_classes}"
    res = await run("java", "-cp", cp, "MariaDbProbe", str(maria_port), USER, PASSWORD, timeout=90)
    assert res.rc == 0, res.stderr + res.stdout
    out = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert out["probe"] == "true" and out["show"] == "true"
    assert out["prepared"] == "Kim Minji|1200.50;Lee Jun|-5.00;"
    assert out["prepared2"] == "Park Ara"
    assert out["update"] == "1"
    assert out["longdata"] == "100000"
    assert out["catalogs"].split(",")[:-1].count("dbward_test") == 1
    assert out["tables"] == "customers,"
    assert out["columns"] == "id,name,email,phone,balance,created,"
    assert out["pk"] == "id"
    assert out["indexes"] == "true"
    assert out["denied"].startswith("1142/42000/")
    assert "denied by rule no-delete" in out["denied"]
    assert out["after"] == "3"
    seen = [(e["origin"], e["sql"], e["params"]) for e in decisions(dbward_node)]
    sql = "SELECT name, balance FROM customers WHERE id = ? OR name = ? ORDER BY id"
    assert ("prepare", sql, None) in seen
    assert ("execute", sql, [1, "Lee Jun"]) in seen
    assert ("execute", sql, [3, "nobody"]) in seen
    assert ("query", "SET character_set_results = NULL", None) in seen
    assert ("execute", "SELECT LENGTH(?)", ["<long data>"]) in seen
    assert any(o == "query" and "information_schema" in s.lower() for o, s, _ in seen)
