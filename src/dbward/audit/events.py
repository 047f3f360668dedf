"""The audit event catalogue. One class per event type; the docstring is its documentation.

Codes are stable forever (an auditor's saved search depends on them): a new event gets a new
code, an obsolete one is never reused. ``docs/audit-events.md`` is generated from this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class AuditEvent:
    """Base of every audit event: who, from where, on which connection, when."""

    type: ClassVar[str] = "event"
    code: ClassVar[str] = "X000"

    time: datetime = field(default_factory=_now)
    user: str | None = None
    connection: str | None = None
    database: str | None = None
    session_id: str | None = None
    client_addr: str | None = None
    client_addr_source: str | None = None
    client_program: str | None = None
    node: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event's fields with ``type`` and ``code``, ``time`` in ISO 8601."""
        d = self.record()
        t = d["time"]
        if isinstance(t, datetime):
            d["time"] = t.isoformat()
        return d

    def record(self) -> dict[str, Any]:
        """:meth:`to_dict` as the journal serialises it: the same keys and values, but a
        ``time`` in UTC stays a datetime, which orjson writes exactly as ``isoformat()``
        does (``2026-01-07T12:00:00.000123+00:00``; no fraction when it is zero), in C."""
        # dataclasses.asdict deep-copies (about 20 us an event); this is the hot path. The
        # instance dict holds exactly the fields, in their order, unless someone set another
        # attribute on the event: then only the fields are taken.
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        d: dict[str, Any] = {"type": self.type, "code": self.code}
        own = self.__dict__
        if len(own) == len(names):
            d.update(own)
        else:
            for name in names:
                d[name] = getattr(self, name)
        t = self.time
        if t.tzinfo is not UTC:
            d["time"] = t.isoformat()
        return d


@dataclass(kw_only=True)
class SessionStarted(AuditEvent):
    """A client authenticated, the policy allowed the connection and the upstream is ready."""

    type: ClassVar[str] = "session.start"
    code: ClassVar[str] = "S001I"
    protocol: str = ""
    tls: bool = False
    auth_method: str = ""


@dataclass(kw_only=True)
class SessionRejected(AuditEvent):
    """A proxy session did not start: bad credentials (proxy sign-in failure), connection denied
    by the policy, or the target unreachable. ``error_code`` says which."""

    type: ClassVar[str] = "session.rejected"
    code: ClassVar[str] = "S001W"
    protocol: str = ""
    reason: str = ""
    error_code: str = ""


@dataclass(kw_only=True)
class SessionEnded(AuditEvent):
    """A session ended: client quit, disconnect, idle timeout, kill, or protocol error."""

    type: ClassVar[str] = "session.end"
    code: ClassVar[str] = "S002I"
    reason: str = "client quit"
    statements: int = 0
    duration_ms: float = 0.0


@dataclass(kw_only=True)
class StatementDecided(AuditEvent):
    """The gate's decision on one statement, written before anything reaches the target."""

    type: ClassVar[str] = "statement.decision"
    code: ClassVar[str] = "Q001I"
    statement_id: str = ""
    sql: str = ""
    origin: str = ""
    params: list[Any] | None = None
    effect: str = ""
    reasons: list[str] = field(default_factory=list)
    rule_ids: list[str] = field(default_factory=list)
    kind: str | None = None
    fingerprint: str | None = None


@dataclass(kw_only=True)
class StatementCompleted(AuditEvent):
    """An allowed statement finished: rows returned or affected, bytes, duration, error."""

    type: ClassVar[str] = "statement.complete"
    code: ClassVar[str] = "Q002I"
    statement_id: str = ""
    rows: int | None = None
    affected: int | None = None
    bytes_sent: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    error_code: str | None = None
    truncated: bool = False


@dataclass(kw_only=True)
class AdminChange(AuditEvent):
    """An administrative change with before and after values (secrets redacted)."""

    type: ClassVar[str] = "admin.change"
    code: ClassVar[str] = "A001I"
    object_type: str = ""
    object_name: str = ""
    action: str = ""  # create | update | delete
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source: str = "cli"  # cli | api | console | apply


@dataclass(kw_only=True)
class SigninSucceeded(AuditEvent):
    """A person signed in to the console or the API (proxy logins are ``session.start``)."""

    type: ClassVar[str] = "auth.signin"
    code: ClassVar[str] = "U001I"
    surface: str = "console"  # console | api
    method: str = "password"  # password | totp | oidc | saml | api_token


@dataclass(kw_only=True)
class SigninFailed(AuditEvent):
    """A console or API sign-in failed (proxy login failures are ``session.rejected``)."""

    type: ClassVar[str] = "auth.signin_failed"
    code: ClassVar[str] = "U001W"
    surface: str = "console"
    method: str = "password"
    reason: str = ""


@dataclass(kw_only=True)
class MaskingApplied(AuditEvent):
    """Result columns of a statement were masked; names each output column and the rule."""

    type: ClassVar[str] = "statement.masked"
    code: ClassVar[str] = "Q003I"
    statement_id: str = ""
    # one entry per masked output column: {"column": its name, "rule": rule ids (comma-separated),
    # "algorithm", "position" (1-based), "rules" (list), "sources", "wire_origin"}
    columns: list[dict[str, Any]] = field(default_factory=list)
    # masked columns the statement filtered, joined, sorted or grouped on, allowed with an
    # audit flag by the connection's masking_inference setting
    inference: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ApprovalEvent(AuditEvent):
    """A step of an approval request: requested, stage_approved, approved, rejected, cancelled,
    expired, used (an approved statement was let through the proxy), executed, review."""

    type: ClassVar[str] = "approval.step"
    code: ClassVar[str] = "P001I"
    request_id: str = ""
    request_type: str = ""  # access | sql | unmask | export
    action: str = ""
    actor: str | None = None
    comment: str | None = None
    stage: int | None = None
    #: the request's state after the step (pending, approved, executed, review_pending, ...)
    state: str | None = None
    #: an urgent request (run first, reviewed after); ``review_required`` while its review is due
    urgent: bool = False
    review_required: bool = False
    #: the gate's statement id, for "used" and "executed" (links to statement.decision)
    statement_id: str | None = None
    #: the ticket of the external approval system (ITSM) the request came from
    external_ref: str | None = None


@dataclass(kw_only=True)
class AuditExported(AuditEvent):
    """Someone exported audit events or a result set; says what, for which period and filters."""

    type: ClassVar[str] = "data.export"
    code: ClassVar[str] = "E001I"
    what: str = "audit"  # audit | result
    format: str = ""
    filters: dict[str, Any] = field(default_factory=dict)
    rows: int = 0


@dataclass(kw_only=True)
class Checkpoint(AuditEvent):
    """A signed checkpoint: Ed25519 signature over chain id, seq and hash of the record before it.

    Written by the journal itself every ``checkpoint_every`` events or ``checkpoint_interval``
    seconds and at shutdown, into the chain and into ``journal.jsonl.checkpoints`` beside it.
    """

    type: ClassVar[str] = "audit.checkpoint"
    code: ClassVar[str] = "X001I"
    covers_seq: int = 0
    covers_hash: str = ""
    key_id: str = ""
    signature: str = ""


CATALOGUE: tuple[type[AuditEvent], ...] = (
    SigninSucceeded,
    SigninFailed,
    SessionStarted,
    SessionRejected,
    SessionEnded,
    StatementDecided,
    StatementCompleted,
    MaskingApplied,
    AdminChange,
    ApprovalEvent,
    AuditExported,
    Checkpoint,
)
