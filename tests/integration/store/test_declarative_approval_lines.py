"""``approval_lines:`` in `dbward apply` and `dbward export` on both store backends: lines
apply, re-apply as no change, show field changes in a dry run, prune, export byte for byte,
serve requests as the API's lines do, and a bad line is refused naming its line in the file;
users' e-mail addresses are checked the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbward.approvals.model import RequestType, choose_line
from dbward.approvals.service import ApprovalService
from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.declarative import FileError, apply_plan, export_state, export_yaml, parse_text, plan_document
from dbward.store.db import Store

BASE = """\
version: 1
users:
  - {username: root, admin: true, email: root@example.com}
  - {username: dave, email: dave@example.com}
  - {username: erin}
groups:
  - {name: dba, members: [erin]}
approval_lines:
  - name: ledger-changes
    priority: 10
    match:
      connections: ["prod-*"]
      request_types: [sql]
      statement_kinds: [update, delete]
      ledger: true
    stages:
      - {name: team lead, mode: any, approvers: ["user:dave"]}
      - {name: dba, mode: all, approvers: ["user:erin", "group:dba"]}
    allow_urgent: true
  - name: privacy
    match: {request_types: [unmask]}
    stages:
      - approvers: ["user:dave"]
"""


async def _apply(store: Store, text: str, *, prune: bool = False) -> MemoryJournal:
    journal = MemoryJournal()
    await apply_plan(store, await plan_document(store, parse_text(text, "lines.yaml"), prune=prune), journal)
    return journal


async def test_lines_apply_idempotently_and_export_byte_for_byte(store: Store, tmp_path: Path) -> None:
    journal = await _apply(store, BASE)
    changes = [(e["object_type"], e["object_name"], e["action"]) for e in journal.of_type("admin.change")]
    assert ("approval line", "ledger-changes", "create") in changes
    assert ("approval line", "privacy", "create") in changes
    assert (await plan_document(store, parse_text(BASE, "lines.yaml"))).empty

    # the workflow reads what was applied
    svc = ApprovalService(store, MemoryJournal(), Settings(data_dir=tmp_path / "d"), node_name="n")
    lines = await svc.list_lines()
    ledger = next(ln for ln in lines if ln.name == "ledger-changes")
    assert ledger.match.statement_kinds == ("UPDATE", "DELETE") and ledger.match.ledger is True
    assert [str(a) for a in ledger.stages[1].approvers] == ["user erin", "group dba"]
    assert ledger.stages[1].mode.value == "all" and ledger.allow_urgent
    pick = choose_line(lines, request_type=RequestType.SQL, connection="prod-1", kind="UPDATE", ledger=True)
    assert pick is not None and pick.name == "ledger-changes"
    pick = choose_line(lines, request_type=RequestType.UNMASK, connection="hr")
    assert pick is not None and pick.name == "privacy"

    state = await export_state(store)
    assert state["approval_lines"] == [
        {
            "name": "ledger-changes",
            "priority": 10,
            "match": {
                "connections": ["prod-*"],
                "request_types": ["sql"],
                "statement_kinds": ["UPDATE", "DELETE"],
                "ledger": True,
            },
            "stages": [
                {"name": "team lead", "approvers": ["user:dave"]},
                {"name": "dba", "mode": "all", "approvers": ["user:erin", "group:dba"]},
            ],
            "allow_urgent": True,
        },
        {"name": "privacy", "match": {"request_types": ["unmask"]}, "stages": [{"approvers": ["user:dave"]}]},
    ]
    assert [u.get("email") for u in state["users"]] == ["dave@example.com", None, "root@example.com"]
    text = await export_yaml(store)
    assert (await plan_document(store, parse_text(text, "export.yaml"))).empty
    assert await export_yaml(store) == text


async def test_dry_run_shows_field_changes_and_prune_deletes(store: Store) -> None:
    await _apply(store, BASE)
    changed = BASE.replace(
        'approvers: ["user:dave"]}\n      - {name: dba', 'approvers: ["user:erin"]}\n      - {name: dba'
    )
    changed = changed.replace(
        '  - name: privacy\n    match: {request_types: [unmask]}\n    stages:\n      - approvers: ["user:dave"]\n',
        "",
    )
    plan = await plan_document(store, parse_text(changed, "lines.yaml"))
    updates = [
        (c.section.kind, c.name, [f.field for f in c.fields]) for c in plan.changes if c.action == "update"
    ]
    assert updates == [("approval line", "ledger-changes", ["stages"])]
    assert not any(c.action == "delete" for c in plan.changes)  # absent lines stay without --prune
    pruned = await plan_document(store, parse_text(changed, "lines.yaml"), prune=True)
    assert [(c.section.kind, c.name) for c in pruned.changes if c.action == "delete"] == [
        ("approval line", "privacy")
    ]
    await apply_plan(store, pruned, MemoryJournal())
    assert sorted(ln["name"] for ln in (await export_state(store))["approval_lines"]) == ["ledger-changes"]
    assert (await plan_document(store, parse_text(changed, "lines.yaml"), prune=True)).empty


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("    stages: []\n", r"lines\.yaml line 6: .*at least 1 item"),
        (
            "    stages:\n      - {approvers: [user:a]}\n      - {approvers: [user:a]}\n      - {approvers: [user:a]}\n"
            "      - {approvers: [user:a]}\n      - {approvers: [user:a]}\n",
            r"lines\.yaml line 6: .*at most 4 items",
        ),
        ("    stages:\n      - {approvers: []}\n", r"lines\.yaml line 7: .*at least 1 item"),
        ("    stages:\n      - {mode: some, approvers: [user:a]}\n", r"lines\.yaml line 7: .*'any' or 'all'"),
        ("    stages:\n      - {approvers: [alice]}\n", r"lines\.yaml line 7: .*approvers\[0\]: .*'alice'"),
        (
            "    match: {statement_kinds: [UPSERTT]}\n    stages:\n      - {approvers: [user:a]}\n",
            r"lines\.yaml line 6: .*unknown statement kind 'UPSERTT'",
        ),
        (
            "    match: {request_types: [grant]}\n    stages:\n      - {approvers: [user:a]}\n",
            r"lines\.yaml line 6: .*'access', 'sql', 'unmask' or 'export'",
        ),
        (
            "    stages:\n      - {approvers: [user:nobody]}\n",
            r"lines\.yaml line 7: approval line l1 names the approver user nobody, which is neither in the file nor in dbward",
        ),
    ],
)
async def test_a_bad_line_names_its_line(store: Store, line: str, expected: str) -> None:
    text = "version: 1\nusers:\n  - {username: a}\napproval_lines:\n  - name: l1\n" + line
    with pytest.raises(FileError, match=expected):
        await plan_document(store, parse_text(text, "lines.yaml"))


async def test_a_user_email_must_be_an_address(store: Store) -> None:
    text = "version: 1\nusers:\n  - username: a\n    email: not-an-address\n"
    with pytest.raises(FileError, match=r"users\.yaml line 4: .*'not-an-address' is not an e-mail address"):
        await plan_document(store, parse_text(text, "users.yaml"))
