"""The policy evaluator: grants, query rules and connection settings applied to an analysed
statement, producing a :class:`~dbward.policy.model.Decision`.

:class:`PolicyEvaluator` implements the gate's :class:`~dbward.policy.decider.PolicyDecider`
on top of a provider of the current :class:`~dbward.policy.model.PolicySet` (the store, in
production). Evaluation itself (:func:`evaluate`) is a pure function of the compiled policy,
the principal, the connection, the :class:`~dbward.sql.model.Analysis`, the client address
and the moment; :func:`explain` runs the same code with a trace.

The order of evaluation, and what each step can say:

1. grants that apply to the principal on the connection, with their conditions (validity,
   time windows, client IP ranges) evaluated now; none -> deny (``default:deny``);
2. query rules in priority order, the first match wins: deny -> deny; require approval ->
   approval once the grants allow it; allow -> later rules and approval settings skipped;
3. statements the analyser could not read -> deny unless the connection allows unknown
   statements or an allow rule vouches for the text; DO blocks likewise (``allow_procedural``);
4. every (kind, object) the statement touches must be covered by an applicable grant whose
   privilege types include that kind; kinds found where objects could not be read need a
   grant on the whole connection;
5. the connection's approval settings (kinds, UPDATE/DELETE without WHERE, ledger tables);
6. allow, with the connection's row limit.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, NamedTuple, Protocol

from dbward.domain import Principal, SessionInfo, Statement, Target
from dbward.masking.plan import CompiledMasking, MaskingView, plan_masking, writes_data
from dbward.policy.matching import glob, parse_ip, subject_matches
from dbward.policy.model import (
    BUILTIN_PRIVILEGE_TYPES,
    ApprovalTrigger,
    ColumnMask,
    ConnectionPolicy,
    Decision,
    Effect,
    Grant,
    MatchType,
    PolicySet,
    QueryRule,
    RuleAction,
)
from dbward.sql import analyze
from dbward.sql.lineage import Catalog, SourceColumn, lineage_key, output_lineage
from dbward.sql.model import DDL_KINDS, WRITE_KINDS, Access, Analysis, ObjectRef, ObjectType, StatementKind

K = StatementKind
Clock = Callable[[], datetime]

DECISION_CACHE_SIZE = 16384
#: texts whose exact and regex rule matches are remembered (per compiled policy)
TEXT_MATCH_MEMO_SIZE = 8192


class PolicySetProvider(Protocol):
    """Where the evaluator gets the current policy set.

    A provider may also offer ``current_nowait() -> PolicySet | None``: the set that
    ``current()`` would return right now without waiting for anything (no store round trip
    due), or None when ``current()`` has to look. Only with it can
    :meth:`PolicyEvaluator.decide_cached` answer; see :class:`NowaitPolicySetProvider`."""

    async def current(self) -> PolicySet: ...


class NowaitPolicySetProvider(PolicySetProvider, Protocol):
    def current_nowait(self) -> PolicySet | None:
        """What :meth:`current` would return now without awaiting anything, or None when it
        would have to check its source first (then the caller takes the awaiting path)."""
        ...


class CatalogProvider(Protocol):
    """The target's catalog as dbward last read it (tables with ordered columns, views with
    their definitions); its ``version`` changes whenever it does. The store-backed provider
    refreshes it when the target's schema changes."""

    async def catalog(self, session: SessionInfo) -> Catalog: ...


class NowaitCatalogProvider(CatalogProvider, Protocol):
    def catalog_nowait(self, session: SessionInfo) -> Catalog | None:
        """What :meth:`catalog` would return now without awaiting anything (the catalog is
        loaded and not stale), or None when it would have to read or wait first."""
        ...


class StaticCatalogProvider:
    """One catalog for every session (tests, ``policy test``)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def catalog(self, session: SessionInfo) -> Catalog:
        return self._catalog

    def catalog_nowait(self, session: SessionInfo) -> Catalog | None:
        return self._catalog


class StaticPolicySetProvider:
    """A provider holding one policy set (tests, ``policy test``, ``policy explain``)."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set

    async def current(self) -> PolicySet:
        return self.policy_set

    def current_nowait(self) -> PolicySet | None:
        return self.policy_set


def _any(patterns: tuple[re.Pattern[str], ...], value: str | None) -> bool:
    return value is not None and any(p.match(value) for p in patterns)


@dataclass(frozen=True, slots=True)
class _CGrant:
    grant: Grant
    kinds: frozenset[StatementKind]
    databases: tuple[re.Pattern[str], ...]
    schemas: tuple[re.Pattern[str], ...]
    tables_qualified: tuple[re.Pattern[str], ...]
    tables_bare: tuple[re.Pattern[str], ...]
    table_schema_parts: tuple[re.Pattern[str], ...]

    @property
    def name(self) -> str:
        return self.grant.name

    def covers(self, obj: ObjectRef, kind: StatementKind) -> bool:
        s = self.grant.scope
        if s.whole_connection:
            return True
        if self.databases and not _any(self.databases, obj.database):
            return False
        if self.schemas and not _any(self.schemas, obj.schema):
            return False
        if s.tables:
            if obj.type is ObjectType.DATABASE:
                # a table grant lets its holder USE (and SHOW) the database holding the tables
                return kind in (K.USE, K.SHOW) and (
                    not self.table_schema_parts or _any(self.table_schema_parts, obj.schema)
                )
            if obj.type not in (ObjectType.TABLE, ObjectType.OTHER):
                return False
            qualified = f"{obj.schema}.{obj.name}" if obj.schema else obj.name
            return any(p.match(qualified) for p in self.tables_qualified) or any(
                p.match(obj.name) for p in self.tables_bare
            )
        return True


