"""Repositories on both store backends (SQLite file and a fresh PostgreSQL database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dbward.errors import ConflictError, NotFoundError, ValidationError
from dbward.identity.secrets import verify_argon2
from dbward.store import repo
from dbward.store.db import Store
from dbward.store.directory import StoreDirectory


async def test_users_are_created_listed_updated_and_deleted(store: Store) -> None:
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "ann", password="ann-password-1", email="ann@example.com")
        await repo.create_user(s, store.box, "ben", is_admin=True)
        with pytest.raises(ConflictError, match="user ann already exists"):
            await repo.create_user(s, store.box, "ann")
    async with store.transaction() as s:
        assert [u.username for u in await repo.list_users(s)] == ["ann", "ben"]
        u = await repo.update_user(s, "ann", display_name="Ann Yoon", disabled=True, clear=("email",))
        assert (u.display_name, u.email, u.disabled) == ("Ann Yoon", None, True)
        assert u.password_hash and verify_argon2(u.password_hash, "ann-password-1")
        with pytest.raises(ValidationError, match="at least 8 characters"):
            repo.set_password(u, store.box, "short")
    assert await StoreDirectory(store).lookup("ann") is None  # disabled
    async with store.transaction() as s:
        await repo.delete_user(s, "ben")
        with pytest.raises(NotFoundError, match="user ben does not exist"):
            await repo.delete_user(s, "ben")
        assert [u.username for u in await repo.list_users(s)] == ["ann"]


async def test_groups_roles_and_memberships(store: Store) -> None:
    async with store.transaction() as s:
        for name in ("ann", "ben", "cho"):
            await repo.create_user(s, store.box, name)
        await repo.create_group(s, "analysts", "reads reports")
        await repo.set_group_members(s, "analysts", ["ben", "ann"])
        await repo.create_role(s, "dba")
        await repo.set_role_members(s, "dba", [("group", "analysts"), ("user", "cho")])
    async with store.transaction() as s:
        assert await repo.group_members(s, "analysts") == ["ann", "ben"]
        assert await repo.role_members(s, "dba") == [("user", "cho"), ("group", "analysts")]
        await repo.update_group(s, "analysts", description=None)
        await repo.update_role(s, "dba", description="on call")
        await repo.set_role_members(s, "dba", [("user", "ann")])
        assert await repo.role_members(s, "dba") == [("user", "ann")]
    creds = await StoreDirectory(store).lookup("ann")
    assert creds is not None
    assert creds.principal.groups == frozenset({"analysts"}) and creds.principal.roles == frozenset({"dba"})
    async with store.transaction() as s:
        await repo.delete_group(s, "analysts")
        await repo.delete_role(s, "dba")
        assert await repo.list_groups(s) == [] and await repo.list_roles(s) == []
    creds = await StoreDirectory(store).lookup("ann")
    assert (
        creds is not None and creds.principal.groups == frozenset() and creds.principal.roles == frozenset()
    )


async def test_connections_keep_their_secret_encrypted_and_updates_bump_the_policy_version(
    store: Store,
) -> None:
    async with store.transaction() as s:
        c = await repo.create_connection(
            s, store.box, "shop", engine="mysql", host="db1", port=3306, username="app", password="s3cret-1"
        )
        assert c.secret and "s3cret-1" not in c.secret
        v0 = await repo.policy_version(s)
        await repo.update_connection(s, store.box, "shop", host="db2", listen_port=23306, password="s3cret-2")
        assert await repo.policy_version(s) == v0 + 1
        with pytest.raises(ValidationError, match="tls_mode must be one of"):
            await repo.update_connection(s, store.box, "shop", tls_mode="always")
    async with store.session() as s:
        (c,) = await repo.list_connections(s)
        assert (c.host, c.port, c.listen_port) == ("db2", 3306, 23306)
        assert repo.connection_secret(c, store.box) == "s3cret-2"
    async with store.transaction() as s:
        await repo.update_connection(s, store.box, "shop", password=None, database="shop")
        c = await repo.require_connection(s, "shop")
        assert c.secret is None and c.database == "shop"


async def test_grants_are_replaced_and_deleted_with_their_connection(store: Store) -> None:
    expires = datetime(2031, 1, 1, tzinfo=UTC)
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "ann")
        await repo.create_connection(s, store.box, "a", engine="postgres", host="h", port=5432, username="u")
        await repo.create_connection(s, store.box, "b", engine="postgres", host="h", port=5433, username="u")
        await repo.create_grant(
            s, "g1", subject_type="user", subject_name="ann", connection="a", privileges=["read"]
        )
        await repo.update_grant(
            s,
            "g1",
            subject_type="user",
            subject_name="ann",
            connection="b",
            privileges=["read", "write"],
            scope={"databases": ["x"]},
            expires_at=expires,
        )
    async with store.session() as s:
        ((g, cname),) = await repo.list_grants(s)
        assert (cname, g.privileges, g.scope) == ("b", ["read", "write"], {"databases": ["x"]})
        assert g.expires_at is not None and g.expires_at.replace(tzinfo=UTC) == expires
    async with store.transaction() as s:
        await repo.delete_connection(s, "b")
        assert await repo.list_grants(s) == []
        with pytest.raises(NotFoundError, match="grant g1 does not exist"):
            await repo.delete_grant(s, "g1")


async def test_proxy_tokens_are_listed_and_revoked(store: Store) -> None:
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "ann")
        secret = await repo.create_proxy_token(s, store.box, "ann", "etl")
    directory = StoreDirectory(store)
    creds = await directory.lookup("ann")
    assert creds is not None and [x.name for x in creds.secrets] == ["etl"]
    assert verify_argon2(creds.secrets[0].verifiers.argon2, secret)
    async with store.transaction() as s:
        await repo.revoke_proxy_token(s, "ann", "etl")
        (tok,) = await repo.list_proxy_tokens(s, "ann")
        assert tok.revoked_at is not None
    creds = await directory.lookup("ann")
    assert creds is not None and creds.secrets == ()


async def test_deleting_a_subject_removes_its_grants_so_a_namesake_inherits_nothing(store: Store) -> None:
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "ann")
        await repo.create_group(s, "ops")
        await repo.create_role(s, "dba")
        await repo.create_connection(s, store.box, "a", engine="mysql", host="h", port=3306, username="u")
        for subject_type, name in (("user", "ann"), ("group", "ops"), ("role", "dba")):
            await repo.create_grant(
                s,
                f"{name}-a",
                subject_type=subject_type,
                subject_name=name,
                connection="a",
                privileges=["read"],
            )
    async with store.transaction() as s:
        await repo.delete_user(s, "ann")
        await repo.delete_group(s, "ops")
        await repo.delete_role(s, "dba")
        assert await repo.list_grants(s) == []
        await repo.create_user(s, store.box, "ann")
    creds = await StoreDirectory(store).lookup("ann")
    assert creds is not None
    async with store.session() as s:
        conn = await repo.require_connection(s, "a")
    from dbward.store.directory import target_from_row

    assert await StoreDirectory(store).grants_for(creds.principal, target_from_row(conn)) == []
