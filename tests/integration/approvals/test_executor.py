"""dbward's executor (``approvals/executor.py``) on a real node, real MariaDB and PostgreSQL.

Approved SQL requests run through the node's own proxy as the requester (program
``dbward-scheduler``): a scheduled one at its time and once; one the requester asks to run now
through the API; a failing one with its error recorded; two nodes racing for one request run
it once; and requests a gone node left ``executing`` are resumed, finished from their recorded
outcome, or failed as "outcome unknown", never run twice. The executor's loop is not started:
the tests call its steps (``run_due``, ``recover``) themselves, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pymysql
import pytest
from sqlalchemy import update

from dbward.api.app import context_from_node, create_app_from
from dbward.approvals.model import RequestType
from dbward.approvals.service import SqlRequest
from dbward.audit.journal import MemoryJournal
from dbward.node import Node
from dbward.store import approvals_repo as arepo
from dbward.store import repo
from dbward.store.db import Store
from dbward.store.models import ApprovalRequestRow
from tests.conftest import RunningNode, mysql_root, pg_dsn
from tests.integration.api.conftest import make_token

# these tests change the sample rows for real: put them back after each
pytestmark = pytest.mark.usefixtures("restore_customers")

CAROL_PASSWORD = "carol-password-1"


@dataclass
class World:
    node: RunningNode
    client: httpx.AsyncClient
    tokens: dict[str, str]

    @property
    def n(self) -> Node:
        return self.node.node

    def h(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    async def approved(self, connection: str, sql: str, *, scheduled_at: datetime | None = None) -> int:
        """A SQL request of carol, filed and approved by dave."""
        svc = self.n.approvals
        req = await svc.create(
            requester="carol",
            created_by="carol",
            type_=RequestType.SQL,
            connection=connection,
            reason="month-end fix, ticket OPS-7",
            details=SqlRequest(sql=sql, scheduled_at=scheduled_at),
        )
        done = await svc.approve(req["id"], "dave", "ok")
        assert done["state"] == "approved"
        return int(req["id"])

    async def request(self, rid: int) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/approvals/requests/{rid}", headers=self.h("carol"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def due_now(self, rid: int) -> None:
        """The scheduled time comes (moved into the past: no waiting in tests)."""
        async with self.n.store.transaction() as s:
            await s.execute(
                update(ApprovalRequestRow)
                .where(ApprovalRequestRow.id == rid)
                .values(scheduled_at=datetime.now(UTC) - timedelta(seconds=1))
            )


@pytest.fixture
async def world(dbward_node: RunningNode) -> AsyncIterator[World]:
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
                privileges=["read-only"],
            )
        await arepo.put_line(
            s,
            "writes",
            create=True,
            priority=10,
            enabled=True,
            match={"request_types": ["sql"]},
            stages=[{"name": "dba", "mode": "any", "approvers": ["user:dave"]}],
            allow_urgent=False,
            description="",
        )
    tokens = {u: await make_token(store, f"{u}-self", u, ["self"]) for u in ("carol", "dave")}
    app = create_app_from(context_from_node(dbward_node.node), console=False)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield World(dbward_node, client, tokens)
    await dbward_node.node.executor.stop(5)


def _pg_balance(cid: int) -> Decimal:
    with psycopg.connect(pg_dsn("dbward_test")) as conn:
        row = conn.execute("SELECT balance FROM customers WHERE id = %s", (cid,)).fetchone()
        assert row is not None
        return Decimal(row[0])


def _maria_balance(cid: int) -> Decimal:
    conn = mysql_root()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT balance FROM dbward_test.customers WHERE id = %s", (cid,))
            row = cur.fetchone()
            assert row is not None
            return Decimal(row[0])
    finally:
        conn.close()


def _balance(engine: str, cid: int) -> Decimal:
    return _pg_balance(cid) if engine == "pg" else _maria_balance(cid)


def _client_error(engine: str, port: int, sql: str) -> str:
    """carol runs ``sql`` from her own client, calling herself dbward-scheduler; the error."""
    if engine == "pg":
        with (
            pytest.raises(psycopg.Error) as exc_pg,
            psycopg.connect(
                host="127.0.0.1",
                port=port,
                user="carol",
                password=CAROL_PASSWORD,
                dbname="dbward_test",
                application_name="dbward-scheduler",
                autocommit=True,
                connect_timeout=30,
            ) as conn,
        ):
            conn.execute(sql)
        return str(exc_pg.value)
    my = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="carol",
        password=CAROL_PASSWORD,
        database="dbward_test",
        ssl_disabled=True,
        autocommit=True,
        program_name="dbward-scheduler",
    )
    try:
        with pytest.raises(pymysql.err.MySQLError) as exc_my, my.cursor() as cur:
            cur.execute(sql)
        return str(exc_my.value)
    finally:
        my.close()


def _steps(node: RunningNode, rid: int) -> list[dict[str, Any]]:
    return [e for e in node.journal.of_type("approval.step") if e["request_id"] == str(rid)]


def _decisions(node: RunningNode, rid: int) -> list[dict[str, Any]]:
    return [e for e in node.journal.of_type("statement.decision") if f"approval:{rid}" in e["rule_ids"]]


@pytest.mark.parametrize("engine", ["pg", "maria"])
async def test_a_scheduled_update_runs_once_at_its_time_through_the_proxy(world: World, engine: str) -> None:
    w, node = world, world.node
    sql = "UPDATE customers SET balance = balance + 10 WHERE id = 2"
    before = _balance(engine, 2)
    rid = await w.approved(engine, sql, scheduled_at=datetime.now(UTC) + timedelta(hours=1))

    # not before its time, and not from carol's own client either (program name or not)
    assert await w.n.executor.run_due() == []
    port = await node.listen(engine)
    message = await asyncio.to_thread(_client_error, engine, port, sql)
    assert f"Approved request #{rid} for this statement is scheduled: dbward runs it itself at" in message
    assert _balance(engine, 2) == before

    # its time comes: one node claims it and runs it, once
    await w.due_now(rid)
    assert await w.n.executor.run_due() == [rid]
    assert await w.n.executor.run_due() == []
    await w.n.executor.wait(rid)
    got = await w.request(rid)
    assert _balance(engine, 2) == before + 10, got["outcome"]

    got = await w.request(rid)
    assert got["state"] == "executed", got
    assert got["execution_state"] == "done" and got["uses_left"] == 0 and got["attempt"] == 1
    assert got["outcome"]["rows_affected"] == 1 and got["outcome"]["error"] is None
    sid = got["statement_id"]
    assert sid and got["outcome"].get("statement_id") == sid, got["outcome"]

    # the audit trail: a session of dbward-scheduler as carol, the statement allowed by the
    # approval, its use and the execution, all naming the same statement id
    allowed = _decisions(node, rid)
    assert len(allowed) == 1
    d = allowed[0]
    assert d["statement_id"] == sid and d["effect"] == "allow" and d["user"] == "carol"
    assert d["client_program"] == "dbward-scheduler"
    assert d["reasons"][0] == f"allowed by approved request #{rid}, run by dbward's executor"
    done = [e for e in node.journal.of_type("statement.complete") if e["statement_id"] == sid]
    assert done and done[0]["affected"] == 1
    steps = _steps(node, rid)
    assert [e["action"] for e in steps] == ["requested", "approved", "executing", "used", "executed"]
    used = steps[3]
    assert used["statement_id"] == sid and used["client_program"] == "dbward-scheduler"
    assert steps[4]["statement_id"] == sid and steps[4]["state"] == "executed"
    assert "1 rows affected" in steps[4]["comment"]
    assert any(
        e["client_program"] == "dbward-scheduler" and e["user"] == "carol"
        for e in node.journal.of_type("session.start")
    )


@pytest.mark.parametrize(
    ("engine", "code_key", "code"),
    [("pg", "sqlstate", "42703"), ("maria", "errno", 1054)],
)
async def test_a_failing_statement_records_its_error(
    world: World, engine: str, code_key: str, code: object
) -> None:
    w = world
    rid = await w.approved(
        engine, "UPDATE customers SET no_such_column = 1 WHERE id = 1", scheduled_at=datetime.now(UTC)
    )
    assert await w.n.executor.run_due() == [rid]
    await w.n.executor.wait(rid)
    got = await w.request(rid)
    assert got["state"] == "failed" and got["execution_state"] == "failed", got
    assert "no_such_column" in got["outcome"]["error"]
    assert got["outcome"][code_key] == code
    assert got["statement_id"] and got["uses_left"] == 0
    last = _steps(w.node, rid)[-1]
    assert last["action"] == "executed" and last["state"] == "failed"
    assert last["comment"].startswith(f"failed as statement {got['statement_id']}: ")
    # a failed run is final: it is not due any more
    assert await w.n.executor.run_due() == []


async def test_the_requester_executes_an_approved_request_now_through_the_api(world: World) -> None:
    w = world
    before = _pg_balance(3)
    rid = await w.approved("pg", "UPDATE customers SET balance = balance - 1 WHERE id = 3")

    # only the requester; and only once
    r = await w.client.post(f"/api/v1/approvals/requests/{rid}/execute", headers=w.h("dave"))
    assert r.status_code == 404, r.text
    r = await w.client.post(f"/api/v1/approvals/requests/{rid}/execute", headers=w.h("carol"))
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "executing" and r.json()["execution_state"] == "claimed"
    again = await w.client.post(f"/api/v1/approvals/requests/{rid}/execute", headers=w.h("carol"))
    assert again.status_code == 409, again.text
    assert "executing" in again.json()["error"]["message"]
    await w.n.executor.wait(rid)
    got = await w.request(rid)
    assert got["state"] == "executed" and got["outcome"]["rows_affected"] == 1, got
    assert _pg_balance(3) == before - 1

    # a scheduled request is not run before its time, even when asked
    later = datetime.now(UTC) + timedelta(hours=2)
    rid2 = await w.approved(
        "pg", "UPDATE customers SET balance = balance - 2 WHERE id = 3", scheduled_at=later
    )
    r = await w.client.post(f"/api/v1/approvals/requests/{rid2}/execute", headers=w.h("carol"))
    assert r.status_code == 409 and "is scheduled for" in r.json()["error"]["message"], r.text


async def test_two_nodes_racing_for_one_request_run_it_once(world: World) -> None:
    w = world
    other = Node(settings=w.n.settings, store=w.n.store, journal=MemoryJournal(), name="test-node-2")
    try:
        before = _maria_balance(1)
        rid = await w.approved(
            "maria", "UPDATE customers SET balance = balance + 5 WHERE id = 1", scheduled_at=datetime.now(UTC)
        )
        a, b = await asyncio.gather(w.n.executor.run_due(), other.executor.run_due())
        assert sorted(a + b) == [rid]
        await asyncio.gather(w.n.executor.wait(rid), other.executor.wait(rid))
        assert _maria_balance(1) == before + 5
        got = await w.request(rid)
        assert got["state"] == "executed" and got["attempt"] == 1
        winner = w.n if a else other
        assert got["outcome"]["node"] == winner.executor.claimer
    finally:
        await other.executor.stop(5)
        await other.proxy.drain(5)


async def _leave_executing(store: Store, rid: int, **values: Any) -> None:
    """What a node that died mid-run leaves in the store."""
    row: dict[str, Any] = {
        "state": "executing",
        "claimed_by": "gone-node#4242-0badc0",
        "claimed_at": datetime.now(UTC) - timedelta(hours=1),
        "attempt": 1,
        **values,
    }
    async with store.transaction() as s:
        await s.execute(update(ApprovalRequestRow).where(ApprovalRequestRow.id == rid).values(**row))


async def test_a_claim_that_never_reached_the_gate_is_resumed(world: World) -> None:
    w = world
    before = _pg_balance(2)
    rid = await w.approved("pg", "UPDATE customers SET balance = balance + 3 WHERE id = 2")
    await _leave_executing(w.n.store, rid, execution_state="claimed")
    # a live claim (renewed just now) is left alone
    async with w.n.store.transaction() as s:
        await arepo.renew_claim(s, rid, claimer="gone-node#4242-0badc0", now=datetime.now(UTC))
    assert await w.n.executor.recover() == []
    await _leave_executing(w.n.store, rid, execution_state="claimed")

    assert await w.n.executor.recover() == [rid]
    await w.n.executor.wait(rid)
    got = await w.request(rid)
    assert got["state"] == "executed" and got["outcome"]["rows_affected"] == 1, got
    assert got["outcome"]["node"] == w.n.executor.claimer
    assert _pg_balance(2) == before + 3
    assert len(_decisions(w.node, rid)) == 1
    assert await w.n.executor.recover() == []


async def test_a_decided_statement_without_an_outcome_fails_as_unknown_and_is_not_run_again(
    world: World,
) -> None:
    w = world
    before = _maria_balance(2)
    rid = await w.approved("maria", "UPDATE customers SET balance = balance + 7 WHERE id = 2")
    await _leave_executing(
        w.n.store, rid, execution_state="running", statement_id="feedc0de00000001", uses_left=0
    )
    assert await w.n.executor.recover() == [rid]
    got = await w.request(rid)
    assert got["state"] == "failed" and got["execution_state"] == "unknown", got
    err = got["outcome"]["error"]
    assert err.startswith("outcome unknown:") and "statement feedc0de00000001" in err
    assert "dbward does not run it again" in err
    assert _maria_balance(2) == before
    assert _decisions(w.node, rid) == []
    last = _steps(w.node, rid)[-1]
    assert last["action"] == "executed" and last["statement_id"] == "feedc0de00000001"


async def test_a_decided_statement_with_a_recorded_outcome_is_finished_from_it(world: World) -> None:
    w = world
    rid = await w.approved("pg", "UPDATE customers SET balance = balance WHERE id = 1")
    run = {"statement_id": "feedc0de00000002", "rows_affected": 1, "rows": None, "error": None}
    await _leave_executing(
        w.n.store,
        rid,
        execution_state="running",
        statement_id="feedc0de00000002",
        uses_left=0,
        outcome={"runs": [run]},
    )
    assert await w.n.executor.recover() == [rid]
    got = await w.request(rid)
    assert got["state"] == "executed" and got["outcome"]["rows_affected"] == 1, got
    assert got["outcome"]["taken_over_from"] == "gone-node#4242-0badc0"


async def test_a_claim_is_taken_once_on_both_store_backends(store: Store) -> None:
    """Two claimers at once on SQLite and PostgreSQL: exactly one wins."""
    now = datetime.now(UTC)
    async with store.transaction() as s:
        row = await arepo.add_request(
            s,
            type="sql",
            state="approved",
            requester="carol",
            created_by="carol",
            connection="pg",
            title="t",
            reason="r",
            payload={"sql": "UPDATE t SET x = 1"},
            line={},
            stage=1,
            urgent=False,
            uses_allowed=1,
            uses_left=1,
            attempt=0,
            outcome={},
            version=1,
            scheduled_at=now - timedelta(seconds=1),
        )
        rid = row.id

    async def claim(who: str) -> bool:
        async with store.transaction() as s:
            return await arepo.claim_execution(s, rid, claimer=who, now=now)

    results = await asyncio.gather(*(claim(f"node-{i}#1") for i in range(8)))
    assert sum(results) == 1
    async with store.session() as s:
        assert await arepo.due_scheduled(s, now) == []
        got = await arepo.require_request(s, rid)
        assert got.state == "executing" and got.execution_state == "claimed" and got.attempt == 1


async def test_a_restarted_node_resolves_its_earlier_process_claim_at_once(world: World) -> None:
    """Same node name, a process id that no longer exists: no waiting for the lease. A claim
    of a live process of this host, renewed just now, is left alone."""
    w = world
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    before = _pg_balance(1)
    rid = await w.approved("pg", "UPDATE customers SET balance = balance + 4 WHERE id = 1")
    live = f"test-node#{os.getpid()}-abcdef"
    await _leave_executing(w.n.store, rid, execution_state="claimed", claimed_by=live)
    async with w.n.store.transaction() as s:
        await arepo.renew_claim(s, rid, claimer=live, now=datetime.now(UTC))
    assert await w.n.executor.recover() == []

    dead = f"test-node#{proc.pid}-abcdef"
    await _leave_executing(w.n.store, rid, execution_state="claimed", claimed_by=dead)
    async with w.n.store.transaction() as s:
        await arepo.renew_claim(s, rid, claimer=dead, now=datetime.now(UTC))
    assert await w.n.executor.recover() == [rid]
    await w.n.executor.wait(rid)
    got = await w.request(rid)
    assert got["state"] == "executed" and _pg_balance(1) == before + 4, got
