"""Live sessions across two real nodes on one store (SQLite and PostgreSQL): a session opened
through node B is listed by node A's API with its node, and killed through node A by node B."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg
import pytest

from dbward.api.app import context_from_node, create_app_from
from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.node import Node
from dbward.store import repo
from dbward.store.db import Store
from dbward.store.directory import target_from_row
from tests.conftest import PG_HOST, PG_PORT, PG_UPSTREAM_PASSWORD, PG_UPSTREAM_USER
from tests.integration.api.conftest import make_token

USER, PASSWORD = "kim", "Kim-password-123"


def node(tmp_path: Path, store: Store, name: str) -> tuple[Node, MemoryJournal]:
    settings = Settings(data_dir=tmp_path / name)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    journal = MemoryJournal()
    return Node(settings=settings, store=store, journal=journal, name=name), journal


async def until(check: object, what: str) -> None:
    for _ in range(100):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def test_sessions_of_node_b_are_listed_and_killed_through_node_a(
    tmp_path: Path, store: Store, pg_upstream: None
) -> None:
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "root", password="Root-password-123", is_admin=True)
        await repo.create_user(s, store.box, USER, password=PASSWORD)
        pg = await repo.create_connection(
            s,
            store.box,
            "pg",
            engine="postgres",
            host=PG_HOST,
            port=PG_PORT,
            username=PG_UPSTREAM_USER,
            password=PG_UPSTREAM_PASSWORD,
            database="dbward_test",
            tls_mode="disable",
        )
        await repo.create_grant(
            s, "kim-pg", subject_type="user", subject_name=USER, connection="pg", privileges=["read-only"]
        )
        target = target_from_row(pg)
    token = await make_token(store, "ops", "root", ["sessions:write"])
    node_a, journal_a = node(tmp_path, store, "node-a")
    node_b, journal_b = node(tmp_path, store, "node-b")
    node_a.start_cluster()
    node_b.start_cluster()
    port_b = (await node_b.listen_for(target, port=0)).bound_port
    app_a = create_app_from(context_from_node(node_a), console=False)
    h = {"authorization": f"Bearer {token}"}
    client = await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=port_b, user=USER, password=PASSWORD, dbname="dbward_test", autocommit=True
    )
    try:
        await client.execute("SELECT 1")
        transport = httpx.ASGITransport(app=app_a, client=("10.7.7.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as api:
            listed: list[dict[str, object]] = []

            async def seen() -> bool:
                listed[:] = (await api.get("/api/v1/sessions", headers=h)).json()
                return any(d["user"] == USER for d in listed)

            await until(seen, "node B's session in node A's list")
            (mine,) = [d for d in listed if d["user"] == USER]
            assert mine["node"] == "node-b" and mine["connection"] == "pg" and mine["statements"] >= 1
            only_a = (await api.get("/api/v1/sessions?node=node-a", headers=h)).json()
            assert only_a == []
            r = await api.delete(f"/api/v1/sessions/{mine['id']}", headers=h)
            assert r.status_code == 204, r.text
            with pytest.raises(psycopg.OperationalError):
                await client.execute("SELECT 1")

            async def gone() -> bool:
                return not any(
                    d["user"] == USER for d in (await api.get("/api/v1/sessions", headers=h)).json()
                )

            await until(gone, "the killed session to leave the list")
            r = await api.delete(f"/api/v1/sessions/{mine['id']}", headers=h)
            assert r.status_code == 404 and "any other node" in r.json()["error"]["message"]
        # audited on the node that killed it, in the administrator's name
        (change,) = journal_b.of_type("admin.change")
        assert change["object_type"] == "session" and change["object_name"] == mine["id"]
        assert change["user"] == "root" and change["client_addr"] == "10.7.7.7" and change["node"] == "node-b"
        assert change["before"]["live"] is True and change["after"]["live"] is False
        assert journal_a.of_type("admin.change") == []
        ends = [e for e in journal_b.of_type("session.end") if e["user"] == USER]
        assert ends and "killed by administrator root" in str(ends[0])
    finally:
        await client.close()
        await node_b.proxy.drain(1)
        await node_a.cluster.stop()
        await node_b.cluster.stop()
