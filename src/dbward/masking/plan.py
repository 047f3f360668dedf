"""The masking plan of one statement for one user: which result columns to mask and how, or
why the statement is denied.

:class:`CompiledMasking` prepares the ``masking_rules``, ``masking_patterns`` and ``unmasks``
(approved unmask requests) of a :class:`~dbward.policy.model.PolicySet` once per policy
version. For a user on a connection at a moment :meth:`CompiledMasking.view` gives the rules
that apply (exemptions evaluated with the client's address; the user's unmask requests valid
at that moment clear the columns they name, and are part of the view's key) or None, the fast
path: no lineage is computed for that user there. Then
:func:`plan_masking` reads a statement's :class:`~dbward.sql.lineage.Lineage`:

* **unresolved lineage** on a statement that reads a table with columns masked for the user
  (or whose tables cannot be known: stored routines, opaque text) -> deny, or with the
  connection's ``masking_unresolved: mask_all`` mask every result column (only for pure
  reads: a write could not be masked);
* **inference**: a masked column used to filter, join, sort or group -> deny, or with
  ``masking_inference: allow_and_flag`` allow and name the columns in the plan for the audit;
* **writes**: a masked column's values stored into another table, a variable or a file ->
  deny (copying a column into itself, or into a column masked at least as strongly for the
  user, is allowed);
* **deferred results** (DECLARE CURSOR, SQL-level PREPARE) that would need masking -> deny;
  dbward cannot mask rows fetched later under another statement;
* otherwise each result column whose values can derive from masked columns gets a
  :class:`~dbward.policy.model.ColumnMask`.

Choosing the masking of a result column (documented in docs and tested):

1. a column that is a *direct copy* of masked columns (through aliases, derived tables, CTEs,
   set operations, casts, COALESCE, CASE branches, MIN/MAX, LAG...) all masked by rules that
   mask the same way keeps that way, pattern included (``SELECT phone AS p`` shows
   ``010-****-5678``);
2. otherwise the strongest masking of its sources applies, by :class:`~dbward.masking.rules.Strength`
   (null > redact > fixed > full > token > partial > pattern), and a format-preserving one
   (a pattern, partial, keep_first, keep_last) becomes ``full``: a computed value
   (``concat(phone, 'x')``, ``lower(email)``, ``group_concat(phone)``) or a column mixing
   two patterns no longer has the shape a pattern expects, and showing part of it could show
   a part the pattern hides. Tokens stay tokens (keyed and deterministic, they hide the value).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from dbward.domain import Principal
from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.patterns import BUILTIN, Pattern
from dbward.masking.rules import MaskingPatternDef, MaskingRule, Strength, Unmask, strength
from dbward.policy.matching import glob, parse_ip, subject_matches
from dbward.policy.model import ColumnMask, MaskingPlan
from dbward.sql.lineage import Catalog, Lineage, SourceColumn
from dbward.sql.model import Analysis, ObjectType, StatementKind

UnresolvedSetting = Literal["deny", "mask_all"]
InferenceSetting = Literal["deny", "allow_and_flag"]
_FULL = MaskSpec(algorithm=Algorithm.FULL)
_READ_KINDS = frozenset(
    {
        StatementKind.SELECT,
        StatementKind.SHOW,
        StatementKind.EXPLAIN,
        StatementKind.COPY_TO,
        StatementKind.USE,
        StatementKind.TRANSACTION,
    }
)


@dataclass(frozen=True, slots=True)
class _CRule:
    rule: MaskingRule
    connection: re.Pattern[str]
    database: re.Pattern[str]
    schema: re.Pattern[str]
    table: re.Pattern[str]
    column: re.Pattern[str]
    mask: ColumnMask  # sources filled in per result column
    strength: Strength

    @property
    def id(self) -> str:
        return self.rule.rule_id

    def matches(self, src: SourceColumn) -> bool:
        # an unknown database matches every database glob: mask more, never less
        return (
            (src.database is None or self.database.match(src.database) is not None)
            and self.schema.match(src.schema) is not None
            and self.table.match(src.table) is not None
            and self.column.match(src.column) is not None
        )

    def exempts(self, p: Principal, client: IPv4Address | IPv6Address | None) -> bool:
        r = self.rule
        if not any(subject_matches(s, p) for s in r.exempt):
            return False
        if not r.exempt_client_ips:
            return True
        return client is not None and any(
            client.version == n.version and client in n for n in r.exempt_client_ips
        )


@dataclass(frozen=True, slots=True)
class _CUnmask:
    """An approved unmask request's column, compiled. An unknown database matches only the
    ``*`` glob: an exemption clears less, never more."""

    unmask: Unmask
    database: re.Pattern[str] | None  # None: any database
    schema: re.Pattern[str]
    table: re.Pattern[str]
    column: re.Pattern[str]
    key: str  # identifies it in memo and cache keys (request, column, period)

    @property
    def id(self) -> str:
        return self.unmask.rule_id

    def covers(self, src: SourceColumn) -> bool:
        if self.database is not None and (src.database is None or self.database.match(src.database) is None):
            return False
        return (
            self.schema.match(src.schema) is not None
            and self.table.match(src.table) is not None
            and self.column.match(src.column) is not None
        )


def _compile_unmask(u: Unmask) -> _CUnmask:
    until = u.valid_until.isoformat()
    since = u.valid_from.isoformat() if u.valid_from is not None else ""
    return _CUnmask(
        unmask=u,
        database=None if u.database.strip() == "*" else glob(u.database),
        schema=glob(u.schema_),
        table=glob(u.table),
        column=glob(u.column),
        key=f"{u.rule_id}:{u.database}.{u.schema_}.{u.table}.{u.column}:{since}-{until}",
    )


class CompiledMasking:
    """Masking rules and patterns prepared for evaluation (once per policy version), with the
    approved unmask requests (:class:`~dbward.masking.rules.Unmask`) of the policy set."""

    def __init__(
        self,
        patterns: tuple[MaskingPatternDef, ...],
        rules: tuple[MaskingRule, ...],
        unmasks: tuple[Unmask, ...] = (),
    ) -> None:
        self.patterns: dict[str, Pattern] = {**BUILTIN, **{p.name: p.build() for p in patterns}}
        ordered = sorted((r for r in rules if r.enabled), key=lambda r: r.priority)  # stable: file order
        self.rules: tuple[_CRule, ...] = tuple(self._compile(r) for r in ordered)
        by_user: dict[tuple[str, str], list[_CUnmask]] = {}
        for u in unmasks:
            by_user.setdefault((u.user, u.connection), []).append(_compile_unmask(u))
        self._unmasks: dict[tuple[str, str], tuple[_CUnmask, ...]] = {k: tuple(v) for k, v in by_user.items()}
        self._conn_memo: dict[str, tuple[_CRule, ...]] = {}
        self._view_memo: dict[tuple[object, ...], MaskingView] = {}
        self._principal_memo: dict[tuple[object, ...], MaskingView | None] = {}

    def _compile(self, r: MaskingRule) -> _CRule:
        if r.pattern is not None:
            mask = ColumnMask(pattern=self.patterns[r.pattern], rule_ids=(r.rule_id,))
            st = Strength.PATTERN
        else:
            assert r.algorithm is not None
            mask = ColumnMask(spec=r.algorithm.to_spec(), rule_ids=(r.rule_id,))
            st = strength(r.algorithm.algorithm)
        return _CRule(
            r,
            glob(r.connection),
            glob(r.database),
            glob(r.schema_),
            glob(r.table),
            glob(r.column),
            mask,
            st,
        )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def for_connection(self, connection: str) -> tuple[_CRule, ...]:
        hit = self._conn_memo.get(connection)
        if hit is None:
            hit = tuple(r for r in self.rules if r.connection.match(connection))
            if len(self._conn_memo) > 4096:
                self._conn_memo.clear()
            self._conn_memo[connection] = hit
        return hit

    def unmasks_for(
        self, principal: Principal, connection: str, now: datetime | None
    ) -> tuple[_CUnmask, ...]:
        """The user's approved unmask requests on this connection valid at ``now`` (none
        without a moment: an exemption is never assumed)."""
        if now is None:
            return ()
        found = self._unmasks.get((principal.username, connection))
        if not found:
            return ()
        return tuple(u for u in found if u.unmask.active(now))

    def view(
        self, principal: Principal, connection: str, client_host: str, now: datetime | None = None
    ) -> MaskingView | None:
        """The rules masking columns for this user on this connection at ``now``, or None when
        no rule does (then statements pay nothing for masking). Approved unmask requests valid
        at ``now`` clear the columns they name; they are part of the view's ``key``, so a
        decision cached under one never outlives the request's period."""
        rules = self.for_connection(connection)
        if not rules:
            return None
        ip_limited = any(r.rule.exempt_client_ips for r in rules)
        exemptions = self.unmasks_for(principal, connection, now)
        memo_key = (
            principal.username,
            principal.groups,
            principal.roles,
            connection,
            client_host if ip_limited else "",
            tuple(u.key for u in exemptions),
        )
        if memo_key in self._principal_memo:
            return self._principal_memo[memo_key]
        found = self._view(principal, rules, client_host if ip_limited else None, exemptions)
        if len(self._principal_memo) > 16384:
            self._principal_memo.clear()
        self._principal_memo[memo_key] = found
        return found

    def _view(
        self,
        principal: Principal,
        rules: tuple[_CRule, ...],
        client_host: str | None,
        exemptions: tuple[_CUnmask, ...] = (),
    ) -> MaskingView | None:
        client = parse_ip(client_host) if client_host is not None else None
        live = tuple(r for r in rules if not r.exempts(principal, client))
        if not live:
            return None
        # one view per set of live rules (and exemptions), shared by users and statements: its
        # memos (which rule masks a column, which catalog tables have masked columns) then pay off
        key = (tuple(r.id for r in live), tuple(u.key for u in exemptions))
        view = self._view_memo.get(key)
        if view is None:
            if len(self._view_memo) > 1024:
                self._view_memo.clear()
            view = self._view_memo[key] = MaskingView(live, exemptions)
        return view


