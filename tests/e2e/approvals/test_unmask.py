"""Unmask requests take effect through the proxy (issue #8): from psql and from the mariadb
client, carol sees customers.phone masked; she files an unmask request, an approver approves it
and the same query shows the clear values, with the decision in the audit trail naming the
request; once the request's period has ended and it expired, the column is masked again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from dbward.approvals.model import ApprovalLine, RequestType
from dbward.approvals.service import UnmaskRequest
from dbward.store import masking_repo, repo
from dbward.store.models import ApprovalRequestRow
from tests.conftest import RunningNode
from tests.e2e.approvals.test_sql_approval import CAROL_PASSWORD, mariadb, psql
from tests.e2e.postgres.conftest import policy_changed

CLEAR = "010-1234-5678"
MASKED = "010-****-5678"
QUERY = "SELECT id, phone FROM customers WHERE id = 1"


@pytest.fixture
async def node(dbward_node: RunningNode) -> RunningNode:
    store = dbward_node.store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "carol", password=CAROL_PASSWORD)
        await repo.create_user(s, store.box, "dave", password="dave-password-1")
        for conn in ("pg", "maria"):
            await repo.create_grant(
                s,
                f"carol-{conn}",
                subject_type="user",
                subject_name="carol",
                connection=conn,
                privileges=["read"],
            )
        await masking_repo.put(
            s,
            masking_repo.RULES,
            {"name": "phones", "table": "customers", "column": "phone", "pattern": "phone"},
            create=True,
        )
    await dbward_node.node.approvals.put_line(
        ApprovalLine.model_validate(
            {
                "name": "privacy",
                "match": {"request_types": ["unmask"]},
                "stages": [{"approvers": ["user:dave"]}],
            }
        ),
        create=True,
    )
    policy_changed(dbward_node)
    return dbward_node


def _decisions(node: RunningNode) -> list[dict[str, object]]:
    return [
        e for e in node.journal.of_type("statement.decision") if e["sql"] == QUERY and e["user"] == "carol"
    ]


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_masked_then_clear_after_approval_then_masked_after_expiry(
    node: RunningNode, engine: str
) -> None:
    conn_name, client = ("pg", psql) if engine == "postgres" else ("maria", mariadb)
    port = await node.listen(conn_name)
    svc = node.node.approvals

    async def phone() -> str:
        rc, out, err = await client(port, QUERY)
        assert rc == 0, err
        return out

    # 1. masked
    out = await phone()
    assert MASKED in out and CLEAR not in out

    # 2. filed: still masked while pending
    req = await svc.create(
        requester="carol", created_by="carol", type_=RequestType.UNMASK, connection=conn_name,
        reason="confirm a customer's callback number (ticket 77)", period_hours=1,
        details=UnmaskRequest(columns=({"table": "customers", "column": "phone"},)),
    )  # fmt: skip
    rid = int(req["id"])
    policy_changed(node)
    out = await phone()
    assert MASKED in out and CLEAR not in out

    # 3. approved: clear, and the decision says why
    approved = await svc.approve(rid, "dave", "ok for one hour")
    assert approved["state"] == "approved"
    policy_changed(node)
    out = await phone()
    assert CLEAR in out and MASKED not in out
    last = _decisions(node)[-1]
    assert f"unmask:{rid}" in last["rule_ids"]  # type: ignore[operator]
    reasons = " ".join(last["reasons"])  # type: ignore[arg-type]
    assert f"shown in clear by approved unmask request #{rid} until" in reasons
    assert "customers.phone" in reasons
    # only for carol: alice (no request) still sees the column masked
    if engine == "postgres":
        import asyncio

        from tests.e2e.postgres.conftest import pg_env

        proc = await asyncio.create_subprocess_exec(
            "psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", "alice", "-d", "dbward_test",
            "-c", QUERY, env=pg_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        alice_out, _ = await proc.communicate()
        assert MASKED in alice_out.decode() and CLEAR not in alice_out.decode()

    # 4. the period ends (moved into the past: no waiting) and the request expires
    async with node.store.transaction() as s:
        await s.execute(
            update(ApprovalRequestRow)
            .where(ApprovalRequestRow.id == rid)
            .values(valid_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await svc.expire_due() == [rid]
    policy_changed(node)
    out = await phone()
    assert MASKED in out and CLEAR not in out
    assert f"unmask:{rid}" not in _decisions(node)[-1]["rule_ids"]  # type: ignore[operator]
    steps = [e["action"] for e in node.journal.of_type("approval.step") if e["request_id"] == str(rid)]
    assert steps == ["requested", "approved", "expired"]
