"""Decisions are values: allow, deny or require approval, with the reasons and rule ids; and
the policy set they come from (grants, privilege types, query rules, connection settings)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from dbward.masking.algorithms import Algorithm, MaskSpec, apply_spec
from dbward.masking.patterns import Pattern
from dbward.masking.rules import MaskingPatternDef, MaskingRule, check_masking
from dbward.masking.rules import Unmask as Unmask  # re-exported: PolicySet.unmasks
from dbward.policy.subject import Subject as Subject  # re-exported: it lived here first
from dbward.policy.subject import SubjectType as SubjectType
from dbward.sql.model import StatementKind


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True, kw_only=True)
class ColumnMask:
    """How one result column is masked: by a pattern (the column is a direct copy of columns
    masked with that one pattern) or by an algorithm spec; which masking rules asked for it
    and which source columns (``schema.table.column``) its values can come from."""

    spec: MaskSpec | None = None
    pattern: Pattern | None = None
    rule_ids: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def how(self) -> str:
        if self.pattern is not None:
            return f"pattern {self.pattern.name}"
        return self.spec.algorithm.value if self.spec is not None else "full"

    def apply(self, value: str | None, *, token_key: bytes = b"") -> str | None:
        """The masked value. A token's context is the first rule id, so equal values of one
        rule get equal tokens and tokens of different rules never match."""
        if self.pattern is not None:
            return self.pattern.apply(value)
        spec = self.spec or MaskSpec(algorithm=Algorithm.FULL)
        return apply_spec(spec, value, token_key=token_key, context=self.rule_ids[0] if self.rule_ids else "")


FULL_MASK = ColumnMask(spec=MaskSpec(algorithm=Algorithm.FULL), rule_ids=("masking:unresolved",))


@dataclass(frozen=True, kw_only=True)
class MaskingPlan:
    """Which result columns to mask and how (built by :mod:`dbward.masking.plan`).

    ``columns`` maps a result column index (0-based) to its :class:`ColumnMask`; with
    ``mask_all`` every column is masked with ``all_mask`` whatever ``columns`` says (the
    lineage could not be established and the connection says ``masking_unresolved:
    mask_all``). ``by_source`` holds the maskings of every masked column of the tables the
    statement reads, keyed by ``schema.table.column`` in lower case, for the engines' cross
    check with the wire's column origins (:func:`dbward.masking.plan.wire_mask_columns`).
    ``inference`` names masked columns the statement filters, joins, sorts or groups on when
    the connection allows that with an audit flag. ``statements`` holds one plan (or None)
    per statement when the text held several; the top-level fields then describe the first.
    ``redact_errors``: the statement reads masked values, and a server error can quote them
    (a failed cast, an XPath error), so the engine replaces an error's text with a generic
    sentence, keeping its SQLSTATE / errno.
    """

    columns: dict[int, ColumnMask]
    rule_ids: tuple[str, ...] = ()
    mask_all: bool = False
    all_mask: ColumnMask = FULL_MASK
    by_source: dict[str, ColumnMask] = field(default_factory=dict)
    inference: tuple[str, ...] = ()
    statements: tuple[MaskingPlan | None, ...] = ()
    reasons: tuple[str, ...] = ()
    redact_errors: bool = False

    def mask_for(self, index: int) -> ColumnMask | None:
        return self.all_mask if self.mask_all else self.columns.get(index)

    def describe(self) -> str:
        if self.mask_all:
            return "every column is masked"
        parts = [
            f"column {i + 1} by {', '.join(m.rule_ids)} ({m.how}; from {', '.join(m.sources)})"
            for i, m in sorted(self.columns.items())
        ]
        return "; ".join(parts) if parts else "no column is masked"


@dataclass(frozen=True, kw_only=True)
class Decision:
    effect: Effect
    reasons: tuple[str, ...]
    rule_ids: tuple[str, ...] = ()
    masking: MaskingPlan | None = None
    row_limit: int | None = None
    approval_request_id: str | None = None
    kind: str | None = None  # what the analysis found (for the audit trail)
    fingerprint: str | None = None  # the normalized fingerprint's hash
    #: a refusal an approved SQL request can lift: the user's grants do not cover the
    #: statement, or the policy requires approval (explicit deny rules and proxy settings
    #: stay final). ``masking`` then holds the plan the statement would run under.
    approvable: bool = False

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def message(self) -> str:
        """The reasons as one text for the client: each ends its sentence before the next
        starts (a reason is written without a final full stop)."""
        *first, last = self.reasons or ("",)
        return " ".join([*(r if r.endswith((".", "!", "?")) else f"{r}." for r in first), last])

    @classmethod
    def allow(cls, reason: str, *rule_ids: str, **kw: Any) -> Decision:
        return cls(effect=Effect.ALLOW, reasons=(reason,), rule_ids=tuple(rule_ids), **kw)

    @classmethod
    def deny(cls, reason: str, *rule_ids: str) -> Decision:
        return cls(effect=Effect.DENY, reasons=(reason,), rule_ids=tuple(rule_ids))


# ---------------------------------------------------------------------------------------
# The policy set: grants, privilege types, query rules and per-connection settings.
#
# Plain frozen pydantic models, so that the `dbward apply` YAML and the store can build them
# from dicts (``PolicySet.model_validate(data)``) and nothing here does I/O. The evaluator
# (:mod:`dbward.policy.evaluator`) compiles a PolicySet once per version.


class Scope(BaseModel):
    """Where a grant applies on its connection. Empty lists mean "any"; all empty means the
    whole connection. Patterns are shell globs (``sales_*``), matched case-insensitively.

    ``databases`` are MySQL databases or PostgreSQL databases; ``schemas`` are PostgreSQL
    schemas (in MySQL a schema is a database, so either list works); ``tables`` are
    ``schema.table`` or bare ``table`` patterns and cover tables and views.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    databases: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()

    @property
    def whole_connection(self) -> bool:
        return not (self.databases or self.schemas or self.tables)

    def describe(self) -> str:
        parts: list[str] = []
        if self.databases:
            parts.append(", ".join(self.databases))
        if self.schemas:
            parts.append("schema " + ", ".join(self.schemas))
        if self.tables:
            parts.append("table " + ", ".join(self.tables))
        return " ".join(parts) if parts else "the whole connection"


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


