"""Plan and apply of the example file on both store backends, audited in a real journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbward.audit.events import AuditEvent
from dbward.audit.journal import AuditReceipt, MemoryJournal
from dbward.declarative import FileError, apply_plan, export_state, load_file, parse_text, plan_document
from dbward.errors import AuditUnavailable
from dbward.store import repo
from dbward.store.db import Store

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dbward.example.yaml"
ENV = {
    "DBWARD_ALICE_PASSWORD": "alice-password-1",
    "DBWARD_CONN_SHOP_MARIA_PASSWORD": "maria-secret-1",
    "DBWARD_CONN_HR_PG_PASSWORD": "pg-secret-1",
}


class BrokenJournal:
    async def append(self, event: AuditEvent) -> AuditReceipt:
        raise AuditUnavailable("the audit journal cannot be written (test)")

    def append_soon(self, event: AuditEvent) -> None:
        raise AuditUnavailable("the audit journal cannot be written (test)")

    async def close(self) -> None:
        return None


async def test_apply_is_idempotent_and_audited(store: Store) -> None:
    doc = load_file(EXAMPLE)
    plan = await plan_document(store, doc, env=ENV)
    assert plan.counts() == {"create": 21, "update": 0, "delete": 0}
    journal = MemoryJournal()
    await apply_plan(store, plan, journal)
    events = journal.of_type("admin.change")
    assert [(e["object_type"], e["object_name"]) for e in events][:2] == [("user", "alice"), ("user", "bob")]
    assert all("secret-1" not in str(e) for e in events)

    assert (await plan_document(store, doc, env=ENV)).empty
    async with store.session() as s:
        alice = await repo.require_user(s, "alice")
        assert alice.password_hash is not None
        c = await repo.require_connection(s, "shop-maria")
        assert repo.connection_secret(c, store.box) == "maria-secret-1"
        assert await repo.role_members(s, "dba") == [("user", "carol"), ("group", "analysts")]
        assert (await repo.require_user(s, "mallory")).disabled

    state = await export_state(store)
    assert [u["username"] for u in state["users"]] == ["alice", "bob", "carol", "mallory"]
    hr = next(c for c in state["connections"] if c["name"] == "hr-pg")
    assert hr["password"] == "env:DBWARD_CONN_HR_PG_PASSWORD"


async def test_a_failed_audit_write_changes_nothing(store: Store) -> None:
    plan = await plan_document(store, load_file(EXAMPLE), env=ENV)
    with pytest.raises(AuditUnavailable):
        await apply_plan(store, plan, BrokenJournal())
    async with store.session() as s:
        assert await repo.list_users(s) == [] and await repo.list_connections(s) == []


async def test_prune_only_touches_the_sections_in_the_file(store: Store) -> None:
    await apply_plan(store, await plan_document(store, load_file(EXAMPLE), env=ENV), MemoryJournal())
    grant = "grants:\n  - {name: bob-read-hr, subject: user:bob, connection: hr-pg, privileges: [read]}\n"
    # bob would be pruned while a grant in the file still names him: refused, naming the line.
    orphan = parse_text("users:\n  - {username: carol, admin: true}\n" + grant, "small.yaml")
    with pytest.raises(FileError, match=r"small\.yaml line 4: grant bob-read-hr names the subject user bob"):
        await plan_document(store, orphan, prune=True)

    doc = parse_text(
        "users:\n  - {username: carol, admin: true}\n  - {username: bob}\n" + grant, "small.yaml"
    )
    plan = await plan_document(store, doc, prune=True)
    deleted = [(c.section.kind, c.name) for c in plan.changes if c.action == "delete"]
    # Deletions run grants first, then users; groups, roles and connections are not in the file.
    assert deleted == [
        ("grant", "analysts-read-shop"),
        ("grant", "dba-all-hr"),
        ("user", "alice"),
        ("user", "mallory"),
    ]
    updates = [
        (c.section.kind, c.name, [f.field for f in c.fields]) for c in plan.changes if c.action == "update"
    ]
    assert updates == [("user", "carol", ["display_name"]), ("user", "bob", ["display_name", "email"])]
    await apply_plan(store, plan, MemoryJournal())
    assert (await plan_document(store, doc, prune=True)).empty
    async with store.session() as s:
        assert [u.username for u in await repo.list_users(s)] == ["bob", "carol"]
        assert await repo.group_members(s, "analysts") == ["bob"]
        assert [c.name for c in await repo.list_connections(s)] == ["hr-pg", "shop-maria"]


async def test_policy_sections_apply_and_load_as_the_policy(store: Store) -> None:
    from dbward.store.policy_source import load_policy_set

    plan = await plan_document(store, load_file(EXAMPLE), env=ENV)
    await apply_plan(store, plan, MemoryJournal())
    ps = await load_policy_set(store)
    assert [r.id for r in ps.rules] == ["no-select-star-customers", "approve-salary-changes"]
    assert [p.name for p in ps.privilege_types] == ["reporting"]
    hr = next(c for c in ps.connections if c.connection == "hr-pg")
    assert hr.max_rows == 10000 and "DELETE WITHOUT WHERE" in hr.approval_required
    assert hr.ledger_tables == ("public.ledger*",)
    state = await export_state(store)
    assert next(c for c in state["connections"] if c["name"] == "hr-pg")["policy"]["max_rows"] == 10000
    assert "policy" not in next(c for c in state["connections"] if c["name"] == "shop-maria")


async def test_a_bad_rule_or_unknown_privilege_names_the_line(store: Store) -> None:
    text = """\
version: 1
rules:
  - id: r1
    match: regex
    pattern: "(unclosed"
    action: deny
"""
    with pytest.raises(FileError, match=r"line 3.*invalid regular expression"):
        await plan_document(store, parse_text(text, "bad.yaml"))
    text = """\
version: 1
connections:
  - name: c1
    engine: mysql
    host: h
    port: 3306
    username: u
grants:
  - name: g1
    subject: user:nobody
    connection: c1
    privileges: [superpowers]
"""
    with pytest.raises(FileError, match=r"superpowers"):
        await plan_document(store, parse_text(text, "bad.yaml"))
