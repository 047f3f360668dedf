"""The approval service on both store backends: two-stage approval, access grants that
expire, single-use approvals consumed once under concurrency, expiry, and the API's rules
(who sees and decides what; the ITSM callback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from dbward.api.app import context_from_node, create_app_from
from dbward.approvals.model import ApprovalLine, RequestType
from dbward.approvals.service import AccessRequest, ApprovalService, ExportRequest, SqlRequest
from dbward.approvals.workflow import NotAllowed
from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.domain import ClientAddress, Principal, SessionInfo, Statement
from dbward.errors import ValidationError
from dbward.node import Node
from dbward.store import repo
from dbward.store.db import Store
from dbward.store.directory import target_from_row
from dbward.store.models import ApprovalRequestRow
from dbward.store.policy_source import load_policy_set
from tests.integration.api.conftest import make_token

UPDATE = "UPDATE accounts SET balance = 5 WHERE id = 1"


@dataclass
class Env:
    svc: ApprovalService
    journal: MemoryJournal
    store: Store
    session: SessionInfo


@pytest.fixture
async def env(store: Store, tmp_path: Path) -> Env:
    async with store.transaction() as s:
        for u in ("carol", "dave", "erin", "root"):
            await repo.create_user(s, store.box, u, password=f"{u}-password-1", is_admin=u == "root")
        (await repo.require_user(s, "dave")).email = "dave@example.com"
        conn = await repo.create_connection(
            s, store.box, "pg", engine="postgres", host="127.0.0.1", port=5432, username="x", database="app"
        )
        target = target_from_row(conn)
    journal = MemoryJournal()
    settings = Settings(data_dir=tmp_path / "data")
    svc = ApprovalService(store, journal, settings, node_name="n1")
    for ln in (
        {"name": "two", "match": {"request_types": ["sql", "access"]}, "stages": [{"approvers": ["user:dave"]}, {"approvers": ["user:erin"]}], "allow_urgent": True},
        {"name": "export", "priority": 5, "match": {"request_types": ["export"]}, "stages": [{"approvers": ["user:dave"]}]},
    ):  # fmt: skip
        await svc.put_line(ApprovalLine.model_validate(ln), create=True)
    carol = Principal(user_id=1, username="carol")
    session = SessionInfo(
        principal=carol, target=target, client=ClientAddress(host="127.0.0.1", port=5000), database="app"
    )
    return Env(svc, journal, store, session)


async def _approved_sql(env: Env, uses: int = 1) -> int:
    r = await env.svc.create(
        requester="carol", created_by="carol", type_=RequestType.SQL, connection="pg", reason="fix",
        details=SqlRequest(sql=UPDATE, uses=uses),
    )  # fmt: skip
    await env.svc.approve(r["id"], "dave", "ok")
    out = await env.svc.approve(r["id"], "erin", "ok")
    assert out["state"] == "approved"
    return int(r["id"])


async def test_two_stage_approval_with_notices_and_audit(env: Env) -> None:
    r = await env.svc.create(
        requester="carol", created_by="carol", type_=RequestType.SQL, connection="pg", reason="fix",
        details=SqlRequest(sql=UPDATE),
    )  # fmt: skip
    assert r["line"] == "two" and r["state"] == "pending" and r["statement_kind"] == "UPDATE"
    with pytest.raises(NotAllowed):
        await env.svc.approve(r["id"], "carol")
    with pytest.raises(NotAllowed):
        await env.svc.approve(r["id"], "erin")
    mid = await env.svc.approve(r["id"], "dave", "looks right")
    assert mid["stage"] == 2 and mid["stages"][0]["approved_by"] == ["dave"]
    done = await env.svc.approve(r["id"], "erin")
    assert done["state"] == "approved" and done["valid_until"] is not None
    steps = [(e["action"], e["actor"]) for e in env.journal.of_type("approval.step")]
    assert steps == [("requested", "carol"), ("stage_approved", "dave"), ("approved", "erin")]


async def test_a_single_use_approval_is_consumed_once_by_concurrent_sessions(env: Env) -> None:
    rid = await _approved_sql(env)
    stmt = Statement(sql=UPDATE, database="app")
    uses = await asyncio.gather(*(env.svc.use_for(env.session, stmt, f"st{i}") for i in range(6)))
    assert sorted(u.request_id is not None for u in uses) == [False] * 5 + [True]
    got = await env.svc.get(rid)
    assert got["state"] == "executed" and got["uses_left"] == 0
    assert [e["statement_id"] for e in env.journal.of_type("approval.step") if e["action"] == "used"] == [
        next(f"st{i}" for i, u in enumerate(uses) if u.request_id is not None)
    ]


async def test_binding_connection_database_and_window(env: Env) -> None:
    rid = await _approved_sql(env, uses=2)
    other_db = Statement(sql=UPDATE, database="other")
    miss = await env.svc.use_for(env.session, other_db, "a")
    assert miss.request_id is None and "needs an approved SQL request" in miss.hint
    changed = await env.svc.use_for(env.session, Statement(sql=UPDATE.replace("5", "6"), database="app"), "b")
    assert changed.request_id is None
    async with env.store.transaction() as s:
        await s.execute(
            update(ApprovalRequestRow)
            .where(ApprovalRequestRow.id == rid)
            .values(valid_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    late = await env.svc.use_for(env.session, Statement(sql=UPDATE, database="app"), "c")
    assert late.request_id is None
    assert await env.svc.expire_due() == [rid]
    assert await env.svc.expire_due() == []  # idempotent
    assert (await env.svc.get(rid))["state"] == "expired"


async def test_access_request_creates_a_grant_that_expires_by_itself(env: Env) -> None:
    r = await env.svc.create(
        requester="carol", created_by="carol", type_=RequestType.ACCESS, connection="pg", reason="audit work",
        details=AccessRequest(privileges=("read-only",), scope={"tables": ["public.ledger"]}), period_hours=2,
    )  # fmt: skip
    before = await load_policy_set(env.store)
    await env.svc.approve(r["id"], "dave")
    done = await env.svc.approve(r["id"], "erin")
    assert done["effect"] == f"approval-{r['id']}"
    ps = await load_policy_set(env.store)
    assert ps.version > before.version
    (g,) = [g for g in ps.grants if g.name == f"approval-{r['id']}"]
    assert (
        g.subject.name == "carol" and g.privileges == ("read-only",) and g.scope.tables == ("public.ledger",)
    )
    assert g.conditions.valid_until is not None
    assert timedelta(hours=1) < g.conditions.valid_until - datetime.now(UTC) <= timedelta(hours=2)
    # withdrawn: the grant goes
    await env.svc.cancel(r["id"], "carol")
    assert not [g for g in (await load_policy_set(env.store)).grants if g.name == f"approval-{r['id']}"]


async def test_export_limit_and_no_line_refusal(env: Env) -> None:
    r = await env.svc.create(
        requester="carol", created_by="carol", type_=RequestType.EXPORT, connection="pg", reason="quarter close",
        details=ExportRequest(max_rows=500_000),
    )  # fmt: skip
    assert await env.svc.export_limit_for("carol", "pg") is None
    await env.svc.approve(r["id"], "dave")
    assert await env.svc.export_limit_for("carol", "pg") == 500_000
    assert await env.svc.export_limit_for("dave", "pg") is None
    with pytest.raises(ValidationError, match="no approval line serves a unmask request"):
        from dbward.approvals.service import UnmaskRequest

        await env.svc.create(
            requester="carol", created_by="carol", type_=RequestType.UNMASK, connection="pg", reason="x",
            details=UnmaskRequest(columns=({"table": "t", "column": "c"},)),
        )  # fmt: skip


async def test_urgent_runs_first_and_waits_for_review(env: Env) -> None:
    r = await env.svc.create(
        requester="carol", created_by="carol", type_=RequestType.SQL, connection="pg", reason="outage",
        details=SqlRequest(sql=UPDATE), urgent=True,
    )  # fmt: skip
    assert r["state"] == "approved" and r["urgent"] and r["review_required"]
    use = await env.svc.use_for(env.session, Statement(sql=UPDATE, database="app"), "s1")
    assert use.request_id == r["id"] and use.urgent
    assert (await env.svc.get(r["id"]))["state"] == "review_pending"
    with pytest.raises(NotAllowed):
        await env.svc.review(r["id"], "carol")
    done = await env.svc.review(r["id"], "erin", "justified")
    assert done["state"] == "executed" and not done["review_required"]
    used = [e for e in env.journal.of_type("approval.step") if e["action"] == "used"]
    assert used[0]["urgent"] and used[0]["review_required"]


# ----------------------------------------------------------------------------- API
@pytest.fixture
async def client(env: Env, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    settings = Settings(data_dir=tmp_path / "node")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    node = Node(settings=settings, store=env.store, journal=env.journal, name="n1")
    app = create_app_from(context_from_node(node), console=False)
    tokens = {
        "carol": await make_token(env.store, "carol", "carol", ["self"]),
        "dave": await make_token(env.store, "dave", "dave", ["self"]),
        "erin": await make_token(env.store, "erin", "erin", ["self"]),
        "itsm": await make_token(env.store, "itsm", "root", ["approvals:write"]),
        "readonly": await make_token(env.store, "ro", "carol", ["read"]),
    }
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c, {k: f"Bearer {v}" for k, v in tokens.items()}


async def test_api_visibility_self_approval_and_itsm_callback(
    client: tuple[httpx.AsyncClient, dict[str, str]], env: Env
) -> None:
    c, t = client
    body = {"type": "sql", "connection": "pg", "sql": UPDATE, "reason": "fix"}
    r = await c.post("/api/v1/approvals/requests", json=body, headers={"authorization": t["carol"]})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    # on someone else's behalf: only an approvals:write token
    r = await c.post(
        "/api/v1/approvals/requests",
        json={**body, "requester": "dave"},
        headers={"authorization": t["carol"]},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await c.post(
        "/api/v1/approvals/requests",
        json={**body, "requester": "erin", "external_ref": "CHG-1"},
        headers={"authorization": t["itsm"]},
    )
    assert r.status_code == 201 and r.json()["created_by"] == "root" and r.json()["requester"] == "erin"
    erin_rid = r.json()["id"]
    # carol sees her own request, not erin's; dave (an approver on the line) sees both
    mine = await c.get("/api/v1/approvals/requests", headers={"authorization": t["carol"]})
    assert [i["id"] for i in mine.json()["items"]] == [rid]
    hidden = await c.get(f"/api/v1/approvals/requests/{erin_rid}", headers={"authorization": t["carol"]})
    assert hidden.status_code == 404
    dave = await c.get("/api/v1/approvals/requests?to_act=true", headers={"authorization": t["dave"]})
    assert {i["id"] for i in dave.json()["items"]} == {rid, erin_rid}
    # nobody approves their own request; a read token decides nothing
    own = await c.post(
        f"/api/v1/approvals/requests/{rid}/approve", json={}, headers={"authorization": t["carol"]}
    )
    assert own.status_code == 403 and "own request" in own.json()["error"]["message"]
    ro = await c.post(
        f"/api/v1/approvals/requests/{rid}/approve", json={}, headers={"authorization": t["readonly"]}
    )
    assert ro.status_code == 403
    # the ITSM reports its approvers' decisions by external_ref
    cb = {"external_ref": "CHG-1", "decision": "approve", "approver": "dave", "comment": "CAB approved"}
    r = await c.post("/api/v1/approvals/callback", json=cb, headers={"authorization": t["dave"]})
    assert r.status_code == 403
    r = await c.post("/api/v1/approvals/callback", json=cb, headers={"authorization": t["itsm"]})
    assert r.status_code == 200 and r.json()["stage"] == 2
    r = await c.post(
        "/api/v1/approvals/callback", json={**cb, "approver": "erin"}, headers={"authorization": t["itsm"]}
    )
    assert r.status_code == 403  # erin is the requester of CHG-1
    r = await c.post(
        "/api/v1/approvals/callback",
        json={**cb, "decision": "reject", "approver": "carol"},
        headers={"authorization": t["itsm"]},
    )
    assert r.status_code == 403  # carol is no approver of stage 2
    steps = [e for e in env.journal.of_type("approval.step") if e["request_id"] == str(erin_rid)]
    assert steps[-1]["external_ref"] == "CHG-1" and steps[-1]["comment"] == "CAB approved"
    # cancel: the requester only
    r = await c.post(
        f"/api/v1/approvals/requests/{rid}/cancel", json={}, headers={"authorization": t["dave"]}
    )
    assert r.status_code == 403
    r = await c.post(
        f"/api/v1/approvals/requests/{rid}/cancel",
        json={"comment": "not needed"},
        headers={"authorization": t["carol"]},
    )
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    again = await c.post(
        f"/api/v1/approvals/requests/{rid}/cancel", json={}, headers={"authorization": t["carol"]}
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
