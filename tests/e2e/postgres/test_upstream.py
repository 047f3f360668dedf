"""Upstream authentication and TLS towards a throwaway PostgreSQL 18 (scram, md5, hostssl)."""

from __future__ import annotations

import psycopg
import pytest

from dbward.store import repo
from dbward.store.directory import target_from_row
from tests.conftest import USER, RunningNode
from tests.e2e.postgres.conftest import ScratchServer, dsn, policy_changed


async def _add(
    node: RunningNode,
    name: str,
    port: int,
    user: str,
    password: str,
    tls_mode: str,
    tls_ca: str | None = None,
) -> int:
    async with node.store.transaction() as s:
        row = await repo.create_connection(
            s,
            node.store.box,
            name,
            engine="postgres",
            host="127.0.0.1",
            port=port,
            username=user,
            password=password,
            database="postgres",
            tls_mode=tls_mode,
            tls_ca=tls_ca,
        )
        await repo.create_grant(
            s,
            f"alice-{name}",
            subject_type="user",
            subject_name=USER,
            connection=name,
            privileges=["admin"],
        )
        node.targets[name] = target_from_row(row)
    policy_changed(node)
    return await node.listen(name)


async def _whoami(port: int) -> tuple[object, ...] | None:
    async with await psycopg.AsyncConnection.connect(dsn(port, dbname="postgres"), autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT current_user, coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)"
        )
        return await cur.fetchone()


async def test_upstream_scram_and_md5(dbward_node: RunningNode, scratch_pg: ScratchServer) -> None:
    p = scratch_pg.port
    assert await _whoami(
        await _add(dbward_node, "s-scram", p, "scram_user", "scram-secret-1", "disable")
    ) == ("scram_user", False)
    assert await _whoami(await _add(dbward_node, "s-md5", p, "md5_user", "md5-secret-1", "disable")) == (
        "md5_user",
        False,
    )
    # PostgreSQL 18 reports search_path; the policy reads it from the session
    async with await psycopg.AsyncConnection.connect(
        dsn(dbward_node.ports["s-scram"], dbname="postgres"), autocommit=True
    ) as conn:
        await conn.execute("SET search_path = audit_schema, public")
        await conn.execute("SELECT 1")
        [live] = [x for x in dbward_node.node.sessions.list() if x.info.target.name == "s-scram"]
        assert live.info.attributes.get("search_path") == "audit_schema, public"
    # prefer falls back to plain text when the target has no TLS
    assert await _whoami(
        await _add(dbward_node, "s-prefer", p, "scram_user", "scram-secret-1", "prefer")
    ) == ("scram_user", False)
    # require does not
    port = await _add(dbward_node, "s-require", p, "scram_user", "scram-secret-1", "require")
    with pytest.raises(
        psycopg.OperationalError, match="does not accept TLS, but the connection's tls_mode is require"
    ):
        await _whoami(port)
    # a wrong vaulted password is the target's 28P01, relayed intact
    port = await _add(dbward_node, "s-badpw", p, "scram_user", "not-the-password", "disable")
    with pytest.raises(
        psycopg.OperationalError, match='password authentication failed for user "scram_user"'
    ):
        await _whoami(port)
    starts = [e["connection"] for e in dbward_node.journal.of_type("session.start")]
    assert starts[:4] == ["s-scram", "s-md5", "s-scram", "s-prefer"]


async def test_upstream_tls_modes(dbward_node: RunningNode, scratch_pg_tls: ScratchServer) -> None:
    p = scratch_pg_tls.port
    assert await _whoami(await _add(dbward_node, "t-prefer", p, "tls_user", "tls-secret-1", "prefer")) == (
        "tls_user",
        True,
    )
    assert await _whoami(await _add(dbward_node, "t-require", p, "tls_user", "tls-secret-1", "require")) == (
        "tls_user",
        True,
    )
    ca = (scratch_pg_tls.datadir / "server.crt").read_text()
    assert await _whoami(
        await _add(dbward_node, "t-verify", p, "tls_user", "tls-secret-1", "verify-full", tls_ca=ca)
    ) == ("tls_user", True)
    # the target's own refusal reaches the client intact (hostssl only, dbward told not to use TLS)
    port = await _add(dbward_node, "t-notls", p, "tls_user", "tls-secret-1", "disable")
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
        await _whoami(port)
    # verify-full against a certificate no trusted CA signed fails with a clear sentence
    port = await _add(dbward_node, "t-noca", p, "tls_user", "tls-secret-1", "verify-full")
    with pytest.raises(
        psycopg.OperationalError, match=r"could not be verified .* set the connection's tls_ca"
    ):
        await _whoami(port)
    # cancel keys are mapped to a TLS target as well
    async with await psycopg.AsyncConnection.connect(
        dsn(await dbward_node.listen("t-require"), dbname="postgres")
    ) as conn:
        import asyncio

        task = asyncio.create_task(conn.execute("SELECT pg_sleep(30)"))
        for _ in range(200):
            if "SELECT pg_sleep(30)" in dbward_node.statements():
                break
            await asyncio.sleep(0.025)
        await asyncio.sleep(0.2)
        await conn.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await task
