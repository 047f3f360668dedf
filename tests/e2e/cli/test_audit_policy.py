"""`dbward policy explain|test|simulate` and `dbward audit verify|export|tail` as an administrator uses them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from dbward.audit.events import StatementDecided
from dbward.audit.journal import iter_records
from dbward.audit.store import StoreForwarder
from dbward.cli import admin_journal, open_store, settings_from
from tests.e2e.cli.conftest import Cli

POLICY = """\
version: 1
users:
  - username: ana
  - username: ops
groups:
  - name: analysts
    members: [ana]
connections:
  - name: shop
    engine: mysql
    host: 127.0.0.1
    port: 3306
    database: shop
    username: u
    policy:
      max_rows: 100
      approval_required: [DELETE WITHOUT WHERE]
grants:
  - name: analysts-rw
    subject: group:analysts
    connection: shop
    privileges: [write]
  - name: ops-admin
    subject: user:ops
    connection: shop
    privileges: [admin]
rules:
  - id: no-star-customers
    priority: 1
    match: regex
    pattern: "select\\\\s+\\\\*\\\\s+from\\\\s+customers"
    action: deny
    message: name the columns you need
"""


def _setup(cli: Cli, tmp_path: Path) -> Path:
    d = tmp_path / "data"
    assert cli("init", "--data-dir", d).code == 0
    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    r = cli("apply", "-f", f, "--data-dir", d)
    assert r.code == 0, r.out
    return d


def test_policy_explain_and_test(cli: Cli, tmp_path: Path) -> None:
    d = _setup(cli, tmp_path)
    r = cli(
        "policy",
        "explain",
        "-u",
        "ana",
        "-C",
        "shop",
        "--sql",
        "DELETE FROM orders WHERE id = 3",
        "--data-dir",
        d,
    )
    assert r.code == 0, r.out
    assert "decision: allow" in r.out and "analysts-rw" in r.out and "row limit: 100" in r.out
    r = cli("policy", "explain", "-u", "ana", "-C", "shop", "--sql", "DROP TABLE orders", "--data-dir", d)
    assert "decision: deny" in r.out and "DROP" in r.out
    r = cli(
        "policy", "explain", "-u", "ana", "-C", "shop", "--sql", "select * from customers", "--data-dir", d
    )
    assert "decision: deny" in r.out and "name the columns you need" in r.out

    cases = tmp_path / "cases.yaml"
    cases.write_text(
        """\
- {user: ana, connection: shop, sql: "SELECT id FROM orders", expect: allow}
- {user: ana, connection: shop, sql: "DELETE FROM orders", expect: require_approval}
- {user: ana, connection: shop, sql: "TRUNCATE orders", expect: deny}
- {user: ops, connection: shop, sql: "TRUNCATE orders", expect: allow}
"""
    )
    r = cli("policy", "test", cases, "--data-dir", d)
    assert r.code == 0, r.out
    cases.write_text('- {user: ana, connection: shop, sql: "TRUNCATE orders", expect: allow}\n')
    r = cli("policy", "test", cases, "--data-dir", d)
    assert r.code == 1
    assert "TRUNCATE" in r.out


def _record_history(d: Path, statements: list[tuple[str, str, str]]) -> None:
    """Write decisions to the journal and copy them to the store, as a running node would."""
    settings = settings_from(d, None)

    async def go() -> None:
        j = admin_journal(settings)
        for user, sql, effect in statements:
            await j.append(
                StatementDecided(user=user, connection="shop", database="shop", sql=sql, effect=effect)
            )
        await j.close()
        store = open_store(settings)
        await StoreForwarder(store).send(list(iter_records(settings.journal_path)))
        await store.close()

    asyncio.run(go())


def test_policy_simulate_lists_what_a_proposed_file_changes(cli: Cli, tmp_path: Path) -> None:
    d = _setup(cli, tmp_path)
    _record_history(
        d,
        [
            ("ana", "UPDATE orders SET status = 'x' WHERE id = 1", "allow"),
            ("ana", "UPDATE orders SET status = 'x' WHERE id = 1", "allow"),
            ("ana", "SELECT id FROM orders", "allow"),
            ("ops", "TRUNCATE orders", "allow"),
        ],
    )
    r = cli("policy", "simulate", "--since", "1d", "--data-dir", d)
    assert r.code == 0 and "none would be decided differently" in r.out, r.out
    tighter = tmp_path / "tighter.yaml"
    tighter.write_text(POLICY.replace("privileges: [write]", "privileges: [read]"))
    r = cli("policy", "simulate", "--since", "1d", "--policy", tighter, "--json", "--data-dir", d)
    assert r.code == 0, r.out
    changes = json.loads(r.stdout)
    assert [(c["user"], c["after"], c["count"]) for c in changes] == [("ana", "deny", 2)]
    assert "read-write" in changes[0]["reason"]
    # The simulation changed nothing in the real store.
    r = cli(
        "policy",
        "explain",
        "-u",
        "ana",
        "-C",
        "shop",
        "--sql",
        "UPDATE orders SET a = 1 WHERE id = 1",
        "--data-dir",
        d,
    )
    assert "decision: allow" in r.out


def test_audit_verify_export_and_tail(cli: Cli, tmp_path: Path) -> None:
    d = _setup(cli, tmp_path)
    _record_history(d, [("ana", f"SELECT {i}", "allow") for i in range(5)])
    r = cli("audit", "verify", "--data-dir", d)
    assert r.code == 0, r.out
    assert "the audit trail verifies" in r.out
    out = tmp_path / "export.jsonl"
    r = cli("audit", "export", "--since", "1d", "--type", "statement", "-o", out, "--data-dir", d)
    assert r.code == 0 and "5 events written" in r.out, r.out
    assert cli("audit", "verify", "--file", out, "--data-dir", d).code == 0  # a contiguous run verifies
    r = cli("audit", "export", "--since", "1d", "-o", out, "--data-dir", d)
    exported = out.read_text().splitlines()
    assert cli("audit", "verify", "--file", out, "--data-dir", d).code == 0
    out.write_text("\n".join(exported[:2] + exported[3:]) + "\n")  # one event taken out of the export
    r = cli("audit", "verify", "--file", out, "--data-dir", d)
    assert r.code == 1 and "deleted" in r.out
    r = cli("audit", "tail", "-n", "30", "--type", "statement", "--data-dir", d)
    assert r.code == 0 and "SELECT 4" in r.out
    r = cli("audit", "export", "--since", "1d", "--format", "csv", "--data-dir", d)
    assert r.stdout.splitlines()[0].startswith("time,code,type,user")
    # Tamper with the journal: verify names the record.
    settings = settings_from(d, None)
    lines = settings.journal_path.read_text().splitlines()
    rec = json.loads(lines[3])
    rec["sql"] = "SELECT 'nothing happened'"
    lines[3] = json.dumps(rec, separators=(",", ":"), sort_keys=True)
    settings.journal_path.write_text("\n".join(lines) + "\n")
    r = cli("audit", "verify", "--no-store", "--data-dir", d)
    assert r.code == 1
    assert f"record seq {rec['seq']} was altered" in r.out