@dataclass(slots=True)
class MaskingView:
    """The rules that mask columns for a user on a connection (those that do not exempt the
    user from the client's address), and the user's approved unmask requests valid now
    (``exemptions``), with memos of what they mask."""

    rules: tuple[_CRule, ...]
    exemptions: tuple[_CUnmask, ...] = ()
    _memo: dict[SourceColumn, _CRule | None] = field(default_factory=dict)
    _cleared: dict[SourceColumn, _CUnmask | None] = field(default_factory=dict)
    _tables: dict[tuple[object, str], frozenset[tuple[str, str]]] = field(default_factory=dict)
    _cleared_tables: dict[tuple[object, str], frozenset[tuple[str, str]]] = field(default_factory=dict)
    _needs: dict[tuple[object, ...], bool] = field(default_factory=dict)
    # what a plan depends on beyond the statement and the catalog (for decision caches)
    key: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.key = (*(r.id for r in self.rules), *(u.key for u in self.exemptions))

    def masking_rule_for(self, src: SourceColumn) -> _CRule | None:
        """The rule masking ``src`` for the user, unmask requests disregarded."""
        if src in self._memo:
            return self._memo[src]
        hit = next((r for r in self.rules if r.matches(src)), None)
        if len(self._memo) > 65536:
            self._memo.clear()
        self._memo[src] = hit
        return hit

    def exemption_for(self, src: SourceColumn) -> _CUnmask | None:
        """The approved unmask request that shows ``src`` in clear although a rule masks it."""
        if not self.exemptions:
            return None
        if src in self._cleared:
            return self._cleared[src]
        hit = (
            next((u for u in self.exemptions if u.covers(src)), None)
            if self.masking_rule_for(src) is not None
            else None
        )
        if len(self._cleared) > 65536:
            self._cleared.clear()
        self._cleared[src] = hit
        return hit

    def rule_for(self, src: SourceColumn) -> _CRule | None:
        """The rule masking ``src`` in results for the user now (None: shown as it is)."""
        r = self.masking_rule_for(src)
        if r is None or not self.exemptions:
            return r
        return None if self.exemption_for(src) is not None else r

    def masked_tables(self, catalog: Catalog, database: str | None) -> frozenset[tuple[str, str]]:
        """(schema, table) in lower case of every catalog table with a masked column."""
        key = (catalog.version if catalog.version != 0 else id(catalog), database or "")
        hit = self._tables.get(key)
        if hit is None:
            out: set[tuple[str, str]] = set()
            for (s, t), cols in catalog.tables.items():
                db = catalog.database or database
                if any(self.rule_for(SourceColumn(db, s, t, c)) is not None for c in cols):
                    out.add((s.lower(), t.lower()))
            hit = frozenset(out)
            if len(self._tables) > 16:
                self._tables.clear()
            self._tables[key] = hit
        return hit

    def cleared_tables(self, catalog: Catalog, database: str | None) -> frozenset[tuple[str, str]]:
        """(schema, table) in lower case of every catalog table with a column a rule masks
        that an approved unmask request shows in clear (statements reading them get a plan,
        so that the decision names the request)."""
        if not self.exemptions:
            return frozenset()
        key = (catalog.version if catalog.version != 0 else id(catalog), database or "")
        hit = self._cleared_tables.get(key)
        if hit is None:
            db = catalog.database or database
            hit = frozenset(
                (s.lower(), t.lower())
                for (s, t), cols in catalog.tables.items()
                if any(self.exemption_for(SourceColumn(db, s, t, c)) is not None for c in cols)
            )
            if len(self._cleared_tables) > 16:
                self._cleared_tables.clear()
            self._cleared_tables[key] = hit
        return hit

    def needs_lineage(self, a: Analysis, catalog: Catalog, database: str | None) -> bool:
        """False only when the statement certainly reads no masked column: every object it
        touches is a base table known to the catalog without masked columns, and it calls
        nothing dbward cannot see into."""
        memo_key = (
            a.signature,
            a.dialect,
            catalog.version if catalog.version != 0 else id(catalog),
            database,
        )
        hit = self._needs.get(memo_key)
        if hit is None:
            hit = self._needs_lineage(a, catalog, database)
            if len(self._needs) > 65536:
                self._needs.clear()
            self._needs[memo_key] = hit
        return hit

    def _needs_lineage(self, a: Analysis, catalog: Catalog, database: str | None) -> bool:
        if a.unknown or a.opaque_kinds or a.calls_routines or a.procedural or a.reads_files:
            return True
        if not a.accesses and not (a.kinds - _READ_KINDS - {StatementKind.SET, StatementKind.SESSION}):
            return False  # BEGIN, SET, SELECT 1: no table is read
        masked = self.masked_tables(catalog, database) | self.cleared_tables(catalog, database)
        masked_names = {t for _, t in masked}
        known = catalog.base_tables_lower
        kinds = a.kinds
        if kinds - _READ_KINDS - {StatementKind.SET, StatementKind.SESSION}:
            return True  # writes, DDL, cursors: let the lineage look
        for acc in a.accesses:
            obj = acc.obj
            if obj.type is not ObjectType.TABLE:
                if obj.type is ObjectType.ROUTINE:
                    return True
                continue
            key = ((obj.schema or obj.database or "").lower(), obj.name.lower())
            if key in masked or key not in known:  # masked, a view, or not in the catalog
                return True
            if a.dialect == "postgres" and key[1] in masked_names:
                return True  # an unqualified name may reach another schema's table of that name
        return False


