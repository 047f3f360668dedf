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


async def require_group(s: AsyncSession, name: str) -> Group:
    g = await get_group(s, name)
    if g is None:
        raise NotFoundError(f"group {name} does not exist")
    return g


async def create_group(s: AsyncSession, name: str, description: str | None = None) -> Group:
    if await get_group(s, name) is not None:
        raise ConflictError(f"group {name} already exists")
    g = Group(name=name, description=description)
    s.add(g)
    await s.flush()
    return g


async def set_group_members(s: AsyncSession, group: str, usernames: list[str]) -> None:
    g = await require_group(s, group)
    await s.execute(delete(GroupMember).where(GroupMember.group_id == g.id))
    for u in usernames:
        user = await require_user(s, u)
        s.add(GroupMember(group_id=g.id, user_id=user.id))
    await s.flush()


async def get_role(s: AsyncSession, name: str) -> Role | None:
    return (await s.execute(select(Role).where(Role.name == name))).scalar_one_or_none()


async def require_role(s: AsyncSession, name: str) -> Role:
    r = await get_role(s, name)
    if r is None:
        raise NotFoundError(f"role {name} does not exist")
    return r


async def create_role(s: AsyncSession, name: str, description: str | None = None) -> Role:
    if await get_role(s, name) is not None:
        raise ConflictError(f"role {name} already exists")
    r = Role(name=name, description=description)
    s.add(r)
    await s.flush()
    return r


async def assign_role(s: AsyncSession, role: str, subject_type: str, subject_name: str) -> None:
    r = await require_role(s, role)
    if subject_type == "user":
        subject_id = (await require_user(s, subject_name)).id
    elif subject_type == "group":
        subject_id = (await require_group(s, subject_name)).id
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


# ----------------------------------------------------------------------------- listing / updating
# Used by `dbward apply`, `dbward export` and the `user` / `connection` commands.
async def list_users(s: AsyncSession) -> list[User]:
    return list((await s.execute(select(User).order_by(User.username))).scalars().all())


async def update_user(
    s: AsyncSession,
    username: str,
    *,
    display_name: str | None = None,
    email: str | None = None,
    is_admin: bool | None = None,
    disabled: bool | None = None,
    clear: tuple[str, ...] = (),
) -> User:
    """Change the given fields; ``clear`` names optional fields (display_name, email) to empty."""
    user = await require_user(s, username)
    if display_name is not None or "display_name" in clear:
        user.display_name = display_name
    if email is not None or "email" in clear:
        user.email = email
    if is_admin is not None:
        user.is_admin = is_admin
    if disabled is not None:
        user.disabled = disabled
    await s.flush()
    return user


async def _delete_subject_grants(s: AsyncSession, subject_type: str, name: str) -> None:
    # A grant names its subject; left behind, it would pass to a later object of the same name.
    await s.execute(delete(Grant).where(Grant.subject_type == subject_type, Grant.subject_name == name))


async def delete_user(s: AsyncSession, username: str) -> None:
    """Delete a user with their role assignments and their direct grants."""
    user = await require_user(s, username)
    await s.execute(
        delete(RoleAssignment).where(
            RoleAssignment.subject_type == "user", RoleAssignment.subject_id == user.id
        )
    )
    await _delete_subject_grants(s, "user", username)
    await s.delete(user)
    await s.flush()
    await bump_policy_version(s)


async def list_proxy_tokens(s: AsyncSession, username: str) -> list[ProxyToken]:
    user = await require_user(s, username)
    return list(
        (await s.execute(select(ProxyToken).where(ProxyToken.user_id == user.id).order_by(ProxyToken.name)))
        .scalars()
        .all()
    )


async def get_proxy_token(s: AsyncSession, username: str, name: str) -> ProxyToken | None:
    user = await require_user(s, username)
    return (
        await s.execute(select(ProxyToken).where(ProxyToken.user_id == user.id, ProxyToken.name == name))
    ).scalar_one_or_none()


