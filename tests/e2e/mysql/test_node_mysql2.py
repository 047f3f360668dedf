"""Node's mysql2 driver through dbward (tests/e2e/node/mysql_probe.js)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import PASSWORD, USER, RunningNode
from tests.e2e.mysql.conftest import decisions, deny_word, run

PROBE = Path(__file__).parents[1] / "node" / "mysql_probe.js"


async def test_mysql2_query_execute_denial_and_tls(dbward_node: RunningNode, maria_port: int) -> None:
    deny_word(dbward_node, "DELETE")
    res = await run("node", str(PROBE), str(maria_port), USER, PASSWORD)
    assert res.rc == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["query"] == [[1, "Kim Minji"], [2, "Lee Jun"], [3, "Park Ara"]]
    assert out["execute"] == [["Lee Jun", "-5.00"]]
    assert out["denied"]["errno"] == 1142 and out["denied"]["sqlState"] == "42000"
    assert "denied by rule no-delete" in out["denied"]["message"]
    assert out["after"] == 3
    assert out["tls"] == "tls"
    sql = "SELECT name, balance FROM customers WHERE id = ? AND email LIKE ?"
    seen = [(e["origin"], e["sql"], e["params"]) for e in decisions(dbward_node)]
    assert ("prepare", sql, None) in seen
    assert ("execute", sql, [2, "%@example.com"]) in seen
    assert ("query", "DELETE FROM customers WHERE id = 1", None) in seen
    assert [s["tls"] for s in dbward_node.journal.of_type("session.start")] == [False, True]
