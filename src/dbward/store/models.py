"""SQLAlchemy 2 models of the metadata store. Migrations in ``store/migrations`` follow these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class User(TimestampMixin, Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # argon2id hash of the password (None: no local password, e.g. SSO-only users).
    password_hash: Mapped[str | None] = mapped_column(Text)
    # Encrypted JSON of identity.secrets.SecretVerifiers for the wire protocols.
    password_verifiers: Mapped[str | None] = mapped_column(Text)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)

    tokens: Mapped[list[ProxyToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ProxyToken(Base):
    """A per-user secret used as the password for proxy logins (for SSO users, scripts)."""

    __tablename__ = "proxy_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    verifiers: Mapped[str] = mapped_column(Text)  # encrypted SecretVerifiers JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="tokens")
    __table_args__ = (UniqueConstraint("user_id", "name"),)


class Group(TimestampMixin, Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class Role(TimestampMixin, Base):
    __tablename__ = "roles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)


class RoleAssignment(Base):
    """A role held by a user or by every member of a group."""

    __tablename__ = "role_assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"))
    subject_type: Mapped[str] = mapped_column(String(16))  # user | group
    subject_id: Mapped[int] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("role_id", "subject_type", "subject_id"),)


class Connection(TimestampMixin, Base):
    """A target database reachable through dbward."""

    __tablename__ = "connections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    engine: Mapped[str] = mapped_column(String(16))  # mysql | postgres
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    database: Mapped[str | None] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(255))
    # Encrypted upstream password; never returned by any API, CLI output or log.
    secret: Mapped[str | None] = mapped_column(Text)
    tls_mode: Mapped[str] = mapped_column(String(16), default="prefer")
    tls_ca: Mapped[str | None] = mapped_column(Text)
    listen_port: Mapped[int | None] = mapped_column(Integer, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # policy.model.ConnectionPolicy fields: max_rows, approval_required, ledger_tables, ...
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Grant(TimestampMixin, Base):
    """Gives a subject (user, group or role) privilege types on a scope of one connection."""

    __tablename__ = "grants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    subject_type: Mapped[str] = mapped_column(String(16))  # user | group | role
    subject_name: Mapped[str] = mapped_column(String(128))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    # {"databases": ["sales", "hr_*"], "tables": ["sales.orders"]}; empty: whole connection.
    scope: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    privileges: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # {"valid_from", "weekdays", "hours", "timezone", "client_ips"}
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    description: Mapped[str | None] = mapped_column(Text)

    connection: Mapped[Connection] = relationship()


class PrivilegeTypeRow(TimestampMixin, Base):
    """A custom privilege type: a named bundle of statement kinds (built-ins are in code)."""

    __tablename__ = "privilege_types"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kinds: Mapped[list[Any]] = mapped_column(JSON, default=list)
    includes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(Text)


class QueryRuleRow(TimestampMixin, Base):
    """A query rule (policy.model.QueryRule): match text, regex or fingerprint; allow/deny/approve."""

    __tablename__ = "query_rules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(128), unique=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    match: Mapped[str] = mapped_column(String(16))
    pattern: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    connection: Mapped[str | None] = mapped_column(String(128))
    subjects: Mapped[list[Any]] = mapped_column(JSON, default=list)
    message: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text)


class StoreMeta(Base):
    """Small key/value facts about the store, e.g. the policy version counter."""

    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    bigint_value: Mapped[int | None] = mapped_column(BigInteger)


class AuditRecord(Base):
    """The store's copy of the audit journal: one row per record, the canonical line kept whole.

    Filled by the store forwarder (``audit/store.py``) from the journal; ``line`` is what the
    hash chain covers, the other columns are there to search by.
    """

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    code: Mapped[str] = mapped_column(String(16))
    user: Mapped[str | None] = mapped_column(String(128), index=True)
    connection: Mapped[str | None] = mapped_column(String(128), index=True)
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    effect: Mapped[str | None] = mapped_column(String(32))
    line: Mapped[str] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("chain", "seq"),)


class AuditAnchor(Base):
    """Where a pruned chain now starts: the last pruned record's seq and hash, so the rest verifies."""

    __tablename__ = "audit_anchors"
    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    pruned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    pruned_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# ----------------------------------------------------------------------------- console and API (0004)
class ApiToken(Base):
    """A REST API token created by an administrator; only the SHA-256 of the token is kept.

    The token acts as its owner (``user_id``) and never for more than the owner may do; its
    scopes narrow that further (``admin``, ``read``, ``<area>:read``, ``<area>:write``, ``self``).
    """

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a token
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    allowed_ips: Mapped[list[Any]] = mapped_column(JSON, default=list)  # CIDR ranges; empty: any
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConsoleSession(Base):
    """A signed-in console session; ``id`` is the SHA-256 of the cookie value, never the value."""

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # what the person still has to do: totp | enroll | password | done
    stage: Mapped[str] = mapped_column(String(16))
    csrf_token: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32), default="password")
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserTotp(Base):
    """A user's TOTP secret (encrypted with the store's key) and the last time step used."""

    __tablename__ = "user_totp"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)


