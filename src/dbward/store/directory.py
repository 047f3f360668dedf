"""The proxy's read path into the store: users and their secrets, targets, grants.

Implements :class:`~dbward.proxy.engine.Authenticator`, :class:`~dbward.proxy.engine.TargetDirectory`
and the grants of a connection, over the metadata store.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select

from dbward.domain import EngineType, Principal, Target, TlsMode
from dbward.identity.ephemeral import EphemeralTokens
from dbward.identity.secrets import SecretVerifiers
from dbward.policy.decider import GrantView
from dbward.proxy.engine import StoredSecret, UserCredentials
from dbward.store.db import Store
from dbward.store.models import (
    Connection,
    Grant,
    Group,
    GroupMember,
    ProxyToken,
    Role,
    RoleAssignment,
    User,
    utcnow,
)


def target_from_row(c: Connection) -> Target:
    return Target(
        id=c.id,
        name=c.name,
        engine=EngineType(c.engine),
        host=c.host,
        port=c.port,
        database=c.database,
        username=c.username,
        tls_mode=TlsMode(c.tls_mode),
        tls_ca=c.tls_ca,
        listen_port=c.listen_port,
        options=dict(c.options or {}),
    )


def _aware(d: datetime | None) -> datetime | None:
    if d is None:
        return None
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


class StoreDirectory:
    def __init__(self, store: Store, ephemeral: EphemeralTokens | None = None) -> None:
        self.store = store
        # the console SQL editor's one-login tokens (identity/ephemeral.py), if this node has any
        self.ephemeral = ephemeral

    async def lookup(self, username: str) -> UserCredentials | None:
        """The user's principal and every secret they may sign in with; None when there is no
        such user or they are disabled. Runs at every login: four Core queries on one
        connection (the ORM's per-row bookkeeping cost more than the queries themselves)."""
        now = datetime.now(UTC)
        async with self.store.engine.connect() as conn:
            user = (
                await conn.execute(
                    select(
                        User.id, User.username, User.is_admin, User.disabled, User.password_verifiers
                    ).where(User.username == username)
                )
            ).one_or_none()
            if user is None or user.disabled:
                return None
            groups = (
                await conn.execute(
                    select(Group.id, Group.name)
                    .join(GroupMember, GroupMember.group_id == Group.id)
                    .where(GroupMember.user_id == user.id)
                )
            ).all()
            group_ids = [g.id for g in groups]
            roles = (
                await conn.execute(
                    select(Role.name)
                    .join(RoleAssignment, RoleAssignment.role_id == Role.id)
                    .where(
                        or_(
                            (RoleAssignment.subject_type == "user") & (RoleAssignment.subject_id == user.id),
                            (RoleAssignment.subject_type == "group")
                            & (RoleAssignment.subject_id.in_(group_ids)),
                        )
                    )
                )
            ).scalars()
            role_names = frozenset(roles)
            tokens = (
                await conn.execute(
                    select(
                        ProxyToken.name,
                        ProxyToken.verifiers,
                        ProxyToken.created_at,
                        ProxyToken.expires_at,
                        ProxyToken.revoked_at,
                    ).where(ProxyToken.user_id == user.id)
                )
            ).all()
        secrets: list[StoredSecret] = []
        if user.password_verifiers:
            secrets.append(
                StoredSecret(
                    method="password",
                    name="password",
                    verifiers=SecretVerifiers.from_json(self.store.box.decrypt(user.password_verifiers)),
                )
            )
        for t in sorted(tokens, key=lambda t: _aware(t.created_at) or now, reverse=True):
            exp = _aware(t.expires_at)
            if t.revoked_at is not None or (exp is not None and exp <= now):
                continue
            secrets.append(
                StoredSecret(
                    method="proxy_token",
                    name=t.name,
                    verifiers=SecretVerifiers.from_json(self.store.box.decrypt(t.verifiers)),
                )
            )
        if self.ephemeral is not None:
            secrets.extend(self.ephemeral.secrets_for(user.username))
        principal = Principal(
            user_id=user.id,
            username=user.username,
            groups=frozenset(g.name for g in groups),
            roles=role_names,
            is_admin=user.is_admin,
        )
        return UserCredentials(principal=principal, secrets=tuple(secrets))

    async def touch_token(self, username: str, token_name: str) -> None:
        async with self.store.transaction() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                return
            tok = (
                await s.execute(
                    select(ProxyToken).where(ProxyToken.user_id == user.id, ProxyToken.name == token_name)
                )
            ).scalar_one_or_none()
            if tok is not None:
                tok.last_used_at = utcnow()

    async def by_listen_port(self, port: int) -> Target | None:
        async with self.store.session() as s:
            c = (
                await s.execute(select(Connection).where(Connection.listen_port == port))
            ).scalar_one_or_none()
            return target_from_row(c) if c else None

    async def by_name(self, name: str) -> Target | None:
        async with self.store.session() as s:
            c = (await s.execute(select(Connection).where(Connection.name == name))).scalar_one_or_none()
            return target_from_row(c) if c else None

    async def all_targets(self) -> list[Target]:
        async with self.store.session() as s:
            rows = (await s.execute(select(Connection).order_by(Connection.name))).scalars().all()
            return [target_from_row(c) for c in rows]

    async def upstream_password(self, target: Target) -> str | None:
        async with self.store.engine.connect() as conn:  # at every login: a Core query
            secret = (
                await conn.execute(select(Connection.secret).where(Connection.id == target.id))
            ).scalar_one_or_none()
        return None if secret is None else self.store.box.decrypt(secret)

    async def grants_for(self, principal: Principal, target: Target) -> list[GrantView]:
        async with self.store.session() as s:
            rows = (await s.execute(select(Grant).where(Grant.connection_id == target.id))).scalars().all()
            return [
                GrantView(
                    name=g.name,
                    subject_type=g.subject_type,
                    subject_name=g.subject_name,
                    connection=target.name,
                    privileges=tuple(g.privileges or ()),
                    scope=dict(g.scope or {}),
                    expires_at=_aware(g.expires_at),
                )
                for g in rows
            ]
