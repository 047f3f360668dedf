"""Repositories: the only code that reads and writes the store's tables.

Functions take an ``AsyncSession`` (inside a transaction the caller owns) and the
:class:`~dbward.store.db.Store`'s secret box where secrets are involved. Secrets go in
encrypted and never come out of these functions except through ``connection_secret``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dbward.errors import ConflictError, NotFoundError, ValidationError
from dbward.identity.secrets import make_verifiers, new_token
from dbward.store.crypto import SecretBox
from dbward.store.models import (
    Connection,
    Grant,
    Group,
    GroupMember,
    ProxyToken,
    Role,
    RoleAssignment,
    StoreMeta,
    User,
    utcnow,
)

ENGINES = ("mysql", "postgres")
TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
SUBJECT_TYPES = ("user", "group", "role")


# ----------------------------------------------------------------------------- users
async def get_user(s: AsyncSession, username: str) -> User | None:
    return (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def require_user(s: AsyncSession, username: str) -> User:
    user = await get_user(s, username)
    if user is None:
        raise NotFoundError(f"user {username} does not exist")
    return user


async def create_user(
    s: AsyncSession,
    box: SecretBox,
    username: str,
    *,
    password: str | None = None,
    is_admin: bool = False,
    display_name: str | None = None,
    email: str | None = None,
    must_change_password: bool = False,
) -> User:
    if not username or len(username) > 128 or "/" in username:
        raise ValidationError("a user name must be 1-128 characters and must not contain '/'")
    if await get_user(s, username) is not None:
        raise ConflictError(f"user {username} already exists")
    user = User(
        username=username,
        is_admin=is_admin,
        display_name=display_name,
        email=email,
        must_change_password=must_change_password,
    )
    s.add(user)
    if password is not None:
        set_password(user, box, password)
    await s.flush()
    return user


def set_password(user: User, box: SecretBox, password: str) -> None:
    if len(password) < 8:
        raise ValidationError("a password must have at least 8 characters")
    v = make_verifiers(password)
    user.password_hash = v.argon2
    user.password_verifiers = box.encrypt(v.to_json())


async def create_proxy_token(
    s: AsyncSession, box: SecretBox, username: str, name: str, *, expires_at: datetime | None = None
) -> str:
    """Create (or rotate, if the name exists) a proxy token; returns the secret, shown once."""
    user = await require_user(s, username)
    secret = new_token()
    v = make_verifiers(secret)
    existing = (
        await s.execute(select(ProxyToken).where(ProxyToken.user_id == user.id, ProxyToken.name == name))
    ).scalar_one_or_none()
    if existing is not None:
        existing.verifiers = box.encrypt(v.to_json())
        existing.created_at = utcnow()
        existing.revoked_at = None
        existing.expires_at = expires_at
    else:
        s.add(
            ProxyToken(user_id=user.id, name=name, verifiers=box.encrypt(v.to_json()), expires_at=expires_at)
        )
    await s.flush()
    return secret


async def revoke_proxy_token(s: AsyncSession, username: str, name: str) -> None:
    user = await require_user(s, username)
    tok = (
        await s.execute(select(ProxyToken).where(ProxyToken.user_id == user.id, ProxyToken.name == name))
    ).scalar_one_or_none()
    if tok is None:
        raise NotFoundError(f"user {username} has no proxy token named {name}")
    tok.revoked_at = utcnow()


# ----------------------------------------------------------------------------- groups / roles
async def get_group(s: AsyncSession, name: str) -> Group | None:
    return (await s.execute(select(Group).where(Group.name == name))).scalar_one_or_none()


async def create_group(s: AsyncSession, name: str, description: str | None = None) -> Group:
    if await get_group(s, name) is not None:
        raise ConflictError(f"group {name} already exists")
    g = Group(name=name, description=description)
    s.add(g)
    await s.flush()
    return g


async def set_group_members(s: AsyncSession, group: str, usernames: list[str]) -> None:
    g = await get_group(s, group)
    if g is None:
        raise NotFoundError(f"group {group} does not exist")
    await s.execute(delete(GroupMember).where(GroupMember.group_id == g.id))
    for u in usernames:
        user = await require_user(s, u)
        s.add(GroupMember(group_id=g.id, user_id=user.id))
    await s.flush()


async def get_role(s: AsyncSession, name: str) -> Role | None:
    return (await s.execute(select(Role).where(Role.name == name))).scalar_one_or_none()


async def create_role(s: AsyncSession, name: str, description: str | None = None) -> Role:
    if await get_role(s, name) is not None:
        raise ConflictError(f"role {name} already exists")
    r = Role(name=name, description=description)
    s.add(r)
    await s.flush()
    return r


async def assign_role(s: AsyncSession, role: str, subject_type: str, subject_name: str) -> None:
    r = await get_role(s, role)
    if r is None:
        raise NotFoundError(f"role {role} does not exist")
    if subject_type == "user":
        subject_id = (await require_user(s, subject_name)).id
    elif subject_type == "group":
        g = await get_group(s, subject_name)
        if g is None:
            raise NotFoundError(f"group {subject_name} does not exist")
        subject_id = g.id
    else:
        raise ValidationError("a role is assigned to a user or a group")
    exists = (
        await s.execute(
            select(RoleAssignment).where(
                RoleAssignment.role_id == r.id,
                RoleAssignment.subject_type == subject_type,
                RoleAssignment.subject_id == subject_id,
            )
        )
    ).scalar_one_or_none()
    if exists is None:
        s.add(RoleAssignment(role_id=r.id, subject_type=subject_type, subject_id=subject_id))
        await s.flush()


# ----------------------------------------------------------------------------- connections
async def get_connection(s: AsyncSession, name: str) -> Connection | None:
    return (await s.execute(select(Connection).where(Connection.name == name))).scalar_one_or_none()


async def create_connection(
    s: AsyncSession,
    box: SecretBox,
    name: str,
    *,
    engine: str,
    host: str,
    port: int,
    username: str,
    password: str | None = None,
    database: str | None = None,
    tls_mode: str = "prefer",
    tls_ca: str | None = None,
    listen_port: int | None = None,
    description: str | None = None,
    options: dict[str, Any] | None = None,
) -> Connection:
    if engine not in ENGINES:
        raise ValidationError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if tls_mode not in TLS_MODES:
        raise ValidationError(f"tls_mode must be one of {', '.join(TLS_MODES)}, not {tls_mode!r}")
    if "/" in name:
        raise ValidationError("a connection name must not contain '/' (it is used as connection/database)")
    if await get_connection(s, name) is not None:
        raise ConflictError(f"connection {name} already exists")
    c = Connection(
        name=name,
        engine=engine,
        host=host,
        port=port,
        username=username,
        secret=box.encrypt(password) if password is not None else None,
        database=database,
        tls_mode=tls_mode,
        tls_ca=tls_ca,
        listen_port=listen_port,
        description=description,
        options=options or {},
    )
    s.add(c)
    await s.flush()
    return c


# ----------------------------------------------------------------------------- grants
async def create_grant(
    s: AsyncSession,
    name: str,
    *,
    subject_type: str,
    subject_name: str,
    connection: str,
    privileges: list[str],
    scope: dict[str, Any] | None = None,
    conditions: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
    description: str | None = None,
) -> Grant:
    if subject_type not in SUBJECT_TYPES:
        raise ValidationError(f"a grant's subject type must be one of {', '.join(SUBJECT_TYPES)}")
    conn = await get_connection(s, connection)
    if conn is None:
        raise NotFoundError(f"connection {connection} does not exist")
    if (await s.execute(select(Grant).where(Grant.name == name))).scalar_one_or_none() is not None:
        raise ConflictError(f"grant {name} already exists")
    g = Grant(
        name=name,
        subject_type=subject_type,
        subject_name=subject_name,
        connection_id=conn.id,
        privileges=privileges,
        scope=scope or {},
        conditions=conditions or {},
        expires_at=expires_at,
        description=description,
    )
    s.add(g)
    await s.flush()
    await bump_policy_version(s)
    return g


# ----------------------------------------------------------------------------- policy version
POLICY_VERSION_KEY = "policy_version"


async def policy_version(s: AsyncSession) -> int:
    row = await s.get(StoreMeta, POLICY_VERSION_KEY)
    return int(row.bigint_value or 0) if row else 0


async def bump_policy_version(s: AsyncSession) -> int:
    row = await s.get(StoreMeta, POLICY_VERSION_KEY)
    if row is None:
        row = StoreMeta(key=POLICY_VERSION_KEY, value="", bigint_value=0)
        s.add(row)
    row.bigint_value = int(row.bigint_value or 0) + 1
    await s.flush()
    return row.bigint_value