class RecoveryCode(Base):
    """One single-use TOTP recovery code, kept as a SHA-256 hash."""

    __tablename__ = "recovery_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SigninLockout(Base):
    """Failed console sign-ins per user name (known or not), and the lockout they lead to."""

    __tablename__ = "signin_lockouts"
    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UserIpRule(Base):
    """An address range a user may use the console and the API from (none: any allowed range)."""

    __tablename__ = "user_ip_rules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    cidr: Mapped[str] = mapped_column(String(64))
    __table_args__ = (UniqueConstraint("user_id", "cidr"),)


# ----------------------------------------------------------------------------- approvals (0005)
class ApprovalLineRow(TimestampMixin, Base):
    """An approval line (``approvals/model.py::ApprovalLine``): which requests it serves and
    its one to four stages of approvers. ``match`` and ``stages`` hold the model's JSON."""

    __tablename__ = "approval_lines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # {"connections": [globs], "request_types": [...], "statement_kinds": [...], "ledger": bool|null}
    match: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"name", "mode": any|all, "approvers": ["user:alice", "group:dba"]}, ...]
    stages: Mapped[list[Any]] = mapped_column(JSON, default=list)
    allow_urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)


class ApprovalRequestRow(TimestampMixin, Base):
    """One access, SQL, unmask or export request and its state (``approvals/model.py``).

    The line's stages are copied into ``line`` when the request is filed, so that editing a
    line never changes a request in flight. The execution columns serve both the gate (uses)
    and the scheduled executor (claim, attempt, outcome).
    """

    __tablename__ = "approval_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16), index=True)  # access | sql | unmask | export
    state: Mapped[str] = mapped_column(String(24), index=True)
    requester: Mapped[str] = mapped_column(String(128), index=True)
    created_by: Mapped[str] = mapped_column(String(128))  # differs from requester when on behalf
    external_ref: Mapped[str | None] = mapped_column(String(256), index=True)
    connection: Mapped[str | None] = mapped_column(String(128), index=True)
    database: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    # type-specific request: statement text and params, scope and privileges, columns, rows
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    digest: Mapped[str | None] = mapped_column(String(64), index=True)  # sql: approvals/digest.py
    statement_kind: Mapped[str | None] = mapped_column(String(32))
    line_name: Mapped[str | None] = mapped_column(String(128))
    line: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # snapshot of the line
    stage: Mapped[int] = mapped_column(Integer, default=1)  # 1-based current stage
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    review: Mapped[str | None] = mapped_column(String(16))  # urgent: pending | done
    uses_allowed: Mapped[int] = mapped_column(Integer, default=1)
    uses_left: Mapped[int] = mapped_column(Integer, default=1)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(128))
    effect_ref: Mapped[str | None] = mapped_column(String(128))  # e.g. the grant created
    version: Mapped[int] = mapped_column(Integer, default=1)  # optimistic concurrency
    # scheduled execution by dbward (the executor claims a row, runs it, records the outcome)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    execution_state: Mapped[str | None] = mapped_column(String(16))  # claimed | running | done | failed
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    statement_id: Mapped[str | None] = mapped_column(String(64))  # the gate's audit statement id
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # rows affected, error
    executed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApprovalActionRow(Base):
    """One step taken on a request by a person (or an external system): approve, reject,
    cancel, review, comment. The workflow reads these to know who approved which stage."""

    __tablename__ = "approval_actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    via: Mapped[str | None] = mapped_column(String(32))  # api | console | callback | system
    # the stage's approvers this approval counts for ("user:bob", "group:dba")
    satisfies: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NodeSessionsRow(Base):
    """One node's live proxy sessions as it last wrote them (``proxy/cluster.py``), with its
    heartbeat: the session list of every node reads the rows whose heartbeat is fresh."""

    __tablename__ = "node_sessions"
    node: Mapped[str] = mapped_column(String(128), primary_key=True)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sessions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class SessionKillRequestRow(Base):
    """An administrator's kill of a session that lives on another node; that node polls for its
    requests, ends the session, audits it and marks the request done."""

    __tablename__ = "session_kill_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128), index=True)
    session_id: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_from: Mapped[str | None] = mapped_column(String(64))
    surface: Mapped[str] = mapped_column(String(16), default="api")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(16))  # killed | gone
