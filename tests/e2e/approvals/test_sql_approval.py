"""The headline of issue #8: a read-only user is refused an UPDATE with a message that points to
a request; the request is filed through the API; a two-stage line (two different approvers)
approves it; the identical statement then runs once through the proxy, from psql and from the
mariadb client, and a second run, a changed literal and a passed window are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pymysql
import pytest
from sqlalchemy import update

from dbward.api.app import context_from_node, create_app_from
from dbward.store import repo
from dbward.store.models import ApprovalRequestRow
from tests.conftest import MYSQL_HOST, MYSQL_PORT, RunningNode, mysql_root, pg_dsn
from tests.e2e.mysql.conftest import run
from tests.e2e.postgres.conftest import pg_env
from tests.integration.api.conftest import make_token

# these tests change the sample rows for real: put them back after each
pytestmark = pytest.mark.usefixtures("restore_customers")

CAROL_PASSWORD = "carol-password-1"
UPDATE = "UPDATE customers SET balance = 777.00 WHERE id = 3"


@dataclass
class World:
    node: RunningNode
    client: httpx.AsyncClient
    tokens: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[who]}"}

    async def file(self, connection: str, sql: str, **extra: Any) -> dict[str, Any]:
        r = await self.client.post(
            "/api/v1/approvals/requests",
            json={"type": "sql", "connection": connection, "sql": sql, "reason": "fix a balance", **extra},
            headers=self.h("carol"),
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def approve_both(self, rid: int) -> dict[str, Any]:
        r = await self.client.post(
            f"/api/v1/approvals/requests/{rid}/approve", json={"comment": "ok"}, headers=self.h("dave")
        )
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "pending" and r.json()["stage"] == 2
        # dave cannot approve stage 2 too (a person approves once), and carol never
        again = await self.client.post(
            f"/api/v1/approvals/requests/{rid}/approve", json={}, headers=self.h("dave")
        )
        assert again.status_code == 403, again.text
        own = await self.client.post(
            f"/api/v1/approvals/requests/{rid}/approve", json={}, headers=self.h("carol")
        )
        assert own.status_code == 403 and "own request" in own.json()["error"]["message"]
        r = await self.client.post(
            f"/api/v1/approvals/requests/{rid}/approve", json={"comment": "go"}, headers=self.h("erin")
        )
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "approved"
        return dict(r.json())


@pytest.fixture
async def world(dbward_node: RunningNode) -> AsyncIterator[World]:
    store = dbward_node.store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "carol", password=CAROL_PASSWORD)
        await repo.create_user(s, store.box, "dave", password="dave-password-1")
        await repo.create_user(s, store.box, "erin", password="erin-password-1")
        for conn in ("pg", "maria"):
            await repo.create_grant(
                s,
                f"carol-{conn}",
                subject_type="user",
                subject_name="carol",
                connection=conn,
                privileges=["read-only"],
            )
    tokens = {u: await make_token(store, f"{u}-self", u, ["self"]) for u in ("carol", "dave", "erin")}
    tokens["root"] = await make_token(store, "root-approvals", "alice", ["admin"])
    async with store.transaction() as s:
        (await repo.require_user(s, "alice")).is_admin = True
    app = create_app_from(context_from_node(dbward_node.node), console=False)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        w = World(dbward_node, client, tokens)
        r = await client.post(
            "/api/v1/approvals/lines",
            json={
                "name": "writes",
                "match": {"request_types": ["sql"]},
                "stages": [
                    {"name": "team lead", "approvers": ["user:dave"]},
                    {"name": "dba", "approvers": ["user:erin"]},
                ],
            },
            headers=w.h("root"),
        )
        assert r.status_code == 201, r.text
        yield w


def _balance_pg() -> Any:
    with psycopg.connect(pg_dsn("dbward_test")) as conn:
        row = conn.execute("SELECT balance FROM customers WHERE id = 3").fetchone()
        assert row is not None
        return row[0]


def _balance_maria() -> Any:
    conn = mysql_root()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT balance FROM dbward_test.customers WHERE id = 3")
            row = cur.fetchone()
            assert row is not None
            return row[0]
    finally:
        conn.close()


async def psql(port: int, sql: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
        "-U", "carol", "-d", "dbward_test", "-c", sql,
        env=pg_env(PGPASSWORD=CAROL_PASSWORD),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def mariadb(port: int, sql: str) -> tuple[int, str, str]:
    res = await run(
        "mariadb", "-h", "127.0.0.1", "-P", str(port), "-u", "carol", f"-p{CAROL_PASSWORD}",
        "--batch", "--skip-ssl", "-e", sql, "dbward_test",
    )  # fmt: skip
    return res.rc, res.stdout, res.stderr


def _approval_steps(node: RunningNode, rid: int) -> list[str]:
    return [e["action"] for e in node.journal.of_type("approval.step") if e["request_id"] == str(rid)]


def _decision(node: RunningNode, sql: str) -> list[dict[str, Any]]:
    return [e for e in node.journal.of_type("statement.decision") if e["sql"] == sql]


async def _window_passes(w: World, rid: int) -> None:
    """The approval's window ends (moved into the past: no waiting in tests)."""
    async with w.node.store.transaction() as s:
        await s.execute(
            update(ApprovalRequestRow)
            .where(ApprovalRequestRow.id == rid)
            .values(valid_until=datetime.now(UTC) - timedelta(minutes=1))
        )


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
async def test_update_is_refused_filed_approved_in_two_stages_and_runs_once(
    world: World, engine: str
) -> None:
    w = world
    node = w.node
    if engine == "postgres":
        port = await node.listen("pg")
        client, conn_name, balance = psql, "pg", _balance_pg
        with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as c:
            c.execute("UPDATE customers SET balance = 0 WHERE id = 3")
    else:
        port = await node.listen("maria")
        client, conn_name, balance = mariadb, "maria", _balance_maria
        c2 = pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", ssl_disabled=True, autocommit=True
        )
        with c2.cursor() as cur:
            cur.execute("UPDATE dbward_test.customers SET balance = 0 WHERE id = 3")
        c2.close()

    # 1. refused, and told what to do
    rc, _, err = await client(port, UPDATE)
    assert rc != 0
    assert "needs an approved SQL request" in err
    assert f"/console/requests/new?connection={conn_name}" in err
    assert "POST /api/v1/approvals/requests" in err

    # 2. filed through the API; while pending, the refusal names the request and its approvers
    req = await w.file(conn_name, UPDATE)
    rid = req["id"]
    assert req["state"] == "pending" and req["line"] == "writes" and req["stage"] == 1
    rc, _, err = await client(port, UPDATE)
    assert rc != 0 and f"Request #{rid} for this statement is waiting for approval by user dave" in err

    # 3. two stages, two different people
    await w.approve_both(rid)

    # 4. a changed literal is another statement
    rc, _, err = await client(port, UPDATE.replace("777.00", "778.00"))
    assert rc != 0 and "needs an approved SQL request" in err

    # 5. the identical statement (whitespace and keyword case do not matter) runs once
    rc, _, err = await client(port, UPDATE.lower().replace(" where", "\n  WHERE"))
    assert rc == 0, err
    assert str(balance()) in ("777.00", "777")
    rc, _, err = await client(port, UPDATE)
    assert rc != 0 and "needs an approved SQL request" in err

    # the audit trail: the use, the statement allowed by approval:<id>, the outcome
    allowed = [
        e
        for e in node.journal.of_type("statement.decision")
        if e["effect"] == "allow" and f"approval:{rid}" in e["rule_ids"]
    ]
    assert len(allowed) == 1
    assert allowed[0]["reasons"][0].startswith(f"allowed by approved request #{rid}")
    used = [
        e
        for e in node.journal.of_type("approval.step")
        if e["request_id"] == str(rid) and e["action"] == "used"
    ]
    assert len(used) == 1 and used[0]["statement_id"] == allowed[0]["statement_id"]
    assert _approval_steps(node, rid) == ["requested", "stage_approved", "approved", "used", "executed"]
    got = await w.client.get(f"/api/v1/approvals/requests/{rid}", headers=w.h("carol"))
    assert got.json()["state"] == "executed" and got.json()["uses_left"] == 0
    assert got.json()["outcome"]["rows_affected"] == 1

    # 6. an approval whose window has passed is refused (and then expires)
    req2 = await w.file(conn_name, UPDATE)
    await w.approve_both(req2["id"])
    await _window_passes(w, req2["id"])
    rc, _, err = await client(port, UPDATE)
    assert rc != 0 and "needs an approved SQL request" in err
    assert await node.node.approvals.expire_due() == [req2["id"]]
    got = await w.client.get(f"/api/v1/approvals/requests/{req2['id']}", headers=w.h("carol"))
    assert got.json()["state"] == "expired"