async def list_groups(s: AsyncSession) -> list[Group]:
    return list((await s.execute(select(Group).order_by(Group.name))).scalars().all())


async def group_members(s: AsyncSession, group: str) -> list[str]:
    g = await require_group(s, group)
    rows = await s.execute(
        select(User.username)
        .join(GroupMember, GroupMember.user_id == User.id)
        .where(GroupMember.group_id == g.id)
        .order_by(User.username)
    )
    return list(rows.scalars().all())


async def update_group(s: AsyncSession, name: str, *, description: str | None) -> Group:
    g = await require_group(s, name)
    g.description = description
    await s.flush()
    return g


async def delete_group(s: AsyncSession, name: str) -> None:
    g = await require_group(s, name)
    await s.execute(
        delete(RoleAssignment).where(
            RoleAssignment.subject_type == "group", RoleAssignment.subject_id == g.id
        )
    )
    await _delete_subject_grants(s, "group", name)
    await s.delete(g)
    await s.flush()
    await bump_policy_version(s)


async def list_roles(s: AsyncSession) -> list[Role]:
    return list((await s.execute(select(Role).order_by(Role.name))).scalars().all())


async def role_members(s: AsyncSession, role: str) -> list[tuple[str, str]]:
    """The role's holders as (subject_type, name), users first, each sorted by name."""
    r = await require_role(s, role)
    users = await s.execute(
        select(User.username)
        .join(
            RoleAssignment, (RoleAssignment.subject_id == User.id) & (RoleAssignment.subject_type == "user")
        )
        .where(RoleAssignment.role_id == r.id)
        .order_by(User.username)
    )
    groups = await s.execute(
        select(Group.name)
        .join(
            RoleAssignment, (RoleAssignment.subject_id == Group.id) & (RoleAssignment.subject_type == "group")
        )
        .where(RoleAssignment.role_id == r.id)
        .order_by(Group.name)
    )
    return [("user", u) for u in users.scalars()] + [("group", g) for g in groups.scalars()]


async def set_role_members(s: AsyncSession, role: str, members: list[tuple[str, str]]) -> None:
    """Make exactly ``members`` (subject_type, name) hold ``role``."""
    r = await require_role(s, role)
    await s.execute(delete(RoleAssignment).where(RoleAssignment.role_id == r.id))
    await s.flush()
    for subject_type, name in members:
        await assign_role(s, role, subject_type, name)
    await bump_policy_version(s)


async def update_role(s: AsyncSession, name: str, *, description: str | None) -> Role:
    r = await require_role(s, name)
    r.description = description
    await s.flush()
    return r


async def delete_role(s: AsyncSession, name: str) -> None:
    r = await require_role(s, name)
    await _delete_subject_grants(s, "role", name)
    await s.delete(r)
    await s.flush()
    await bump_policy_version(s)


async def list_connections(s: AsyncSession) -> list[Connection]:
    return list((await s.execute(select(Connection).order_by(Connection.name))).scalars().all())


async def require_connection(s: AsyncSession, name: str) -> Connection:
    c = await get_connection(s, name)
    if c is None:
        raise NotFoundError(f"connection {name} does not exist")
    return c


_UNSET: Any = object()


async def update_connection(
    s: AsyncSession,
    box: SecretBox,
    name: str,
    *,
    engine: str = _UNSET,
    host: str = _UNSET,
    port: int = _UNSET,
    username: str = _UNSET,
    password: str | None = _UNSET,
    database: str | None = _UNSET,
    tls_mode: str = _UNSET,
    tls_ca: str | None = _UNSET,
    listen_port: int | None = _UNSET,
    description: str | None = _UNSET,
    options: dict[str, Any] = _UNSET,
) -> Connection:
    """Change the given fields (``None`` clears an optional one; ``password=None`` removes it)."""
    c = await require_connection(s, name)
    if engine is not _UNSET:
        if engine not in ENGINES:
            raise ValidationError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        c.engine = engine
    if tls_mode is not _UNSET:
        if tls_mode not in TLS_MODES:
            raise ValidationError(f"tls_mode must be one of {', '.join(TLS_MODES)}, not {tls_mode!r}")
        c.tls_mode = tls_mode
    if password is not _UNSET:
        c.secret = box.encrypt(password) if password is not None else None
    for field_name, value in (
        ("host", host),
        ("port", port),
        ("username", username),
        ("database", database),
        ("tls_ca", tls_ca),
        ("listen_port", listen_port),
        ("description", description),
    ):
        if value is not _UNSET:
            setattr(c, field_name, value)
    if options is not _UNSET:
        c.options = dict(options or {})
    await s.flush()
    await bump_policy_version(s)
    return c