class TimeWindow(BaseModel):
    """Weekdays and hours in a time zone. ``end`` at or before ``start`` crosses midnight:
    a window 22:00-06:00 on Monday covers Monday 22:00 to Tuesday 06:00."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)  # 0 = Monday
    start: time = time(0, 0)
    end: time = time(0, 0)  # 00:00-00:00 is the whole day
    timezone: str = "UTC"

    @field_validator("weekdays", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [d for d in v.replace(",", " ").split() if d]
        out: list[int] = []
        for d in v:
            if isinstance(d, str):
                key = d.strip().lower()[:3]
                if key not in _WEEKDAYS:
                    raise ValueError(f"unknown weekday {d!r} (use mon..sun or 0..6, Monday = 0)")
                out.append(_WEEKDAYS[key])
            else:
                out.append(int(d))
        if any(x < 0 or x > 6 for x in out):
            raise ValueError("weekdays are 0..6 with Monday = 0")
        return tuple(sorted(set(out)))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(_zone(self.timezone))
        t = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.end > self.start:
            return day in self.weekdays and self.start <= t < self.end
        # crosses midnight (or whole day when start == end)
        if day in self.weekdays and t >= self.start:
            return True
        return (day - 1) % 7 in self.weekdays and t < self.end and self.end != self.start

    def describe(self) -> str:
        names = [k for k, v in sorted(_WEEKDAYS.items(), key=lambda kv: kv[1]) if v in self.weekdays]
        days = "every day" if len(names) == 7 else ",".join(names)
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"


class Conditions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    valid_from: datetime | None = None
    valid_until: datetime | None = None
    windows: tuple[TimeWindow, ...] = ()  # any one must contain the moment
    client_ips: tuple[IPv4Network | IPv6Network, ...] = ()  # any one must contain the client

    @field_validator("client_ips", mode="before")
    @classmethod
    def _nets(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        return tuple(ip_network(x, strict=False) for x in v)

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v

    @property
    def time_dependent(self) -> bool:
        return bool(self.windows or self.valid_from or self.valid_until)

    @property
    def empty(self) -> bool:
        return not (self.time_dependent or self.client_ips)


class Grant(BaseModel):
    """A subject holds privilege types on a scope of one connection (or a glob of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    subject: Subject
    connection: str  # connection name or glob ("*" = every connection)
    privileges: tuple[str, ...]
    scope: Scope = Scope()
    conditions: Conditions = Conditions()

    @field_validator("privileges", mode="before")
    @classmethod
    def _privs(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v


class PrivilegeType(BaseModel):
    """A named bundle of statement kinds; ``includes`` pulls in other bundles."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kinds: frozenset[StatementKind] = frozenset()
    includes: tuple[str, ...] = ()
    description: str = ""

    @field_validator("kinds", mode="before")
    @classmethod
    def _kinds(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        out = []
        for k in v:
            if isinstance(k, StatementKind):
                out.append(k)
                continue
            key = str(k).strip().upper().replace("_", " ")
            match = next(
                (m for m in StatementKind if m.value == key or m.name == str(k).strip().upper()), None
            )
            if match is None:
                raise ValueError(f"unknown statement kind {k!r}")
            out.append(match)
        return frozenset(out)


_RO = frozenset(
    {
        StatementKind.SELECT,
        StatementKind.SHOW,
        StatementKind.EXPLAIN,
        StatementKind.USE,
        StatementKind.SET,
        StatementKind.TRANSACTION,
        StatementKind.SESSION,
        StatementKind.EXECUTE,  # a PREPARE is checked as the statement it prepares
        StatementKind.COPY_TO,
    }
)
_RW = _RO | {
    StatementKind.INSERT,
    StatementKind.UPDATE,
    StatementKind.DELETE,
    StatementKind.MERGE,
    StatementKind.UPSERT,
    StatementKind.COPY_FROM,
    StatementKind.CALL,
    StatementKind.LOCK,
    StatementKind.NOTIFY,
}
_DDL = frozenset(
    {
        StatementKind.CREATE,
        StatementKind.ALTER,
        StatementKind.DROP,
        StatementKind.TRUNCATE,
        StatementKind.RENAME,
        StatementKind.MAINTENANCE,
    }
)

BUILTIN_PRIVILEGE_TYPES: tuple[PrivilegeType, ...] = (
    PrivilegeType(name="read-only", kinds=_RO, description="read data and metadata; session settings"),
    PrivilegeType(name="read-write", kinds=_RW, description="read-only plus data changes and routine calls"),
    PrivilegeType(name="ddl", kinds=_DDL, description="create, alter, drop, truncate and rename objects"),
    PrivilegeType(
        name="admin", kinds=frozenset(StatementKind), description="everything, including GRANT/REVOKE"
    ),
    # Short names people write in YAML: `privileges: [read]`, `[read, write]`.
    PrivilegeType(name="read", includes=("read-only",), description="the same as read-only"),
    PrivilegeType(name="write", includes=("read-write",), description="the same as read-write"),
)


class RuleAction(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


class MatchType(StrEnum):
    EXACT = "exact"  # the statement text, whitespace at both ends ignored
    REGEX = "regex"  # re.search over the statement text (case-insensitive)
    FINGERPRINT = "fingerprint"  # the normalized fingerprint, or its hash


class QueryRule(BaseModel):
    """A rule on statement text, evaluated in priority order (lower numbers first); the first
    matching rule applies. ``deny`` refuses; ``require_approval`` sends the statement for
    approval; ``allow`` exempts it from later rules and from the connection's approval
    settings, and lets a statement the analyser cannot read through (the rule vouches for
    it). No rule replaces grants: the objects touched must still be granted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    priority: int = 100
    match: MatchType
    pattern: str
    action: RuleAction
    connection: str | None = None  # a name or glob; None = every connection
    subjects: tuple[Subject, ...] = ()  # empty = everyone
    message: str | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _check_regex(self) -> QueryRule:
        if self.match is MatchType.REGEX:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"rule {self.id}: invalid regular expression: {exc}") from exc
        return self


class ApprovalTrigger(StrEnum):
    UPDATE_WITHOUT_WHERE = "UPDATE WITHOUT WHERE"
    DELETE_WITHOUT_WHERE = "DELETE WITHOUT WHERE"


class ConnectionPolicy(BaseModel):
    """Settings of one connection (or a glob of connections)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connection: str
    engine: Literal["mysql", "postgres"] | None = None  # for `policy test` and explain
    max_rows: int | None = None
    # statement kinds ("DROP", "TRUNCATE") and "UPDATE WITHOUT WHERE"/"DELETE WITHOUT WHERE"
    approval_required: tuple[str, ...] = ()
    ledger_tables: tuple[str, ...] = ()  # table patterns whose changes always need approval
    allow_unknown: bool = False
    allow_procedural: bool = False  # DO blocks, BEGIN NOT ATOMIC
    function_calls: Literal["call", "read"] = "call"  # what calling a non-built-in function needs
    # When masking rules apply and the origin of some result column cannot be established:
    # deny the statement, or mask every column of its result.
    masking_unresolved: Literal["deny", "mask_all"] = "deny"
    # When a statement filters, joins, sorts or groups on a column masked for the user:
    # deny it, or allow it and flag the audit record.
    masking_inference: Literal["deny", "allow_and_flag"] = "deny"

    @field_validator("approval_required", mode="before")
    @classmethod
    def _approval(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        out: list[str] = []
        for item in v:
            key = str(item).strip().upper().replace("_", " ")
            if key in {t.value for t in ApprovalTrigger}:
                out.append(key)
                continue
            if key not in {k.value for k in StatementKind}:
                raise ValueError(f"unknown statement kind or trigger {item!r} in approval_required")
            out.append(key)
        return tuple(out)


class PolicySet(BaseModel):
    """Everything the evaluator needs, with a version that changes whenever anything does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 0
    grants: tuple[Grant, ...] = ()
    privilege_types: tuple[PrivilegeType, ...] = ()  # custom ones; the built-ins are always there
    rules: tuple[QueryRule, ...] = ()
    connections: tuple[ConnectionPolicy, ...] = ()
    masking_patterns: tuple[MaskingPatternDef, ...] = ()  # custom; the built-ins are always there
    masking_rules: tuple[MaskingRule, ...] = ()
    #: approved unmask requests (one per column), loaded from the store's approval requests;
    #: not part of `dbward apply` files
    unmasks: tuple[Unmask, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> PolicySet:
        check_masking(self.masking_patterns, self.masking_rules)
        names = {p.name for p in BUILTIN_PRIVILEGE_TYPES} | {p.name for p in self.privilege_types}
        for g in self.grants:
            for priv in g.privileges:
                if priv not in names:
                    raise ValueError(f"grant {g.name}: unknown privilege type {priv!r}")
        for pt in self.privilege_types:
            for inc in pt.includes:
                if inc not in names:
                    raise ValueError(f"privilege type {pt.name}: includes unknown type {inc!r}")
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"rule id {r.id!r} is used twice")
            seen.add(r.id)
        return self