@dataclass(frozen=True, slots=True)
class MaskingOutcome:
    """A plan (None: nothing to mask) or a denial sentence, with the masking rule ids.

    ``cleared`` names the columns a rule masks that the statement shows in clear because of
    an approved unmask request (sentences for the decision's reasons, and so for the audit
    trail); their ``unmask:<request id>`` ids are among ``rule_ids``."""

    plan: MaskingPlan | None = None
    denial: str | None = None
    rule_ids: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()


def plan_masking(
    view: MaskingView,
    lineage: Lineage,
    *,
    principal: Principal,
    connection: str,
    catalog: Catalog,
    unresolved: UnresolvedSetting = "deny",
    inference: InferenceSetting = "deny",
    writes_data: bool = True,
    database: str | None = None,
) -> MaskingOutcome:
    """The masking of one statement's results for ``principal`` (see the module docstring).

    ``writes_data`` says whether the statement may store data (from the analysis); a
    ``mask_all`` fallback is only possible for pure reads."""
    if lineage.statements:
        plans: list[MaskingPlan | None] = []
        ids: list[str] = []
        cleared: list[str] = []
        for i, st in enumerate(lineage.statements):
            out = plan_masking(
                view,
                st,
                principal=principal,
                connection=connection,
                catalog=catalog,
                unresolved=unresolved,
                inference=inference,
                writes_data=writes_data,
                database=database,
            )
            if out.denial is not None:
                return MaskingOutcome(
                    denial=f"statement {i + 1} of this batch: {out.denial}", rule_ids=out.rule_ids
                )
            plans.append(out.plan)
            ids.extend(x for x in out.rule_ids if x not in ids)
            cleared.extend(x for x in out.cleared if x not in cleared)
        if all(p is None for p in plans):
            return MaskingOutcome(rule_ids=tuple(ids), cleared=tuple(cleared))
        first = plans[0] or MaskingPlan(columns={})
        by_source: dict[str, ColumnMask] = {}
        for p in plans:
            if p is not None:
                by_source.update(p.by_source)
        plan = MaskingPlan(
            columns=first.columns,
            rule_ids=tuple(x for x in ids if not x.startswith("unmask:")),
            mask_all=first.mask_all,
            all_mask=first.all_mask,
            by_source=by_source,
            inference=tuple(sorted({c for p in plans if p is not None for c in p.inference})),
            statements=tuple(plans),
            reasons=tuple(r for p in plans if p is not None for r in p.reasons),
            redact_errors=any(p is not None and p.redact_errors for p in plans),
        )
        return MaskingOutcome(plan=plan, rule_ids=tuple(ids), cleared=tuple(cleared))
    return _plan_one(
        view, lineage, principal, connection, catalog, unresolved, inference, writes_data, database
    )