@dataclass(frozen=True, slots=True)
class _CRule:
    rule: QueryRule
    regex: re.Pattern[str] | None
    connection: re.Pattern[str] | None


class CompiledPolicy:
    """A PolicySet prepared for evaluation: privilege types resolved, globs compiled, rules
    sorted, per-(principal, connection) selections memoised."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set
        self.version = policy_set.version
        self.types: dict[str, frozenset[StatementKind]] = {}
        custom = {p.name: p for p in policy_set.privilege_types}
        builtin = {p.name: p for p in BUILTIN_PRIVILEGE_TYPES}
        self.type_order: list[str] = [p.name for p in BUILTIN_PRIVILEGE_TYPES if p.name not in custom]
        self.type_order += [p.name for p in policy_set.privilege_types]
        all_types = {**builtin, **custom}

        def resolve(name: str, seen: frozenset[str]) -> frozenset[StatementKind]:
            if name in seen:
                raise ValueError(f"privilege type {name} includes itself")
            t = all_types[name]
            kinds = set(t.kinds)
            for inc in t.includes:
                kinds |= resolve(inc, seen | {name})
            return frozenset(kinds)

        for name in all_types:
            self.types[name] = resolve(name, frozenset())
        self.grants: tuple[tuple[re.Pattern[str], _CGrant], ...] = tuple(
            (glob(g.connection), self._compile_grant(g)) for g in policy_set.grants
        )
        ordered = sorted(enumerate(policy_set.rules), key=lambda ir: (ir[1].priority, ir[0]))
        self.rules: tuple[_CRule, ...] = tuple(
            _CRule(
                r,
                re.compile(r.pattern, re.IGNORECASE | re.DOTALL) if r.match is MatchType.REGEX else None,
                glob(r.connection) if r.connection is not None else None,
            )
            for _, r in ordered
            if r.enabled
        )
        self.connections = tuple((glob(c.connection), c) for c in policy_set.connections)
        self.masking = CompiledMasking(
            policy_set.masking_patterns, policy_set.masking_rules, policy_set.unmasks
        )
        self._grant_memo: dict[tuple[str, frozenset[str], frozenset[str], str], tuple[_CGrant, ...]] = {}
        self._rule_memo: dict[tuple[str, frozenset[str], frozenset[str], str], tuple[_CRule, ...]] = {}
        self._conn_memo: dict[str, tuple[ConnectionPolicy, tuple[re.Pattern[str], ...]]] = {}
        self._subjects: dict[tuple[str, frozenset[str], frozenset[str], str], _Subject] = {}
        #: which exact and regex rules of one set (by index, see ``subject``) match one text
        self._text_sets: dict[tuple[int, ...], int] = {}
        self._text_matches: dict[tuple[int, str], tuple[str, ...]] = {}
        #: (user, connection) pairs with approved unmask requests: their masking view depends
        #: on the moment (a request's period), the others' only on who and from where
        self._unmasked = frozenset((u.user, u.connection) for u in policy_set.unmasks)

    def _compile_grant(self, g: Grant) -> _CGrant:
        s = g.scope
        qualified = tuple(glob(t) for t in s.tables if "." in t)
        bare = tuple(glob(t) for t in s.tables if "." not in t)
        schema_parts = tuple(glob(t.rsplit(".", 1)[0]) for t in s.tables if "." in t)
        if bare:
            schema_parts = ()  # a bare table pattern can be in any database
        kinds: set[StatementKind] = set()
        for p in g.privileges:
            kinds |= self.types[p]
        return _CGrant(
            grant=g,
            kinds=frozenset(kinds),
            databases=tuple(glob(d) for d in s.databases),
            schemas=tuple(glob(d) for d in s.schemas),
            tables_qualified=qualified,
            tables_bare=bare,
            table_schema_parts=schema_parts,
        )

    def grants_for(self, p: Principal, connection: str) -> tuple[_CGrant, ...]:
        key = (p.username, p.groups, p.roles, connection)
        hit = self._grant_memo.get(key)
        if hit is None:
            hit = tuple(
                cg
                for conn, cg in self.grants
                if conn.match(connection) and subject_matches(cg.grant.subject, p)
            )
            if len(self._grant_memo) > 4096:
                self._grant_memo.clear()
            self._grant_memo[key] = hit
        return hit

    def rules_for(self, p: Principal, connection: str) -> tuple[_CRule, ...]:
        key = (p.username, p.groups, p.roles, connection)
        hit = self._rule_memo.get(key)
        if hit is None:
            hit = tuple(
                r
                for r in self.rules
                if (r.connection is None or r.connection.match(connection))
                and (not r.rule.subjects or any(subject_matches(s, p) for s in r.rule.subjects))
            )
            if len(self._rule_memo) > 4096:
                self._rule_memo.clear()
            self._rule_memo[key] = hit
        return hit

    def subject(self, p: Principal, connection: str) -> _Subject:
        """What deciding for ``p`` on ``connection`` needs, resolved once (see :class:`_Subject`)."""
        key = (p.username, p.groups, p.roles, connection)
        hit = self._subjects.get(key)
        if hit is None:
            grants = self.grants_for(p, connection)
            conditional = tuple(g for g in grants if not g.grant.conditions.empty)
            text_rules = tuple(
                r for r in self.rules_for(p, connection) if r.rule.match is not MatchType.FINGERPRINT
            )
            rules_key = tuple(id(r) for r in text_rules)  # the rules live as long as this object
            text_set = self._text_sets.setdefault(rules_key, len(self._text_sets))
            hit = _Subject(
                grants=grants,
                conditional=conditional,
                ip_conditions=any(g.grant.conditions.client_ips for g in conditional),
                text_rules=text_rules,
                text_set=text_set,
                masking=bool(self.masking) and bool(self.masking.for_connection(connection)),
                timeless_masking=(p.username, connection) not in self._unmasked,
            )
            if len(self._subjects) > 4096:
                self._subjects.clear()
            self._subjects[key] = hit
        return hit

    def text_matches(self, subject: _Subject, a: Analysis) -> tuple[str, ...] | None:
        """The ids of the subject's exact and regex rules matching the text, in rule order;
        None when the subject has no such rule (then the text does not reach the decision)."""
        rules = subject.text_rules
        if not rules:
            return None
        key = (subject.text_set, a.sql)
        hit = self._text_matches.get(key)
        if hit is None:
            sql = a.sql
            hit = tuple(
                r.rule.id
                for r in rules
                # a compiled regex is a regex rule's: search it here, the rest as evaluate() does
                if (r.regex.search(sql) is not None if r.regex is not None else _rule_matches(r, a))
            )
            if len(self._text_matches) >= TEXT_MATCH_MEMO_SIZE:
                self._text_matches.clear()  # all at once: cheaper than one by one, see analysis
            self._text_matches[key] = hit
        return hit

    def connection_policy(self, name: str) -> tuple[ConnectionPolicy, tuple[re.Pattern[str], ...]]:
        hit = self._conn_memo.get(name)
        if hit is None:
            exact = next((c for _, c in self.connections if c.connection == name), None)
            found = exact or next((c for g, c in self.connections if g.match(name)), None)
            cp = found or ConnectionPolicy(connection=name)
            hit = (cp, tuple(glob(t) for t in cp.ledger_tables))
            if len(self._conn_memo) > 4096:
                self._conn_memo.clear()
            self._conn_memo[name] = hit
        return hit

    def needed_for(self, kind: StatementKind) -> str:
        names = [n for n in self.type_order if kind in self.types[n]]
        return names[0] if names else "a privilege type that includes " + kind.value


@dataclass(slots=True, eq=False)
class _Subject:
    """What decisions for one (user with groups and roles, connection) need from a compiled
    policy, resolved once: the grants that apply, those with conditions (whose outcome right
    now is part of every decision's cache key), the exact and regex rules that read the text,
    and whether masking rules apply. Compared by identity: in a cache key it stands for the
    compiled policy, the user, their groups and roles, and the connection."""

    grants: tuple[_CGrant, ...]
    conditional: tuple[_CGrant, ...]
    ip_conditions: bool
    text_rules: tuple[_CRule, ...]
    text_set: int
    masking: bool
    #: no approved unmask request for this user on the connection: the masking view then
    #: depends on the client address alone, never on the moment
    timeless_masking: bool
    _clients: dict[str, IPv4Address | IPv6Address | None] = field(default_factory=dict)
    _views: dict[str, MaskingView | None] = field(default_factory=dict)

    def outcomes(self, now: datetime, host: str) -> tuple[bool, ...]:
        """Whether each grant with conditions applies now from ``host`` (``_Live.outcomes``)."""
        if not self.conditional:
            return ()
        client: IPv4Address | IPv6Address | None = None
        if self.ip_conditions:
            if host in self._clients:
                client = self._clients[host]
            else:
                client = parse_ip(host)
                if len(self._clients) > 1024:
                    self._clients.clear()
                self._clients[host] = client
        return tuple(_condition_failure(g.grant, now, client, host) is None for g in self.conditional)

    def view(
        self, cp: CompiledPolicy, p: Principal, connection: str, host: str, now: datetime
    ) -> MaskingView | None:
        """``cp.masking.view(...)``, remembered by client address when it cannot change with
        the moment."""
        if not self.masking:
            return None
        if not self.timeless_masking:
            return cp.masking.view(p, connection, host, now)
        views = self._views
        if host in views:
            return views[host]
        hit = cp.masking.view(p, connection, host, now)
        if len(views) > 1024:
            views.clear()
        views[host] = hit
        return hit


# ---------------------------------------------------------------------------------------
# conditions


def _condition_failure(
    g: Grant, now: datetime, client: IPv4Address | IPv6Address | None, host: str
) -> str | None:
    c = g.conditions
    if c.empty:
        return None
    if c.valid_from is not None and now < c.valid_from:
        return f"grant {g.name} is not valid before {c.valid_from.isoformat()}"
    if c.valid_until is not None and now >= c.valid_until:
        return f"grant {g.name} expired at {c.valid_until.isoformat()}"
    if c.windows and not any(w.contains(now) for w in c.windows):
        return f"grant {g.name} applies only {' or '.join(w.describe() for w in c.windows)}"
    if c.client_ips:
        if client is None:
            return (
                f"grant {g.name} is limited to client addresses and the client address {host!r} is not an IP"
            )
        if not any(client.version == n.version and client in n for n in c.client_ips):
            nets = ", ".join(str(n) for n in c.client_ips)
            return f"grant {g.name} applies only from {nets}; the client is {client}"
    return None


@dataclass(slots=True)
class _Live:
    live: list[_CGrant] = field(default_factory=list)
    inactive: list[tuple[_CGrant, str]] = field(default_factory=list)
    outcomes: tuple[bool, ...] = ()


def _live_grants(grants: tuple[_CGrant, ...], now: datetime, host: str) -> _Live:
    out = _Live()
    client = parse_ip(host) if any(g.grant.conditions.client_ips for g in grants) else None
    outcomes: list[bool] = []
    for g in grants:
        failure = _condition_failure(g.grant, now, client, host)
        if not g.grant.conditions.empty:
            outcomes.append(failure is None)
        if failure is None:
            out.live.append(g)
        else:
            out.inactive.append((g, failure))
    out.outcomes = tuple(outcomes)
    return out


def _describe_grant(g: _CGrant) -> str:
    return f"{g.grant.subject} has {', '.join(g.grant.privileges)} on {g.grant.scope.describe()}"


def _who(p: Principal) -> str:
    return f"user {p.username}"


# ---------------------------------------------------------------------------------------
# evaluation


def decide_connection(
    cp: CompiledPolicy, principal: Principal, connection: str, client_host: str, now: datetime
) -> Decision:
    grants = cp.grants_for(principal, connection)
    if not grants:
        return Decision.deny(
            f"denied: {_who(principal)} has no grant on connection {connection}; ask an administrator for access",
            "default:deny",
        )
    lv = _live_grants(grants, now, client_host)
    if lv.live:
        return Decision.allow(
            f"allowed: {_describe_grant(lv.live[0])} (grant {lv.live[0].name} on connection {connection})",
            *(f"grant:{g.name}" for g in lv.live),
        )
    return Decision(
        effect=Effect.DENY,
        reasons=(
            f"denied: no grant of {_who(principal)} on connection {connection} applies now: "
            + "; ".join(why for _, why in lv.inactive),
        ),
        rule_ids=tuple(f"grant:{g.name}" for g, _ in lv.inactive),
    )


def _rule_matches(r: _CRule, a: Analysis) -> bool:
    rule = r.rule
    match rule.match:
        case MatchType.EXACT:
            return a.sql.strip().rstrip(";").strip() == rule.pattern.strip().rstrip(";").strip()
        case MatchType.REGEX:
            return r.regex is not None and r.regex.search(a.sql) is not None
        case MatchType.FINGERPRINT:
            pat = rule.pattern.strip()
            if pat == a.fingerprint_hash:
                return True
            return " ".join(pat.split()) == a.fingerprint
        case _:
            return False


def evaluate(
    cp: CompiledPolicy,
    principal: Principal,
    connection: str,
    a: Analysis,
    client_host: str,
    now: datetime,
    trace: list[str] | None = None,
    *,
    _live: _Live | None = None,
) -> Decision:
    """Decide one analysed statement. Pure; ``trace`` (when given) collects the reasoning."""

    def note(line: str) -> None:
        if trace is not None:
            trace.append(line)

    conn, ledger = cp.connection_policy(connection)
    grants = cp.grants_for(principal, connection)
    lv = _live if _live is not None else _live_grants(grants, now, client_host)
    if trace is not None:
        note(f"analysis: kind {a.kind.value}; kinds {', '.join(sorted(k.value for k in a.kinds))}")
        for acc in a.accesses:
            note(f"analysis: {acc.kind.value} on {acc.obj}")
        for reason in a.reasons:
            note(f"analysis: {reason}")
        for g in lv.live:
            note(f"grant {g.name}: applies ({_describe_grant(g)})")
        for g, why in lv.inactive:
            note(f"grant {g.name}: does not apply now: {why}")
    if not lv.live:
        if lv.inactive:
            return Decision(
                effect=Effect.DENY,
                reasons=(
                    f"denied: no grant of {_who(principal)} on connection {connection} applies now: "
                    + "; ".join(why for _, why in lv.inactive),
                ),
                rule_ids=tuple(f"grant:{g.name}" for g, _ in lv.inactive),
            )
        return Decision.deny(
            f"denied: {_who(principal)} has no grant on connection {connection}", "default:deny"
        )

    # 2. query rules, first match wins
    allow_rule: QueryRule | None = None
    approval_reasons: list[str] = []
    approval_ids: list[str] = []
    for cr in cp.rules_for(principal, connection):
        if not _rule_matches(cr, a):
            continue
        rule = cr.rule
        note(f"rule {rule.id} (priority {rule.priority}, {rule.match.value}): matches -> {rule.action.value}")
        if rule.action is RuleAction.DENY:
            return Decision.deny(
                f"denied by rule {rule.id}" + (f": {rule.message}" if rule.message else ""), f"rule:{rule.id}"
            )
        if rule.action is RuleAction.REQUIRE_APPROVAL:
            approval_reasons.append(
                f"rule {rule.id} requires approval" + (f": {rule.message}" if rule.message else "")
            )
            approval_ids.append(f"rule:{rule.id}")
        else:
            allow_rule = rule
        break
    else:
        note("rules: none matches")

    # 3. statements dbward cannot see into
    if K.UNKNOWN in a.kinds and allow_rule is None:
        why = a.reasons[0] if a.reasons else "it could not be analysed"
        if not conn.allow_unknown:
            return Decision.deny(
                f"denied: dbward could not analyse this statement ({why}); connection {connection} "
                "does not allow statements it cannot analyse (allow_unknown is off)",
                f"connection:{connection}:unknown",
            )
        note(f"connection {connection}: allow_unknown is on")
    if K.PROCEDURAL in a.kinds and allow_rule is None and not conn.allow_procedural:
        return Decision.deny(
            f"denied: procedural blocks (DO, BEGIN NOT ATOMIC) run code dbward cannot check; connection "
            f"{connection} does not allow them (allow_procedural is off)",
            f"connection:{connection}:procedural",
        )

    # 4. coverage by grants
    accesses: Iterable[Access] = a.accesses
    kinds_needed = set(a.kinds)
    if conn.function_calls == "read" and a.kind is not K.CALL:
        # calls of functions count as reads of those functions on this connection
        accesses = [Access(K.SELECT, x.obj) if x.kind is K.CALL else x for x in a.accesses]
        if K.CALL in kinds_needed:
            kinds_needed.discard(K.CALL)
            kinds_needed.add(K.SELECT)
    used: dict[str, None] = {}
    with_objects: set[StatementKind] = set()
    for acc in accesses:
        with_objects.add(acc.kind)
        cover = next((g for g in lv.live if acc.kind in g.kinds and g.covers(acc.obj, acc.kind)), None)
        if cover is None:
            return _not_covered(cp, principal, connection, lv, acc.kind, acc.obj, note)
        used[cover.name] = None
        note(f"coverage: {acc.kind.value} on {acc.obj} by grant {cover.name}")
    vouched = {K.UNKNOWN, K.PROCEDURAL} if allow_rule is not None else set()
    for kind in sorted(kinds_needed):
        if kind in vouched:
            continue
        if kind in a.opaque_kinds or kind in (K.UNKNOWN, K.PROCEDURAL):
            cover = next((g for g in lv.live if kind in g.kinds and g.grant.scope.whole_connection), None)
            if cover is None:
                return _not_covered(cp, principal, connection, lv, kind, None, note)
        elif kind in with_objects:
            continue
        else:
            cover = next((g for g in lv.live if kind in g.kinds), None)
            if cover is None:
                return _not_covered(cp, principal, connection, lv, kind, None, note, objectless=True)
        used[cover.name] = None
        note(f"coverage: {kind.value} by grant {cover.name}")
    grant_ids = [f"grant:{n}" for n in used] or [f"grant:{lv.live[0].name}"]

    # 5. approvals
    if allow_rule is None:
        required = set(conn.approval_required)
        for kind in sorted(a.kinds):
            if kind.value in required:
                approval_reasons.append(f"connection {connection} requires approval for {kind.value}")
                approval_ids.append(f"connection:{connection}:approval:{kind.value}")
        if a.unfiltered_write:
            for trig, kind in (
                (ApprovalTrigger.UPDATE_WITHOUT_WHERE, K.UPDATE),
                (ApprovalTrigger.DELETE_WITHOUT_WHERE, K.DELETE),
            ):
                if trig.value in required and kind in a.kinds:
                    approval_reasons.append(f"connection {connection} requires approval for {trig.value}")
                    approval_ids.append(f"connection:{connection}:approval:{trig.value}")
        if ledger:
            touched = sorted(
                {
                    x.obj.qualified
                    for x in a.accesses
                    if (x.kind in WRITE_KINDS or x.kind in DDL_KINDS)
                    and x.obj.type is ObjectType.TABLE
                    and (any(p.match(x.obj.qualified) or p.match(x.obj.name) for p in ledger))
                }
            )
            opaque_write = any(k in WRITE_KINDS or k in DDL_KINDS for k in a.opaque_kinds)
            if touched or opaque_write:
                what = ", ".join(touched) if touched else "tables dbward could not identify"
                approval_reasons.append(
                    f"changes to ledger tables of connection {connection} need approval ({what})"
                )
                approval_ids.append(f"connection:{connection}:ledger")
    if approval_reasons:
        note("approval: " + "; ".join(approval_reasons))
        return Decision(
            effect=Effect.REQUIRE_APPROVAL,
            reasons=("approval required: " + "; ".join(approval_reasons),),
            rule_ids=(*approval_ids, *grant_ids),
            approvable=True,
            row_limit=conn.max_rows,
        )

    # 6. allow
    kinds_text = ", ".join(sorted(k.value for k in a.kinds if k is not K.UNKNOWN)) or a.kind.value
    if allow_rule is not None:
        reason = f"allowed by rule {allow_rule.id}" + (
            f": {allow_rule.message}" if allow_rule.message else ""
        )
        ids = (f"rule:{allow_rule.id}", *grant_ids)
    else:
        first = next(g for g in lv.live if g.name in used) if used else lv.live[0]
        reason = f"allowed: {kinds_text} by grant {first.name} ({_describe_grant(first)})"
        ids = tuple(grant_ids)
    if conn.max_rows is not None:
        reason += f"; at most {conn.max_rows} rows are returned"
    return Decision(
        effect=Effect.ALLOW,
        reasons=(reason,),
        rule_ids=ids,
        row_limit=conn.max_rows,
    )


def _not_covered(
    cp: CompiledPolicy,
    principal: Principal,
    connection: str,
    lv: _Live,
    kind: StatementKind,
    obj: ObjectRef | None,
    note: Callable[[str], None],
    *,
    objectless: bool = False,
) -> Decision:
    needed = cp.needed_for(kind)
    if obj is not None:
        holders = [g for g in lv.live if g.covers(obj, kind)]
        if holders:
            have = " and ".join(_describe_grant(g) for g in holders[:2])
            msg = f"denied: {have}; {kind.value} on {obj} needs {needed}"
            ids = [f"grant:{g.name}" for g in holders]
        else:
            msg = (
                f"denied: no grant of {_who(principal)} on connection {connection} covers {obj}; "
                f"{kind.value} needs {needed}"
            )
            ids = [f"grant:{g.name}" for g in lv.live]
        inactive = [why for g, why in lv.inactive if kind in g.kinds and g.covers(obj, kind)]
    elif objectless:
        have = " and ".join(_describe_grant(g) for g in lv.live[:2])
        msg = f"denied: {have}; {kind.value} needs {needed}"
        ids = [f"grant:{g.name}" for g in lv.live]
        inactive = [why for g, why in lv.inactive if kind in g.kinds]
    else:
        have = " and ".join(_describe_grant(g) for g in lv.live[:2])
        msg = (
            f"denied: {have}; dbward cannot tell which objects this {kind.value} statement touches, "
            f"so it needs {needed} on the whole connection {connection}"
        )
        ids = [f"grant:{g.name}" for g in lv.live]
        inactive = [why for g, why in lv.inactive if kind in g.kinds and g.grant.scope.whole_connection]
    if inactive:
        msg += f" ({inactive[0]})"
    note(f"coverage: {kind.value}{' on ' + str(obj) if obj else ''} is not covered")
    conn, _ = cp.connection_policy(connection)
    return Decision(
        effect=Effect.DENY,
        reasons=(msg,),
        rule_ids=tuple(ids) or ("default:deny",),
        approvable=True,
        row_limit=conn.max_rows,
    )


# ---------------------------------------------------------------------------------------
# the decider the gate calls


def _search_path(session: SessionInfo) -> tuple[str, ...]:
    raw = session.attributes.get("search_path")
    if not raw:
        return ()
    return _parse_search_path(raw)


@lru_cache(maxsize=256)
def _parse_search_path(raw: str) -> tuple[str, ...]:
    return tuple(p.strip().strip('"') for p in raw.split(",") if p.strip() and p.strip() != '"$user"')


class _Lookup(NamedTuple):
    """A statement as the decision cache sees it (``PolicyEvaluator._lookup``)."""

    analysis: Analysis
    key: tuple[object, ...]
    now: datetime
    subject: _Subject
    mview: MaskingView | None
    dialect: Literal["mysql", "postgres"]
    database: str | None


class PolicyEvaluator:
    """The :class:`~dbward.policy.decider.PolicyDecider` backed by a :class:`PolicySet`.

    Session attributes read: ``search_path`` (PostgreSQL, comma-separated) and
    ``server_version`` (MySQL executable comments). Decisions are cached; see
    :meth:`_lookup` for what the key holds and why, and :meth:`decide_cached` for the
    synchronous lookup of the engines' hot path.
    """

    def __init__(
        self,
        provider: PolicySetProvider,
        *,
        clock: Clock | None = None,
        cache_size: int = DECISION_CACHE_SIZE,
        catalog: CatalogProvider | None = None,
    ) -> None:
        self._provider = provider
        self._catalog = catalog
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._compiled: CompiledPolicy | None = None
        self._cache: OrderedDict[tuple[object, ...], Decision] = OrderedDict()
        self._cache_size = cache_size
        self._wire_sources: dict[tuple[object, ...], dict[str, ColumnMask]] = {}
        self.hits = 0
        self.misses = 0

    async def compiled(self) -> CompiledPolicy:
        ps = await self._provider.current()
        cp = self._compiled
        if cp is None or cp.policy_set is not ps:
            if cp is None or cp.version != ps.version or cp.policy_set != ps:
                self._cache.clear()
            cp = CompiledPolicy(ps)
            self._compiled = cp
        return cp

    async def decide_connection(self, principal: Principal, target: Target, client_host: str) -> Decision:
        cp = await self.compiled()
        return decide_connection(cp, principal, target.name, client_host, self._clock())

    def _lookup(self, cp: CompiledPolicy, session: SessionInfo, statement: Statement) -> _Lookup:
        dialect: Literal["mysql", "postgres"] = (
            "mysql" if session.target.engine.value == "mysql" else "postgres"
        )
        database = statement.database if statement.database is not None else session.database
        attributes = session.attributes
        a = analyze(
            statement.sql,
            dialect,
            database=database,
            search_path=_search_path(session),
            server_version=attributes.get("server_version"),
        )
        principal = session.principal
        connection = session.target.name
        host = session.client.host
        now = self._clock()
        subject = cp.subject(principal, connection)
        # The decision is a function of: the policy, who (user, groups, roles) and where
        # (connection), all three in the subject; what (the analysis signature: kinds,
        # qualified objects, flags and fingerprint; it already reflects database and
        # search_path); the outcome of every grant condition right now (time windows,
        # validity, client IP: a window closing or another client address gives another key,
        # never a stale hit); and, when exact or regex rules could look at the text, which of
        # them match it (the text reaches the decision only through them, so statements
        # differing in literals still share it).
        key: tuple[object, ...] = (
            subject,
            a.signature,
            cp.text_matches(subject, a),
            subject.outcomes(now, host),
        )
        # Masking: only when a rule masks columns for this user on this connection (otherwise
        # nothing more is needed). The decision then also depends on the catalog and on the
        # text as the lineage reads it (see _masking_key). Approved unmask requests valid now
        # are in the view and in its key: a request's period ending gives another key.
        mview = subject.view(cp, principal, connection, host, now)
        return _Lookup(a, key, now, subject, mview, dialect, database)

    def _masking_key(
        self,
        look: _Lookup,
        session: SessionInfo,
        statement: Statement,
        catalog: Catalog | None,
        catalog_error: str | None,
    ) -> tuple[object, ...]:
        mview = look.mview
        assert mview is not None
        need = catalog is None or mview.needs_lineage(look.analysis, catalog, look.database)
        return (
            *look.key,
            mview.key,
            catalog.version if catalog is not None else None,
            catalog_error,
            # the text as lineage reads it, only when lineage will read it: otherwise the
            # analysis (in the key) already shows that no masked column can be reached
            lineage_key(statement.sql, look.dialect, session.attributes.get("server_version"))
            if need
            else None,
            look.database,
            _search_path(session),
        )

    def decide_cached(self, session: SessionInfo, statement: Statement) -> Decision | None:
        """The decision :meth:`decide_statement` would return, when it is in the cache and
        can be found without awaiting anything; None otherwise (then await
        :meth:`decide_statement`).

        Exactly as strict as the awaiting path: the policy set must be the one the provider
        would return now without checking its source (``current_nowait``) and the one this
        evaluator compiled (a changed policy is never served from the cache); the key holds
        the outcome of every grant condition at this moment, as there. May raise what the
        analysis raises; the caller then takes the awaiting path, which fails closed."""
        nowait = getattr(self._provider, "current_nowait", None)
        if nowait is None:
            return None
        ps = nowait()
        cp = self._compiled
        if ps is None or cp is None or cp.policy_set is not ps:
            return None
        look = self._lookup(cp, session, statement)
        key = look.key
        if look.mview is not None:
            catalog: Catalog | None = None
            catalog_error: str | None = None
            if self._catalog is None:
                catalog_error = f"dbward has no catalog of connection {session.target.name}"
            else:
                get = getattr(self._catalog, "catalog_nowait", None)
                if get is None:
                    return None
                catalog = get(session)
                if catalog is None:
                    return None
            key = self._masking_key(look, session, statement, catalog, catalog_error)
        hit = self._cache.get(key)
        if hit is None:
            return None
        self.hits += 1
        self._cache.move_to_end(key)
        return hit

    async def decide_statement(self, session: SessionInfo, statement: Statement) -> Decision:
        cp = await self.compiled()
        look = self._lookup(cp, session, statement)
        a, now, mview, dialect, database = look.analysis, look.now, look.mview, look.dialect, look.database
        principal = session.principal
        connection = session.target.name
        key = look.key
        catalog: Catalog | None = None
        catalog_error: str | None = None
        if mview is not None:
            if self._catalog is not None:
                try:
                    catalog = await self._catalog.catalog(session)
                except Exception as exc:  # fail closed below, with the reason
                    why = getattr(exc, "message", None)
                    catalog_error = (
                        why
                        if isinstance(why, str) and why
                        else f"the catalog of connection {connection} could not be read ({type(exc).__name__})"
                    )
            else:
                catalog_error = f"dbward has no catalog of connection {connection}"
            key = self._masking_key(look, session, statement, catalog, catalog_error)
        hit = self._cache.get(key)
        if hit is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return hit
        self.misses += 1
        lv = _live_grants(look.subject.grants, now, session.client.host)
        decision = evaluate(cp, principal, connection, a, session.client.host, now, _live=lv)
        if mview is not None and (decision.allowed or decision.approvable):
            masked = _masked_decision(
                cp,
                decision if decision.allowed else Decision.allow("approvable"),
                mview,
                a,
                session,
                statement,
                dialect,
                database,
                catalog,
                catalog_error,
            )
            if decision.allowed or not masked.allowed:
                decision = masked  # a masking refusal is final: no approval lifts it
            else:
                # what an approved request would run under: the user's masking still applies
                decision = replace(decision, masking=masked.masking)
        decision = replace(decision, kind=a.kind.value, fingerprint=a.fingerprint_hash)
        if (
            mview is not None
            and not decision.allowed
            and "masking:unresolved" in decision.rule_ids
            and "not in dbward's catalog" in decision.message
        ):
            # Another tool may have changed the schema: have the provider read the catalog
            # again; the new catalog version gives later statements a new cache key.
            suspect = getattr(self._catalog, "suspect", None)
            if suspect is not None:
                suspect(session, decision.message)
        self._cache[key] = decision
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return decision

    async def wire_sources(self, session: SessionInfo) -> dict[str, ColumnMask]:
        """Every column of the session's catalog masked for its user, keyed by
        ``schema.table.column`` in lower case (the shape of ``MaskingPlan.by_source``).

        The engines cross-check every result's wire column origins against it, also for
        statements without a plan: a table another tool swapped under a name dbward's catalog
        still knows otherwise reaches the client unmasked until the catalog is read again.
        Empty when no masking rule applies to the session."""
        if self._catalog is None:
            return {}
        cp = await self.compiled()
        if not cp.masking:
            return {}
        mview = cp.masking.view(session.principal, session.target.name, session.client.host, self._clock())
        if mview is None:
            return {}
        catalog = await self._catalog.catalog(session)
        key = (cp.version, mview.key, catalog.version, session.database)
        hit = self._wire_sources.get(key)
        if hit is None:
            hit = {}
            db = catalog.database or session.database
            for (s, t), cols in catalog.tables.items():
                for c in cols:
                    r = mview.rule_for(SourceColumn(db, s, t, c))
                    if r is not None:
                        hit[f"{s}.{t}.{c}".lower()] = ColumnMask(
                            spec=r.mask.spec,
                            pattern=r.mask.pattern,
                            rule_ids=r.mask.rule_ids,
                            sources=(f"{s}.{t}.{c}",),
                        )
            if len(self._wire_sources) > 64:
                self._wire_sources.clear()
            self._wire_sources[key] = hit
        return hit

    def cache_clear(self) -> None:
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)


def _masked_decision(
    cp: CompiledPolicy,
    decision: Decision,
    mview: MaskingView,
    a: Analysis,
    session: SessionInfo,
    statement: Statement,
    dialect: Literal["mysql", "postgres"],
    database: str | None,
    catalog: Catalog | None,
    catalog_error: str | None,
) -> Decision:
    """An allow decision with the masking plan attached, or the masking's denial."""
    connection = session.target.name
    conn, _ = cp.connection_policy(connection)
    if catalog is None:
        if not mview.needs_lineage(a, Catalog(), database) and not a.accesses:
            return decision
        return Decision.deny(
            f"denied: masking rules apply to user {session.principal.username} on connection {connection}, "
            f"but {catalog_error or 'there is no catalog'}, so dbward cannot tell which result columns to mask",
            "masking:catalog",
        )
    if not mview.needs_lineage(a, catalog, database):
        return decision
    lineage = output_lineage(
        statement.sql,
        dialect,
        catalog=catalog,
        database=database,
        search_path=_search_path(session),
        server_version=session.attributes.get("server_version"),
    )
    outcome = plan_masking(
        mview,
        lineage,
        principal=session.principal,
        connection=connection,
        catalog=catalog,
        unresolved=conn.masking_unresolved,
        inference=conn.masking_inference,
        writes_data=writes_data(a),
        database=database,
    )
    if outcome.denial is not None:
        return Decision(
            effect=Effect.DENY, reasons=(outcome.denial,), rule_ids=(*outcome.rule_ids, *decision.rule_ids)
        )
    if outcome.plan is None:
        if not outcome.cleared:
            return decision
        return replace(
            decision,
            reasons=(*decision.reasons, *outcome.cleared),
            rule_ids=(*decision.rule_ids, *(r for r in outcome.rule_ids if r not in decision.rule_ids)),
        )
    return replace(
        decision,
        masking=outcome.plan,
        reasons=(*decision.reasons, *outcome.plan.reasons, *outcome.cleared),
        rule_ids=(*decision.rule_ids, *(r for r in outcome.rule_ids if r not in decision.rule_ids)),
    )


# ---------------------------------------------------------------------------------------
# explain


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    analysis: Analysis
    trace: tuple[str, ...]

    def render(self) -> str:
        lines = [f"decision: {self.decision.effect.value}", *(f"  {r}" for r in self.decision.reasons)]
        if self.decision.rule_ids:
            lines.append("rule ids: " + ", ".join(self.decision.rule_ids))
        if self.decision.row_limit is not None:
            lines.append(f"row limit: {self.decision.row_limit}")
        lines.append(f"fingerprint: {self.analysis.fingerprint} ({self.analysis.fingerprint_hash})")
        lines.append("trace:")
        lines.extend(f"  {t}" for t in self.trace)
        return "\n".join(lines)


def explain(
    policy_set: PolicySet | CompiledPolicy,
    *,
    principal: Principal,
    connection: str,
    sql: str,
    dialect: Literal["mysql", "postgres"],
    database: str | None = None,
    search_path: tuple[str, ...] = (),
    client_host: str = "127.0.0.1",
    now: datetime | None = None,
    server_version: str | None = None,
) -> Explanation:
    """The decision for one statement with the trace of grants and rules considered."""
    cp = policy_set if isinstance(policy_set, CompiledPolicy) else CompiledPolicy(policy_set)
    a = analyze(sql, dialect, database=database, search_path=search_path, server_version=server_version)
    trace: list[str] = []
    when = now or datetime.now(UTC)
    conn_decision = decide_connection(cp, principal, connection, client_host, when)
    trace.append(f"connection: {conn_decision.effect.value}: {conn_decision.message}")
    decision = evaluate(cp, principal, connection, a, client_host, when, trace)
    return Explanation(decision=decision, analysis=a, trace=tuple(trace))
