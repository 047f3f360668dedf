"""Approved unmask requests reach the policy on both store backends: approving one changes the
policy version and the evaluator shows the columns in clear for the requester; the period's
end masks them again before any reload, and expiry (or cancelling) removes the exemption from
the policy set that every node reloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dbward.approvals.model import ApprovalLine, RequestType
from dbward.approvals.service import ApprovalService, UnmaskRequest
from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.domain import ClientAddress, Principal, SessionInfo, Statement
from dbward.policy.evaluator import PolicyEvaluator, StaticCatalogProvider
from dbward.policy.model import Effect
from dbward.sql.lineage import Catalog
from dbward.store import masking_repo, repo
from dbward.store.db import Store
from dbward.store.directory import target_from_row
from dbward.store.policy_source import StorePolicyProvider, load_policy_set

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = Catalog({("public", "emp"): ("id", "name", "rrn", "phone")}, version=1, database="hr")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _world(store: Store, tmp_path: Path, clock: Clock) -> tuple[ApprovalService, SessionInfo]:
    async with store.transaction() as s:
        for u in ("carol", "dave"):
            await repo.create_user(s, store.box, u, password=f"{u}-password-1")
        conn = await repo.create_connection(
            s, store.box, "hr", engine="postgres", host="127.0.0.1", port=5432, username="x", database="hr"
        )
        await repo.create_grant(
            s, "carol-hr", subject_type="user", subject_name="carol", connection="hr", privileges=["read"]
        )
        for name, column in (("rrn", "rrn"), ("phone", "phone")):
            await masking_repo.put(
                s,
                masking_repo.RULES,
                {
                    "name": f"mask-{name}",
                    "schema": "public",
                    "table": "emp",
                    "column": column,
                    "algorithm": "full",
                },
                create=True,
            )
        target = target_from_row(conn)
    svc = ApprovalService(
        store, MemoryJournal(), Settings(data_dir=tmp_path / "data"), node_name="n1", clock=clock
    )
    await svc.put_line(
        ApprovalLine.model_validate(
            {
                "name": "unmask",
                "match": {"request_types": ["unmask"]},
                "stages": [{"approvers": ["user:dave"]}],
            }
        ),
        create=True,
    )
    session = SessionInfo(
        principal=Principal(user_id=1, username="carol"),
        target=target,
        client=ClientAddress(host="127.0.0.1", port=5000),
        database="hr",
    )
    return svc, session


async def _file(svc: ApprovalService, hours: float = 2) -> int:
    r = await svc.create(
        requester="carol", created_by="carol", type_=RequestType.UNMASK, connection="hr",
        reason="verify a customer's identity (ticket 9)", period_hours=hours,
        details=UnmaskRequest(columns=({"schema": "public", "table": "emp", "column": "rrn"},)),
    )  # fmt: skip
    return int(r["id"])


async def test_approval_period_expiry_and_reload(store: Store, tmp_path: Path) -> None:
    clock = Clock(T0)
    svc, session = await _world(store, tmp_path, clock)
    provider = StorePolicyProvider(store, check_interval=0)
    ev = PolicyEvaluator(provider, catalog=StaticCatalogProvider(CATALOG), clock=clock)
    sql = Statement(sql="SELECT id, rrn, phone FROM emp")

    d = await ev.decide_statement(session, sql)
    assert d.effect is Effect.ALLOW and d.masking is not None and set(d.masking.columns) == {1, 2}

    rid = await _file(svc)
    d = await ev.decide_statement(session, sql)
    assert d.masking is not None and set(d.masking.columns) == {1, 2}  # pending: still masked

    v0 = (await load_policy_set(store)).version
    out = await svc.approve(rid, "dave", "identity check ok")
    assert out["state"] == "approved"
    ps = await load_policy_set(store)
    assert ps.version > v0
    (u,) = ps.unmasks
    assert (u.request_id, u.user, u.connection, u.table, u.column) == (rid, "carol", "hr", "emp", "rrn")
    assert u.valid_from == T0 and u.valid_until == T0 + timedelta(hours=2)

    clock.now = T0 + timedelta(hours=1)
    d = await ev.decide_statement(session, sql)
    assert d.allowed and d.masking is not None and set(d.masking.columns) == {2}  # phone stays masked
    assert f"unmask:{rid}" in d.rule_ids
    assert (
        f"column public.emp.rrn shown in clear by approved unmask request #{rid} until 2026-03-02 11:00:00 UTC"
        in d.reasons
    )
    assert "public.emp.rrn" not in await ev.wire_sources(session)

    # the period ends: masked at once, before any node has expired the request
    clock.now = T0 + timedelta(hours=2)
    d = await ev.decide_statement(session, sql)
    assert d.masking is not None and set(d.masking.columns) == {1, 2} and f"unmask:{rid}" not in d.rule_ids

    # expiry marks it expired and changes the version: the reloaded set has no exemption left
    v1 = (await load_policy_set(store)).version
    assert await svc.expire_due() == [rid]
    ps = await load_policy_set(store)
    assert ps.version > v1 and ps.unmasks == ()
    assert (await provider.current()).unmasks == ()


async def test_cancelled_unmask_is_withdrawn(store: Store, tmp_path: Path) -> None:
    clock = Clock(T0)
    svc, session = await _world(store, tmp_path, clock)
    ev = PolicyEvaluator(
        StorePolicyProvider(store, check_interval=0), catalog=StaticCatalogProvider(CATALOG), clock=clock
    )
    rid = await _file(svc, hours=8)
    await svc.approve(rid, "dave")
    d = await ev.decide_statement(session, Statement(sql="SELECT rrn FROM emp"))
    assert d.allowed and (d.masking is None or not d.masking.columns) and f"unmask:{rid}" in d.rule_ids
    await svc.cancel(rid, "carol", "done early")
    d = await ev.decide_statement(session, Statement(sql="SELECT rrn FROM emp"))
    assert d.masking is not None and set(d.masking.columns) == {0}
    assert (await load_policy_set(store)).unmasks == ()