def connection_secret(c: Connection, box: SecretBox) -> str | None:
    """The decrypted upstream password; only for connecting upstream or comparing, never for display."""
    return box.decrypt(c.secret) if c.secret is not None else None


async def delete_connection(s: AsyncSession, name: str) -> None:
    c = await require_connection(s, name)
    await s.execute(delete(Grant).where(Grant.connection_id == c.id))
    await s.delete(c)
    await s.flush()
    await bump_policy_version(s)


async def list_grants(s: AsyncSession) -> list[tuple[Grant, str]]:
    """Every grant with the name of its connection, sorted by grant name."""
    rows = await s.execute(
        select(Grant, Connection.name)
        .join(Connection, Grant.connection_id == Connection.id)
        .order_by(Grant.name)
    )
    return [(g, cname) for g, cname in rows.all()]


async def get_grant(s: AsyncSession, name: str) -> Grant | None:
    return (await s.execute(select(Grant).where(Grant.name == name))).scalar_one_or_none()


async def update_grant(
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
    """Replace every field of grant ``name`` with the given values."""
    g = await get_grant(s, name)
    if g is None:
        raise NotFoundError(f"grant {name} does not exist")
    if subject_type not in SUBJECT_TYPES:
        raise ValidationError(f"a grant's subject type must be one of {', '.join(SUBJECT_TYPES)}")
    conn = await require_connection(s, connection)
    g.subject_type = subject_type
    g.subject_name = subject_name
    g.connection_id = conn.id
    g.privileges = list(privileges)
    g.scope = dict(scope or {})
    g.conditions = dict(conditions or {})
    g.expires_at = expires_at
    g.description = description
    await s.flush()
    await bump_policy_version(s)
    return g


async def delete_grant(s: AsyncSession, name: str) -> None:
    g = await get_grant(s, name)
    if g is None:
        raise NotFoundError(f"grant {name} does not exist")
    await s.delete(g)
    await s.flush()
    await bump_policy_version(s)


# ----------------------------------------------------------------------------- console and API (0004)
# API tokens, console sessions, TOTP, recovery codes, sign-in lockouts and per-user IP rules.
# Only hashes of tokens, session ids and recovery codes are stored; TOTP secrets are encrypted.
from dbward.store.models import (  # noqa: E402  (kept beside the functions that use them)
    ApiToken,
    ConsoleSession,
    RecoveryCode,
    SigninLockout,
    UserIpRule,
    UserTotp,
)


async def list_api_tokens(s: AsyncSession) -> list[tuple[ApiToken, str]]:
    rows = await s.execute(
        select(ApiToken, User.username).join(User, ApiToken.user_id == User.id).order_by(ApiToken.name)
    )
    return [(t, u) for t, u in rows.all()]


async def get_api_token(s: AsyncSession, name: str) -> ApiToken | None:
    return (await s.execute(select(ApiToken).where(ApiToken.name == name))).scalar_one_or_none()


async def api_token_by_hash(s: AsyncSession, token_hash: str) -> tuple[ApiToken, User] | None:
    row = (
        await s.execute(
            select(ApiToken, User)
            .join(User, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == token_hash)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def create_api_token(
    s: AsyncSession,
    name: str,
    *,
    username: str,
    token_hash: str,
    prefix: str,
    scopes: list[str],
    allowed_ips: list[str],
    expires_at: datetime | None,
    description: str | None,
    created_by: str | None,
) -> ApiToken:
    user = await require_user(s, username)
    if await get_api_token(s, name) is not None:
        raise ConflictError(f"an API token named {name} already exists")
    t = ApiToken(
        name=name,
        token_hash=token_hash,
        prefix=prefix,
        user_id=user.id,
        scopes=scopes,
        allowed_ips=allowed_ips,
        expires_at=expires_at,
        description=description,
        created_by=created_by,
    )
    s.add(t)
    await s.flush()
    return t


async def revoke_api_token(s: AsyncSession, name: str) -> ApiToken:
    t = await get_api_token(s, name)
    if t is None:
        raise NotFoundError(f"there is no API token named {name}")
    t.revoked_at = t.revoked_at or utcnow()
    await s.flush()
    return t


async def add_console_session(s: AsyncSession, row: ConsoleSession) -> None:
    s.add(row)
    await s.flush()


async def console_session(s: AsyncSession, session_hash: str) -> tuple[ConsoleSession, User] | None:
    row = (
        await s.execute(
            select(ConsoleSession, User)
            .join(User, ConsoleSession.user_id == User.id)
            .where(ConsoleSession.id == session_hash)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def delete_console_sessions(
    s: AsyncSession, *, session_hash: str | None = None, user_id: int | None = None
) -> None:
    q = delete(ConsoleSession)
    if session_hash is not None:
        q = q.where(ConsoleSession.id == session_hash)
    if user_id is not None:
        q = q.where(ConsoleSession.user_id == user_id)
    await s.execute(q)


async def get_totp(s: AsyncSession, user_id: int) -> UserTotp | None:
    return await s.get(UserTotp, user_id)


async def set_totp(s: AsyncSession, box: SecretBox, user_id: int, secret: str) -> UserTotp:
    row = await s.get(UserTotp, user_id)
    if row is None:
        row = UserTotp(user_id=user_id, secret=box.encrypt(secret), last_step=0)
        s.add(row)
    else:
        row.secret, row.confirmed_at, row.last_step = box.encrypt(secret), None, 0
    await s.flush()
    return row


async def delete_totp(s: AsyncSession, user_id: int) -> None:
    await s.execute(delete(UserTotp).where(UserTotp.user_id == user_id))
    await s.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


async def replace_recovery_codes(s: AsyncSession, user_id: int, hashes: list[str]) -> None:
    await s.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    for h in hashes:
        s.add(RecoveryCode(user_id=user_id, code_hash=h))
    await s.flush()


async def use_recovery_code(s: AsyncSession, user_id: int, code_hash: str) -> bool:
    row = (
        await s.execute(
            select(RecoveryCode).where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == code_hash,
                RecoveryCode.used_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if row is None:
        return False
    row.used_at = utcnow()
    await s.flush()
    return True


async def unused_recovery_codes(s: AsyncSession, user_id: int) -> int:
    rows = await s.execute(
        select(RecoveryCode.id).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    return len(rows.all())


async def get_lockout(s: AsyncSession, username: str) -> SigninLockout | None:
    return await s.get(SigninLockout, username)


async def lockout_row(s: AsyncSession, username: str) -> SigninLockout:
    row = await s.get(SigninLockout, username)
    if row is None:
        row = SigninLockout(username=username, failures=0)
        s.add(row)
    return row


async def clear_lockout(s: AsyncSession, username: str) -> None:
    await s.execute(delete(SigninLockout).where(SigninLockout.username == username))


async def user_ip_rules(s: AsyncSession, user_id: int) -> list[str]:
    rows = await s.execute(
        select(UserIpRule.cidr).where(UserIpRule.user_id == user_id).order_by(UserIpRule.cidr)
    )
    return list(rows.scalars().all())


async def set_user_ip_rules(s: AsyncSession, user_id: int, cidrs: list[str]) -> None:
    await s.execute(delete(UserIpRule).where(UserIpRule.user_id == user_id))
    for c in sorted(set(cidrs)):
        s.add(UserIpRule(user_id=user_id, cidr=c))
    await s.flush()