def _src_key(src: SourceColumn) -> str:
    return f"{src.schema}.{src.table}.{src.column}".lower()


def _cleared(view: MaskingView, sources: Sequence[SourceColumn]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Sentences naming the columns shown in clear by approved unmask requests, and the
    requests' ids (``unmask:<id>``)."""
    if not view.exemptions:
        return (), ()
    by_request: dict[str, tuple[_CUnmask, list[str]]] = {}
    for src in sorted(set(sources)):
        u = view.exemption_for(src)
        if u is None:
            continue
        entry = by_request.setdefault(u.id, (u, []))
        if str(src) not in entry[1]:
            entry[1].append(str(src))
    reasons = tuple(
        f"column{'s' if len(cols) > 1 else ''} {', '.join(cols)} shown in clear by {u.unmask.describe()}"
        for u, cols in by_request.values()
    )
    return reasons, tuple(by_request)


def _plan_one(
    view: MaskingView,
    lin: Lineage,
    principal: Principal,
    connection: str,
    catalog: Catalog,
    unresolved: UnresolvedSetting,
    inference: InferenceSetting,
    writes_data: bool,
    database: str | None,
) -> MaskingOutcome:
    who = f"user {principal.username}"
    masked_tables = view.masked_tables(catalog, database)
    touched = sorted(f"{s}.{t}" for s, t in lin.tables if (s.lower(), t.lower()) in masked_tables)
    by_source: dict[str, ColumnMask] = {}
    db = catalog.database or database
    for s, t in sorted(lin.tables):
        for c in catalog.tables.get((s, t), ()):  # lineage names tables as the catalog does
            r = view.rule_for(SourceColumn(db, s, t, c))
            if r is not None:
                by_source[f"{s}.{t}.{c}".lower()] = ColumnMask(
                    spec=r.mask.spec,
                    pattern=r.mask.pattern,
                    rule_ids=r.mask.rule_ids,
                    sources=(f"{s}.{t}.{c}",),
                )

    # 1. lineage that cannot be established
    if lin.unresolved is not None:
        if lin.tables_known and not touched:
            # it reads no table with columns masked for the user (now)
            readable = [
                SourceColumn(db, s, t, c)
                for s, t in sorted(lin.tables)
                for c in catalog.tables.get((s, t), ())
            ]
            cleared, cleared_ids = _cleared(view, readable)
            return MaskingOutcome(rule_ids=cleared_ids, cleared=cleared)
        rule_ids = tuple(dict.fromkeys(m.rule_ids[0] for m in by_source.values())) or tuple(
            r.id for r in view.rules[:3]
        )
        what = (
            f"it reads {', '.join(touched)}, which {'has' if len(touched) == 1 else 'have'} columns masked for {who}"
            if touched
            else f"dbward cannot tell which tables it reads, and masking rules apply to {who} on connection {connection}"
        )
        why = lin.unresolved.rstrip(".")
        if unresolved == "mask_all" and not writes_data and not lin.writes and lin.deferred is None:
            strongest = max(view.rules, key=lambda r: r.strength)
            all_mask = ColumnMask(
                spec=_FULL if strongest.strength <= Strength.PARTIAL else strongest.mask.spec,
                rule_ids=("masking:unresolved", *rule_ids),
            )
            reason = (
                f"every column is masked: dbward cannot establish the origin of every result column "
                f"({why}) and {what} (connection {connection}: masking_unresolved is mask_all)"
            )
            return MaskingOutcome(
                plan=MaskingPlan(
                    columns={},
                    rule_ids=all_mask.rule_ids,
                    mask_all=True,
                    all_mask=all_mask,
                    by_source=by_source,
                    reasons=(reason,),
                    redact_errors=True,
                ),
                rule_ids=all_mask.rule_ids,
            )
        extra = (
            ""
            if unresolved == "deny"
            else "; masking every column is only possible for statements that only read"
        )
        return MaskingOutcome(
            denial=(
                f"denied: dbward cannot establish the origin of every result column of this statement ({why}), "
                f"and {what} ({'rules' if len(rule_ids) > 1 else 'rule'} {', '.join(rule_ids)}); connection {connection} denies such statements "
                f"(masking_unresolved is {unresolved}{extra})"
            ),
            rule_ids=("masking:unresolved", *rule_ids),
        )

    # 2. writes of masked values elsewhere
    # (an approved unmask request shows values in clear; it does not let them be copied)
    for w in lin.writes:
        for src in sorted(w.sources):
            r = view.masking_rule_for(src)
            if r is None:
                continue
            if w.target_column is not None:
                if w.target_column == src:
                    continue  # a column copied into itself
                tr = view.masking_rule_for(w.target_column)
                if (
                    tr is not None
                    and tr.strength >= r.strength
                    and (tr.strength > Strength.PATTERN or tr.id == r.id)
                ):
                    continue  # the copy is masked at least as strongly for this user
            u = view.exemption_for(src)
            also = (
                f" (the {u.unmask.describe()} shows its values in clear but does not allow copying them)"
                if u is not None
                else ""
            )
            return MaskingOutcome(
                denial=(
                    f"denied: this statement copies column {src}, which is masked for {who} by rule "
                    f"{r.rule.name}, into {w.target}; writing masked columns elsewhere is not allowed "
                    f"for users they are masked for{also}"
                ),
                rule_ids=(r.id, *((u.id,) if u is not None else ())),
            )

    # 3. result columns
    columns: dict[int, ColumnMask] = {}
    for i, out in enumerate(lin.outputs):
        m = _column_mask(view, out.direct, out.derived)
        if m is not None:
            columns[i] = m

    # 4. results fetched later
    if lin.deferred is not None and columns:
        m = next(iter(columns.values()))
        return MaskingOutcome(
            denial=(
                f"denied: {lin.deferred}, and dbward masks rows only in the statement's own result; "
                f"column {m.sources[0]} is masked for {who} by {m.rule_ids[0]}"
            ),
            rule_ids=m.rule_ids,
        )

    # 5. inference through filters, joins, sorting and grouping
    flagged: list[str] = []
    inf_ids: list[str] = []
    for src in sorted(lin.inference):
        r = view.rule_for(src)
        if r is None:
            continue
        if inference == "deny":
            return MaskingOutcome(
                denial=(
                    f"denied: column {src} is masked for {who} by rule {r.rule.name}, and this statement uses it "
                    "to filter, join, sort or group (WHERE, JOIN, GROUP BY, ORDER BY, window), which can reveal "
                    f"its values; connection {connection} does not allow that (masking_inference is deny)"
                ),
                rule_ids=(r.id,),
            )
        flagged.append(str(src))
        if r.id not in inf_ids:
            inf_ids.append(r.id)

    cleared, cleared_ids = _cleared(
        view, [src for out in lin.outputs for src in (*out.direct, *out.derived)] + sorted(lin.inference)
    )
    if not columns and not flagged and not by_source:
        return MaskingOutcome(rule_ids=cleared_ids, cleared=cleared)
    # with only by_source the engines still cross-check the wire's column origins
    ids: list[str] = []
    for m in columns.values():
        ids.extend(x for x in m.rule_ids if x not in ids)
    ids.extend(x for x in inf_ids if x not in ids)
    reasons: list[str] = []
    if columns:
        reasons.append(
            "masked: "
            + "; ".join(
                f"column {i + 1} ({lin.outputs[i].name}) by {', '.join(m.rule_ids)} ({m.how})"
                for i, m in sorted(columns.items())
            )
        )
    if flagged:
        reasons.append(
            f"flagged: masked column{'s' if len(flagged) > 1 else ''} {', '.join(flagged)} used to filter, join, "
            f"sort or group (connection {connection}: masking_inference is allow_and_flag)"
        )
    plan = MaskingPlan(
        columns=columns,
        rule_ids=tuple(ids),
        by_source=by_source,
        inference=tuple(flagged),
        reasons=tuple(reasons),
        redact_errors=bool(columns or flagged),
    )
    return MaskingOutcome(
        plan=plan, rule_ids=(*ids, *(x for x in cleared_ids if x not in ids)), cleared=cleared
    )


def _column_mask(
    view: MaskingView, direct: frozenset[SourceColumn], derived: frozenset[SourceColumn]
) -> ColumnMask | None:
    hits: list[tuple[SourceColumn, _CRule, bool]] = []
    for src in sorted(direct | derived):
        r = view.rule_for(src)
        if r is not None:
            hits.append((src, r, src in direct and src not in derived))
    if not hits:
        return None
    rule_ids = tuple(dict.fromkeys(r.id for _, r, _ in hits))
    sources = tuple(str(s) for s, _, _ in hits)
    all_direct = all(d for _, _, d in hits)
    ways = {_way(r) for _, r, _ in hits}
    strongest = max((r for _, r, _ in hits), key=lambda r: r.strength)
    if all_direct and len(ways) == 1:
        return ColumnMask(
            spec=strongest.mask.spec, pattern=strongest.mask.pattern, rule_ids=rule_ids, sources=sources
        )
    if strongest.strength <= Strength.PARTIAL:
        return ColumnMask(spec=_FULL, rule_ids=rule_ids, sources=sources)
    return ColumnMask(spec=strongest.mask.spec, rule_ids=rule_ids, sources=sources)


def _way(r: _CRule) -> object:
    return ("pattern", r.mask.pattern.name) if r.mask.pattern is not None else ("spec", r.mask.spec)


def writes_data(a: Analysis) -> bool:
    """Whether a statement may store data anywhere (then masking its result is not enough)."""
    if a.kinds - _READ_KINDS or a.writes_files:
        return True
    upper = a.sql.upper()
    return " INTO " in f" {' '.join(upper.split())} " or ":=" in a.sql


WireOrigin = tuple[str | None, str | None, str | None]  # (schema or database, table, column)


def wire_mask_columns(plan: MaskingPlan, origins: Sequence[WireOrigin | None]) -> dict[int, ColumnMask]:
    """The columns of a result to mask: the plan's, plus every column whose origin on the wire
    (MySQL column definition ``schema``/``org_table``/``org_name``; PostgreSQL RowDescription
    table OID and attribute number, mapped to names by the engine) is a masked column, so a
    column lineage missed is still masked. With ``mask_all`` every column is masked."""
    if plan.mask_all:
        return dict.fromkeys(range(len(origins)), plan.all_mask)
    out = dict(plan.columns)
    if not plan.by_source:
        return out
    by_table_col: dict[str, ColumnMask] = {}
    for k, m in plan.by_source.items():
        _, _, tc = k.partition(".")
        by_table_col.setdefault(tc, m)
    for i, origin in enumerate(origins):
        if origin is None or i in out:
            continue
        schema, table, column = origin
        if not table or not column:
            continue
        hit = (
            plan.by_source.get(f"{schema}.{table}.{column}".lower())
            if schema
            else by_table_col.get(f"{table}.{column}".lower())
        )
        if hit is not None:
            out[i] = hit
    return out
