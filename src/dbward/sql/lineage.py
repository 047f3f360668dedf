"""Column lineage: which source columns each result column of a statement can derive from.

``output_lineage(sql, dialect, catalog=..., database=..., search_path=...)`` reads a statement
the way :mod:`dbward.sql.analysis` does (MySQL executable comments expanded, every reading
traced and the readings united), resolves views through their definitions from the
:class:`Catalog`, qualifies every column with sqlglot's optimizer against the catalog, and
walks sqlglot's scopes. It answers three questions for the masking plan
(:mod:`dbward.masking.rules`):

* **outputs**: for each result column position, the source columns (``db.schema.table.column``)
  its value can derive from, and whether the value is a *direct copy* of them (only aliases,
  derived tables, CTEs, set operations, casts, COALESCE, CASE branches, MIN/MAX and value
  window functions on the way) or a value *computed* from them (``concat``, ``lower``,
  ``substr``, arithmetic, string and JSON aggregation...);
* **inference**: source columns that decide which rows come back, in which order or how they
  are grouped (WHERE, JOIN ON/USING, GROUP BY, HAVING, ORDER BY, window PARTITION/ORDER,
  DISTINCT ON, the arguments of COUNT, predicates of subqueries), in every scope;
* **writes**: source columns whose values the statement stores somewhere else (INSERT ...
  SELECT, CREATE TABLE AS, SELECT INTO, UPDATE ... SET, MySQL ``INTO @var`` and ``:=``,
  ``INTO OUTFILE``, ``COPY ... TO`` a file).

Whatever cannot be traced with certainty is said in :attr:`Lineage.unresolved` with a
sentence why (an unknown table, a stored routine, a construct dbward does not trace, a parse
failure); :attr:`Lineage.tables_known` is False when even the tables read are unknown. The
policy fails closed on both.

Tracing costs a qualification and a scope walk (~0.3-3 ms), so results are cached by the
statement's lineage key (the fingerprint with positional ORDER BY/GROUP BY numbers kept,
computed on every reading of the text), the catalog version, the database and the search path.
Counterparts: :mod:`dbward.sql.analysis` (kinds and objects), :mod:`dbward.masking.rules`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect as SqlglotDialect
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema
from sqlglot.tokenizer_core import Token, TokenType

from dbward.sql.analysis import (
    _BUILTIN_FUNCTIONS,
    _FILE_FUNCTIONS,
    _WRITING_FUNCTIONS,
    _command_tokens,
    _is_cte_reference,
    _readings,
    _search_path_value,
    _strip_into_outfile,
    _words,
)
from dbward.sql.dialects import sqlglot_dialect
from dbward.sql.fingerprint import fingerprint_hash, fingerprint_tokens
from dbward.sql.lexer import Dialect, split_spans, strip_leading_comments

LINEAGE_CACHE_SIZE = 4096
MAX_VIEW_DEPTH = 16


# ---------------------------------------------------------------------------------------
# the catalog


@dataclass(frozen=True, slots=True, order=True)
class SourceColumn:
    """A column of a base table. ``database`` is the PostgreSQL database (``None`` when not
    known) or, in MySQL, the same as ``schema``."""

    database: str | None
    schema: str
    table: str
    column: str

    @property
    def table_qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


class Catalog:
    """What dbward knows of a target's schema: the ordered columns of every table (and view),
    and the SQL text of every view, by ``(schema, name)`` (in MySQL the schema is the
    database). ``version`` must change whenever anything here does (the lineage cache and
    the decision cache are keyed by it). ``database`` is the PostgreSQL database the catalog
    describes.

    View definitions are read in the view's own schema: unqualified names in them are that
    schema's objects (PostgreSQL providers should read ``pg_get_viewdef`` with an empty
    search_path so that names come qualified). MySQL names are matched case-insensitively;
    PostgreSQL names exactly as stored (unquoted identifiers in queries fold to lower case).
    """

    __slots__ = (
        "_ci_tables",
        "_ci_views",
        "base_tables_lower",
        "database",
        "tables",
        "version",
        "views",
        "views_lower",
    )

    def __init__(
        self,
        tables: Mapping[tuple[str, str], Iterable[str]] | None = None,
        views: Mapping[tuple[str, str], str] | None = None,
        *,
        version: int | str = 0,
        database: str | None = None,
    ) -> None:
        self.tables: dict[tuple[str, str], tuple[str, ...]] = {k: tuple(v) for k, v in (tables or {}).items()}
        self.views: dict[tuple[str, str], str] = dict(views or {})
        self.version = version
        self.database = database
        self._ci_tables: dict[tuple[str, str], tuple[tuple[str, str], tuple[str, ...]]] = {
            (s.lower(), t.lower()): ((s, t), cols) for (s, t), cols in self.tables.items()
        }
        self._ci_views: dict[tuple[str, str], tuple[tuple[str, str], str]] = {
            (s.lower(), t.lower()): ((s, t), sql) for (s, t), sql in self.views.items()
        }
        # (schema, name) in lower case, for the evaluator's fast path
        self.views_lower: frozenset[tuple[str, str]] = frozenset(self._ci_views)
        self.base_tables_lower: frozenset[tuple[str, str]] = frozenset(self._ci_tables) - self.views_lower

    def __repr__(self) -> str:
        return f"Catalog(version={self.version!r}, tables={len(self.tables)}, views={len(self.views)})"

    def columns(
        self, schema: str, table: str, dialect: Dialect
    ) -> tuple[tuple[str, str], tuple[str, ...]] | None:
        if dialect == "mysql":
            return self._ci_tables.get((schema.lower(), table.lower()))
        cols = self.tables.get((schema, table))
        return None if cols is None else ((schema, table), cols)

    def view(self, schema: str, name: str, dialect: Dialect) -> tuple[tuple[str, str], str] | None:
        if dialect == "mysql":
            return self._ci_views.get((schema.lower(), name.lower()))
        sql = self.views.get((schema, name))
        return None if sql is None else ((schema, name), sql)

    def has(self, schema: str, name: str, dialect: Dialect) -> bool:
        return self.columns(schema, name, dialect) is not None or self.view(schema, name, dialect) is not None


# ---------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One result column: its name as the client sees it and where its value comes from.

    ``direct`` holds the sources whose value reaches the column unchanged (a copy, possibly
    through casts, COALESCE, CASE branches, MIN/MAX, LAG...); ``derived`` those it is computed
    from. A source in both is in ``derived`` only."""

    name: str
    direct: frozenset[SourceColumn] = frozenset()
    derived: frozenset[SourceColumn] = frozenset()

    @property
    def sources(self) -> frozenset[SourceColumn]:
        return self.direct | self.derived


@dataclass(frozen=True, slots=True)
class Write:
    """Values of ``sources`` stored into ``target`` (a table, a variable, a file)."""

    target: str
    sources: frozenset[SourceColumn]
    target_column: SourceColumn | None = None  # when the target is a known table column


@dataclass(frozen=True, slots=True, kw_only=True)
class Lineage:
    """The lineage of one statement (or, in ``statements``, of each statement of a batch)."""

    outputs: tuple[OutputColumn, ...] = ()
    inference: frozenset[SourceColumn] = frozenset()
    writes: tuple[Write, ...] = ()
    tables: frozenset[tuple[str, str]] = frozenset()  # base tables read (schema, table), views resolved
    unresolved: str | None = None  # why some output column could not be traced
    tables_known: bool = True  # False: even the tables read are unknown (routine calls, opaque text)
    deferred: str | None = None  # the rows come back later (cursor, SQL-level PREPARE)
    statements: tuple[Lineage, ...] = ()  # one per statement when the text holds several
    key: str = ""  # the cache key's statement part (lineage fingerprint hash)

    @property
    def resolved(self) -> bool:
        return self.unresolved is None and all(s.resolved for s in self.statements)

    @property
    def all_sources(self) -> frozenset[SourceColumn]:
        out: set[SourceColumn] = set(self.inference)
        for o in self.outputs:
            out |= o.sources
        for w in self.writes:
            out |= w.sources
        for s in self.statements:
            out |= s.all_sources
        return frozenset(out)


def _unresolved(
    reason: str, *, tables_known: bool = False, tables: Iterable[tuple[str, str]] = ()
) -> Lineage:
    return Lineage(unresolved=reason, tables_known=tables_known, tables=frozenset(tables))


class LineageError(Exception):
    """Raised inside the tracer; becomes :attr:`Lineage.unresolved`."""

    def __init__(self, reason: str, *, tables_known: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tables_known = tables_known


# ---------------------------------------------------------------------------------------
# entry point and cache


class _Cache:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple[object, ...], Lineage] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[object, ...]) -> Lineage | None:
        hit = self.data.get(key)
        if hit is not None:
            self.data.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return hit

    def put(self, key: tuple[object, ...], value: Lineage) -> None:
        self.data[key] = value
        if len(self.data) > self.size:
            self.data.popitem(last=False)


_CACHE = _Cache(LINEAGE_CACHE_SIZE)


def cache_clear() -> None:
    lineage_key.cache_clear()
    _CACHE.data.clear()
    _CACHE.hits = _CACHE.misses = 0


def cache_info() -> str:
    return f"lineage cache: {len(_CACHE.data)} entries, {_CACHE.hits} hits, {_CACHE.misses} misses"


@lru_cache(maxsize=LINEAGE_CACHE_SIZE)
def lineage_key(sql: str, dialect: Dialect, server_version: str | None = None) -> str:
    """What the lineage of ``sql`` depends on in the text: the fingerprint of every reading
    (executable comments expanded), with numbers after ORDER BY / GROUP BY kept (they name
    result columns). Two texts with equal keys have equal lineage under one catalog."""
    texts, problems = _readings(sql, dialect, server_version)
    if _PREPARE.search(sql):
        # the prepared text is a literal whose content decides everything
        return "raw:" + fingerprint_hash(sql) + ":" + str(len(sql)) + ":" + sql
    parts: list[str] = []
    sg = _sg(dialect)
    for text in texts:
        try:
            tokens = list(sg.tokenize(text))
        except SqlglotError:
            return "raw:" + fingerprint_hash(sql) + ":" + str(len(sql)) + ":" + sql
        # sqlglot reads what follows a command word (EXPLAIN, CALL, DO...) as one string:
        # tokenize it again so that it counts like any other text
        tokens, _, _ = _command_tokens(tokens, text, dialect)
        if len(tokens) == 2 and tokens[1].token_type is TokenType.STRING:  # DO $$...$$ and the like
            return "raw:" + fingerprint_hash(sql) + ":" + str(len(sql)) + ":" + sql
        parts.append(fingerprint_tokens(_keep_positional(tokens)))
    if problems:
        parts.append("problem:" + problems[0])
    return fingerprint_hash(" || ".join(parts)) + ":" + str(len(parts))


_INNER_STATEMENT = re.compile(
    r"(?i)\b(?:SELECT|WITH|INSERT|UPDATE|DELETE|VALUES|TABLE|MERGE|CREATE|EXECUTE|DECLARE|REPLACE)\b|\("
    r"(?=\s*(?:SELECT|WITH)\b)"
)
_PREPARE = re.compile(r"(?i)\bPREPARE\b")
_BY_LIST_CONT = frozenset({TokenType.COMMA, TokenType.ASC, TokenType.DESC, TokenType.NUMBER})


def _keep_positional(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    in_by = False
    for t in tokens:
        tt = t.token_type
        if (
            tt in (TokenType.ORDER_BY, TokenType.GROUP_BY)
            or (tt is TokenType.VAR and t.text.upper() == "BY")
            or t.text.upper() == "BY"
        ):
            in_by = True
        elif tt is TokenType.NUMBER and in_by:
            t = Token(TokenType.VAR, "#" + t.text, t.line, t.col, t.start, t.end, t.comments)
        elif tt not in _BY_LIST_CONT:
            in_by = False
        out.append(t)
    return out


def output_lineage(
    sql: str,
    dialect: Literal["mysql", "postgres"],
    *,
    catalog: Catalog,
    database: str | None = None,
    search_path: tuple[str, ...] = (),
    server_version: str | None = None,
) -> Lineage:
    """The lineage of one client message (one statement or a batch). Cached; never raises."""
    if dialect not in ("mysql", "postgres"):
        raise ValueError(f"unsupported SQL dialect {dialect!r}")
    key_text = lineage_key(sql, dialect, server_version)
    key = (
        key_text,
        dialect,
        catalog.version,
        id(catalog) if catalog.version == 0 else 0,
        database,
        tuple(search_path),
    )
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    try:
        result = _trace_text(sql, dialect, catalog, database, tuple(search_path), server_version)
    except RecursionError:
        result = _unresolved("the statement is nested too deeply to trace")
    except Exception as exc:  # a tracer bug must fail closed, never allow
        result = _unresolved(f"column lineage could not be traced ({type(exc).__name__})")
    result = _with_key(result, key_text)
    _CACHE.put(key, result)
    return result


def _with_key(lin: Lineage, key: str) -> Lineage:
    return replace(lin, key=key)


def _sg(dialect: Dialect) -> SqlglotDialect:
    if dialect == "mysql":
        # MySQL column names are case-insensitive, and table names are on Windows/macOS and
        # with lower_case_table_names: matching case-insensitively can only mask more.
        return SqlglotDialect.get_or_raise("mysql, normalization_strategy=case_insensitive")
    return sqlglot_dialect("postgres")


def _trace_text(
    sql: str,
    dialect: Dialect,
    catalog: Catalog,
    database: str | None,
    search_path: tuple[str, ...],
    server_version: str | None,
) -> Lineage:
    texts, problems = _readings(sql, dialect, server_version)
    if problems:
        return _unresolved(f"the text cannot be read with certainty: {problems[0]}")
    per_reading: list[list[Lineage]] = []
    for text in texts:
        stmts: list[Lineage] = []
        db = database
        sp = search_path
        for span in split_spans(text, dialect):
            if not span.has_code:
                continue
            piece = text[span.start : span.end]
            lin, new_db = _trace_statement(piece, _Ctx(dialect, catalog, db, sp))
            if new_db is not None:
                db = new_db
            if dialect == "postgres":
                new_sp = _search_path_value(strip_leading_comments(piece, dialect))
                if new_sp:
                    sp = new_sp  # SET search_path earlier in the batch
            stmts.append(lin)
        per_reading.append(stmts)
    if not per_reading or not per_reading[0]:
        return Lineage()
    merged = per_reading[0]
    for other in per_reading[1:]:
        if len(other) != len(merged):
            return _unresolved("the readings of the executable comments split into different statements")
        merged = [_merge(a, b) for a, b in zip(merged, other, strict=True)]
    if len(merged) == 1:
        return merged[0]
    unresolved = next((s.unresolved for s in merged if s.unresolved), None)
    return Lineage(
        statements=tuple(merged),
        unresolved=unresolved,
        tables_known=all(s.tables_known for s in merged),
        tables=frozenset(t for s in merged for t in s.tables),
        inference=frozenset(c for s in merged for c in s.inference),
        writes=tuple(w for s in merged for w in s.writes),
        deferred=next((s.deferred for s in merged if s.deferred), None),
    )


def _merge(a: Lineage, b: Lineage) -> Lineage:
    """Two readings of one statement: every column gets the sources of both."""
    if a == b:
        return a
    unresolved = a.unresolved or b.unresolved
    # the server runs one reading: column i comes from column i of one of them
    width = max(len(a.outputs), len(b.outputs))
    empty = OutputColumn("?")
    merged: list[OutputColumn] = []
    for i in range(width):
        x = a.outputs[i] if i < len(a.outputs) else empty
        y = b.outputs[i] if i < len(b.outputs) else empty
        merged.append(
            OutputColumn(
                x.name if x is not empty else y.name,
                (x.direct | y.direct) - (x.derived | y.derived),
                x.derived | y.derived,
            )
        )
    outputs = tuple(merged)
    return Lineage(
        outputs=outputs,
        inference=a.inference | b.inference,
        writes=a.writes + tuple(w for w in b.writes if w not in a.writes),
        tables=a.tables | b.tables,
        unresolved=unresolved,
        tables_known=a.tables_known and b.tables_known,
        deferred=a.deferred or b.deferred,
    )


# ---------------------------------------------------------------------------------------
# one statement


@dataclass(slots=True)
class _Ctx:
    dialect: Dialect
    catalog: Catalog
    database: str | None
    search_path: tuple[str, ...]
    tables: set[tuple[str, str]] = field(default_factory=set)

    @property
    def pg_db(self) -> str | None:
        return self.catalog.database or self.database if self.dialect == "postgres" else None

    def schemas(self) -> tuple[str, ...]:
        if self.dialect == "mysql":
            return (self.database,) if self.database else ()
        return self.search_path or ("public",)


# statements that return no rows from tables and store no table data
_NO_DATA_WORDS = frozenset(
    {
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "END",
        "ABORT",
        "XA",
        "START",
        "SHOW",
        "HELP",
        "DESCRIBE",
        "DESC",
        "EXPLAIN",
        "USE",
        "RESET",
        "DISCARD",
        "LISTEN",
        "UNLISTEN",
        "CLOSE",
        "DEALLOCATE",
        "DROP",
        "ALTER",
        "TRUNCATE",
        "RENAME",
        "COMMENT",
        "GRANT",
        "REVOKE",
        "LOCK",
        "UNLOCK",
        "NOTIFY",
        "VACUUM",
        "ANALYZE",
        "ANALYSE",
        "OPTIMIZE",
        "REINDEX",
        "CHECKPOINT",
        "CLUSTER",
        "KILL",
        "FLUSH",
        "CHECK",
        "REPAIR",
        "CHECKSUM",
        "MOVE",
        "EXECUTE",
    }
)


def _trace_statement(text: str, ctx: _Ctx) -> tuple[Lineage, str | None]:
    body = strip_leading_comments(text, ctx.dialect)
    words = _words(body, 4)
    if not words:
        return Lineage(), None
    w0 = words[0]
    w1 = words[1] if len(words) > 1 else ""
    my = ctx.dialect == "mysql"
    if w0 == "USE" and my:
        name = body.split(None, 1)[1].strip().strip(";").strip("`") if len(body.split(None, 1)) > 1 else None
        return Lineage(), name
    if w0 == "EXPLAIN" or (w0 in ("DESCRIBE", "DESC") and my):
        if re.search(r"(?i)\bANALY[SZ]E\b", body[:120]):
            # it runs the statement: its writes and what its row counts tell count, not its rows
            m = _INNER_STATEMENT.search(body)
            if m is None:
                return _unresolved("the statement under EXPLAIN ANALYZE could not be found"), None
            explained, _ = _trace_statement(body[m.start() :], ctx)
            return replace(explained, outputs=()), None
        return Lineage(), None
    if w0 == "ANALYZE" and my and w1 in ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "REPLACE"):
        return _unresolved(
            "MariaDB ANALYZE runs the statement it analyses; it is not traced", tables_known=False
        ), None
    if w0 in ("FETCH",):
        return Lineage(), None  # cursors are checked where they are declared
    if w0 in ("CREATE", "ALTER") and not re.search(r"(?is)\bAS\b|\bSELECT\b", body):
        return Lineage(), None
    if w0 in _NO_DATA_WORDS:
        return Lineage(), None
    if w0 == "SET":
        if "SELECT" not in body.upper() and ":=" not in body:
            return Lineage(), None
        return _parse_and_trace(body, ctx), None
    if w0 == "CALL":
        return _unresolved(
            "a stored procedure runs code dbward cannot trace, so its results cannot be checked column by column",
            tables_known=False,
        ), None
    if w0 == "DO":
        if my:
            return _parse_and_trace("SELECT" + body[2:], ctx), None
        return _unresolved("a DO block runs code dbward cannot trace", tables_known=False), None
    if w0 == "PREPARE":
        m = re.match(r"(?is)\s*PREPARE\s+\S+\s+(?:\([^)]*\)\s*)?(?:AS|FROM)\s+(.*)$", body)
        if m is None:
            return _unresolved("the text of this PREPARE could not be read", tables_known=False), None
        inner = m.group(1).strip()
        if my:
            if not inner or inner[0] not in "'\"":
                return _unresolved(
                    "PREPARE from a variable: dbward cannot see the statement it prepares",
                    tables_known=False,
                ), None
            inner = inner[1:].rstrip().rstrip(";").rstrip()[:-1]
        lin, _ = _trace_statement(inner, ctx)
        return _defer(lin, "a prepared statement returns its rows later, through EXECUTE"), None
    if w0 == "DECLARE" and not my:
        m = re.search(r"(?is)\bCURSOR\b.*?\bFOR\b", body)
        if m is None:
            return _unresolved("DECLARE without CURSOR ... FOR is not understood", tables_known=False), None
        lin, _ = _trace_statement(body[m.end() :], ctx)
        return _defer(lin, "a cursor returns its rows later, through FETCH"), None
    if w0 == "COPY" and not my:
        return _parse_and_trace(body, ctx), None
    if w0 == "LOAD" or (w0 == "REPLACE" and not my):
        return Lineage(), None
    if w0 in (
        "SELECT",
        "WITH",
        "VALUES",
        "TABLE",
        "(",
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "MERGE",
        "CREATE",
    ):
        return _parse_and_trace(body, ctx), None
    return _unresolved(f"statements beginning with {w0} are not traced", tables_known=False), None


def _defer(lin: Lineage, why: str) -> Lineage:
    return replace(lin, deferred=why)


def _parse_and_trace(text: str, ctx: _Ctx) -> Lineage:
    sg = _sg(ctx.dialect)
    try:
        tokens = list(sg.tokenize(text))
    except SqlglotError:
        return _unresolved("the statement cannot be tokenized", tables_known=False)
    outfile: str | None = None
    if ctx.dialect == "mysql":
        stripped = _strip_into_outfile(tokens, text)
        if stripped is not None:
            text, word = stripped
            outfile = f"a file on the database server (INTO {word})"
            try:
                tokens = list(sg.tokenize(text))
            except SqlglotError:
                return _unresolved("the statement cannot be tokenized", tables_known=False)
    try:
        parsed = [p for p in sg.parser(error_message_context=0).parse(tokens, text) if p is not None]
    except SqlglotError:
        return _unresolved("the statement could not be parsed", tables_known=False)
    if len(parsed) != 1:
        return _unresolved("the statement could not be parsed", tables_known=False)
    tree = parsed[0]
    tracer = _Tracer(ctx)
    # every table the statement can read, views followed, before any tracing can fail: an
    # unresolved statement is then denied only when it reads a table with masked columns
    tables_known = tracer.collect_tables(tree, 0)
    try:
        lin = tracer.statement(tree)
    except LineageError as e:
        return _unresolved(e.reason, tables_known=tables_known and e.tables_known, tables=ctx.tables)
    except SqlglotError as e:
        msg = str(e).split(". Line")[0]
        return _unresolved(
            f"the columns of this statement could not be resolved against the catalog ({msg})",
            tables_known=tables_known,
            tables=ctx.tables,
        )
    if outfile is not None:
        srcs = frozenset(s for o in lin.outputs for s in o.sources)
        lin = replace(lin, writes=(*lin.writes, Write(outfile, srcs)), outputs=())
    return lin


# ---------------------------------------------------------------------------------------
# the tracer

# Nodes whose value is their first argument's value (or one of their value arguments').
_PRESERVING: tuple[type[exp.Expr], ...] = (
    exp.Alias,
    exp.Paren,
    exp.Cast,
    exp.TryCast,
    exp.Coalesce,
    exp.Max,
    exp.Min,
    exp.AnyValue,
    exp.FirstValue,
    exp.LastValue,
    exp.NthValue,
    exp.Lag,
    exp.Lead,
    exp.Subquery,
    exp.Window,
    exp.Nullif,
)
# Function names (Anonymous) that return one of their arguments unchanged.
_PRESERVING_NAMES = frozenset({"ifnull", "nvl", "any_value", "first", "last", "greatest", "least"})
# Table-valued built-ins whose rows derive only from their arguments.
_BUILTIN_TVFS = frozenset(
    {
        "generate_series",
        "unnest",
        "json_to_record",
        "json_to_recordset",
        "jsonb_to_record",
        "jsonb_to_recordset",
        "json_each",
        "json_each_text",
        "jsonb_each",
        "jsonb_each_text",
        "json_array_elements",
        "json_array_elements_text",
        "jsonb_array_elements",
        "jsonb_array_elements_text",
        "regexp_split_to_table",
        "regexp_matches",
        "string_to_table",
        "json_populate_record",
        "json_populate_recordset",
        "jsonb_populate_record",
        "jsonb_populate_recordset",
        "generate_subscripts",
        "json_table",
    }
)

_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "performance_schema", "mysql", "sys"})
# Relations holding sampled column values (most common values, histograms, min/max).
_PG_STATISTICS = frozenset(
    {"pg_stats", "pg_statistic", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic_ext_data"}
)
_MYSQL_STATISTICS = frozenset(
    {("mysql", "column_stats"), ("information_schema", "column_statistics"), ("mysql", "innodb_table_stats")}
)

# Functions whose effect (time taken) depends on their arguments.
_TIMING_FUNCTIONS = frozenset({"sleep", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "benchmark"})

Contrib = dict[SourceColumn, bool]  # source -> reaches the value unchanged


def _add(into: Contrib, src: Contrib, direct: bool = True) -> None:
    for k, v in src.items():
        d = v and direct
        into[k] = into.get(k, True) and d if k in into else d


class _Tracer:
    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.dialect = _sg(ctx.dialect)
        self.inference: Contrib = {}
        self.writes: dict[Write, None] = {}
        self.scope_of: dict[int, Scope] = {}
        self.memo: dict[int, list[tuple[str, Contrib]]] = {}
        self.in_progress: set[int] = set()
        self.partial: dict[int, list[tuple[str, Contrib]]] = {}
        self.recursed: set[int] = set()
        self.traversed: set[int] = set()
        self.partial_reads: list[int] = []
        self.shadows: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.view_depth = 0

    # ---------------------------------------------------------------- statements

    def statement(self, tree: exp.Expr) -> Lineage:
        if isinstance(tree, exp.Command):
            raise LineageError(
                f"the statement is not understood by the analyser ({str(tree.this).upper()})",
                tables_known=False,
            )
        outputs: list[tuple[str, Contrib]] = []
        if isinstance(tree, exp.Values):
            outputs = [(f"column{i + 1}", self.loose(v)) for i, v in enumerate(_values_columns(tree))]
        elif isinstance(tree, exp.Query):
            into = tree.args.get("into") if isinstance(tree, exp.Select) else None
            outputs = self.query(tree)
            if into is not None:
                what = into.this.sql(dialect=self.dialect) if into.this is not None else "?"
                where = (
                    f"the session variable {what} (SELECT ... INTO)"
                    if what.startswith("@") or self.ctx.dialect == "mysql"
                    else f"table {what} (SELECT ... INTO)"
                )
                self._write_outputs(where, outputs)
                outputs = []
        elif isinstance(tree, exp.Insert):
            outputs = self.insert(tree)
        elif isinstance(tree, exp.Update):
            outputs = self.update(tree)
        elif isinstance(tree, exp.Delete):
            outputs = self.delete(tree)
        elif isinstance(tree, exp.Create):
            self.create(tree)
        elif isinstance(tree, exp.Copy):
            outputs = self.copy(tree)
        elif isinstance(tree, exp.Set):
            self.set_(tree)
        elif isinstance(tree, exp.Merge):
            raise LineageError("MERGE is not traced column by column", tables_known=True)
        else:
            raise LineageError(f"{type(tree).__name__} statements are not traced", tables_known=False)
        return Lineage(
            outputs=tuple(_column(n, c) for n, c in outputs),
            inference=frozenset(self.inference),
            writes=tuple(self.writes),
            tables=frozenset(self.ctx.tables),
        )

    def _write(self, w: Write) -> None:
        self.writes[w] = None

    def _write_outputs(self, target: str, outputs: list[tuple[str, Contrib]]) -> None:
        srcs: set[SourceColumn] = set()
        for _, c in outputs:
            srcs |= set(c)
        if srcs:
            self._write(Write(target, frozenset(srcs)))

    def loose(self, node: exp.Expr) -> Contrib:
        """The sources of a tree outside any query (VALUES rows): its subqueries' outputs."""
        out: Contrib = {}
        for sub in _outer_queries(node):
            for _, c in self.query(sub.copy()):
                _add(out, c)
        if any(True for _ in node.find_all(exp.Column)) and not out:
            raise LineageError("a column reference outside a query could not be traced")
        return out

    def query(self, tree: exp.Expr) -> list[tuple[str, Contrib]]:
        while isinstance(tree, exp.Subquery):
            tree = tree.this
        tree = self.prepare(tree)
        root = build_scope(tree)
        if root is None:
            raise LineageError("the query's scopes could not be built")
        for s in root.traverse():
            self.scope_of[id(s.expression)] = s
            self.traversed.add(id(s))
        outs = self.scope_outputs(root)
        for s in root.traverse():
            self.scope_inference(s)
        return outs

    def prepare(self, tree: exp.Expr) -> exp.Expr:
        """Inline views, pre-qualify tables along the search path, and qualify every column."""
        tree = self.inline_views(tree, 0)
        schema: dict[str, object] = {}
        for t in tree.find_all(exp.Table):
            if not t.name or isinstance(t.this, exp.Func) or _is_cte_reference(t):
                continue
            found = self.ctx.catalog.columns(t.db, t.name, self.ctx.dialect)
            if found is None:
                continue
            (s, n), cols = found
            key_s, key_n = (s.lower(), n.lower()) if self.ctx.dialect == "mysql" else (s, n)
            cmap = {(c.lower() if self.ctx.dialect == "mysql" else c): "text" for c in cols}
            tables = schema.setdefault(key_s, {})
            assert isinstance(tables, dict)
            tables[key_n] = cmap
        ms = MappingSchema(schema, dialect=self.dialect, normalize=False)
        q = qualify(
            tree,
            schema=ms,
            dialect=self.dialect,
            validate_qualify_columns=True,
            expand_stars=True,
            quote_identifiers=False,
        )
        return q

    def collect_tables(self, tree: exp.Expr, depth: int) -> bool:
        """Add every base table ``tree`` reads (through views) to the context; False when
        some table or function cannot be known."""
        if depth > MAX_VIEW_DEPTH:
            return False
        ok = True
        for t in tree.find_all(exp.Table):
            if isinstance(t.this, exp.Func):
                name = t.this.name if isinstance(t.this, exp.Anonymous) else t.this.key
                ok = ok and name.lower() in _BUILTIN_TVFS
                continue
            if not t.name or _is_cte_reference(t):
                continue
            try:
                loc = self.resolve_table(t)
            except LineageError:
                return False
            if self.statistics_relation(t, loc):
                return False
            if loc is None or not self.ctx.catalog.has(loc[0], loc[1], self.ctx.dialect):
                if _is_write_target(t) or self.system_table(t, loc):
                    continue  # a table being created; a system catalog without masked columns
                return False  # not in the catalog: it may hold anything (a stale catalog)
            view = self.ctx.catalog.view(loc[0], loc[1], self.ctx.dialect)
            if view is None:
                found = self.ctx.catalog.columns(loc[0], loc[1], self.ctx.dialect)
                if found is not None:
                    self.ctx.tables.add(found[0])
                continue
            (vs, _), text = view
            try:
                parsed = self.dialect.parse(text)
            except SqlglotError:
                return False
            saved = self.ctx.search_path, self.ctx.database
            self.ctx.search_path = (vs,)
            if self.ctx.dialect == "mysql":
                self.ctx.database = vs
            try:
                ok = all(p is not None and self.collect_tables(p, depth + 1) for p in parsed) and ok
            finally:
                self.ctx.search_path, self.ctx.database = saved
        return ok

    def system_table(self, t: exp.Table, loc: tuple[str, str] | None) -> bool:
        """A table of the server's own catalogs (pg_catalog, information_schema, mysql...),
        which holds no user data unless it is a statistics relation."""
        if loc is not None and loc[0].lower() in _SYSTEM_SCHEMAS:
            return True
        # PostgreSQL searches pg_catalog before the search path
        return self.ctx.dialect == "postgres" and not t.db and t.name.lower().startswith("pg_")

    def statistics_relation(self, t: exp.Table, loc: tuple[str, str] | None) -> bool:
        name = t.name.lower()
        schema = (loc[0] if loc is not None else t.db).lower()
        if self.ctx.dialect == "postgres":
            return name in _PG_STATISTICS and (not t.db or schema == "pg_catalog")
        return (schema, name) in _MYSQL_STATISTICS

    def resolve_table(self, t: exp.Table) -> tuple[str, str] | None:
        """The (schema, name) of a table reference, following the search path."""
        if t.catalog and self.ctx.dialect == "postgres":
            dbname = self.ctx.pg_db
            if dbname is not None and _norm(t.args.get("catalog"), "postgres") != dbname:
                raise LineageError(f"the table {t.sql(dialect=self.dialect)} names another database")
        name = _norm(t.this, self.ctx.dialect)
        if t.db:
            return (_norm(t.args.get("db"), self.ctx.dialect), name)
        for s in self.ctx.schemas():
            if self.ctx.catalog.has(s, name, self.ctx.dialect):
                return (s, name)
        return None

    def inline_views(self, tree: exp.Expr, depth: int) -> exp.Expr:
        if depth > MAX_VIEW_DEPTH:
            raise LineageError("views are nested too deeply (or define each other) to trace")
        for t in list(tree.find_all(exp.Table)):
            if isinstance(t.this, exp.Func):
                self.check_tvf(t.this)
                continue
            if not t.name or _is_cte_reference(t) or isinstance(t.parent, (exp.Drop,)):
                continue
            if isinstance(t.parent, exp.Schema) or _is_write_target(t):
                continue
            loc = self.resolve_table(t)
            if self.statistics_relation(t, loc):
                raise LineageError(
                    f"{t.sql(dialect=self.dialect)} holds sampled values of table columns (optimizer "
                    "statistics), masked columns included"
                )
            if loc is None or (
                not self.ctx.catalog.has(loc[0], loc[1], self.ctx.dialect) and self.system_table(t, loc)
            ):
                if self.system_table(t, loc):
                    raise LineageError(
                        f"the system table {t.sql(dialect=self.dialect)} is not in dbward's catalog, so its "
                        "columns cannot be traced",
                        tables_known=True,
                    )
                raise LineageError(
                    f"the table {t.sql(dialect=self.dialect)} is not in dbward's catalog of this connection "
                    "(refresh the catalog, or check the name and search_path)"
                )
            view = self.ctx.catalog.view(loc[0], loc[1], self.ctx.dialect)
            if view is None:
                found = self.ctx.catalog.columns(loc[0], loc[1], self.ctx.dialect)
                if found is None:
                    raise LineageError(f"the table {loc[0]}.{loc[1]} is not in dbward's catalog")
                real = found[0]
                self.ctx.tables.add(real)
                if not t.db and self.ctx.dialect == "postgres":
                    self.shadowed(real)
                t.set("db", exp.to_identifier(real[0], quoted=True))
                t.set("this", exp.to_identifier(real[1], quoted=True))
                t.set("catalog", None)
                continue
            (vs, vn), text = view
            try:
                parsed = self.dialect.parse(text)
            except SqlglotError as e:
                raise LineageError(f"the definition of view {vs}.{vn} could not be parsed") from e
            body = parsed[0] if len(parsed) == 1 else None
            if not isinstance(body, exp.Query):
                raise LineageError(f"the definition of view {vs}.{vn} is not a query")
            # names in the view body are read in the view's schema
            saved = self.ctx.search_path, self.ctx.database
            self.ctx.search_path, self.ctx.database = (
                (vs,),
                (vs if self.ctx.dialect == "mysql" else self.ctx.database),
            )
            try:
                body = self.inline_views(body, depth + 1)
            finally:
                self.ctx.search_path, self.ctx.database = saved
            alias = t.alias or vn
            cols = self.ctx.catalog.columns(vs, vn, self.ctx.dialect)
            alias_node = exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
            old_alias = t.args.get("alias")
            col_aliases = old_alias.args.get("columns") if isinstance(old_alias, exp.TableAlias) else None
            if col_aliases:
                alias_node.set("columns", col_aliases)
            elif cols is not None:
                alias_node.set("columns", [exp.to_identifier(c, quoted=True) for c in cols[1]])
            sub = exp.Subquery(this=body, alias=alias_node)
            t.replace(sub)
            if t is tree:
                return sub
        return tree

    def shadowed(self, real: tuple[str, str]) -> None:
        """An unqualified PostgreSQL name: the search path can change under dbward's feet
        (``set_config('search_path', ...)``, a function's SET clause), so same-named tables of
        other schemas count as sources too (their columns of the same name)."""
        others = [k for k in self.ctx.catalog.tables if k[1] == real[1] and k != real]
        if others:
            self.shadows[real] = others
            self.ctx.tables.update(others)

    def check_tvf(self, fn: exp.Func) -> None:
        name = (fn.name if isinstance(fn, exp.Anonymous) else fn.key).lower()
        if isinstance(fn, exp.Anonymous) and name not in _BUILTIN_TVFS:
            raise LineageError(
                f"the table function {fn.name} runs code dbward cannot trace", tables_known=False
            )

    # ---------------------------------------------------------------- scopes

    def scope_outputs(self, scope: Scope) -> list[tuple[str, Contrib]]:
        key = id(scope)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        if key in self.in_progress:  # a recursive CTE reading itself
            self.recursed.add(key)
            self.partial_reads.append(key)
            return self.partial.get(key, [])
        self.in_progress.add(key)
        start = len(self.partial_reads)
        try:
            result = self._compute_outputs(scope)
            rounds = 0
            while key in self.recursed and result != self.partial.get(key):
                # iterate to the fixed point: sources only grow, so this ends
                rounds += 1
                if rounds > 32:
                    raise LineageError("a recursive query's lineage does not settle")
                self.partial[key] = result
                result = self._compute_outputs(scope)
        finally:
            self.in_progress.discard(key)
        # a result built on another scope's unfinished value is recomputed next round
        if not any(k != key and k in self.in_progress for k in self.partial_reads[start:]):
            self.memo[key] = result
        return result

    def _compute_outputs(self, scope: Scope) -> list[tuple[str, Contrib]]:
        e = scope.expression
        if isinstance(e, exp.SetOperation):
            branches = list(scope.set_operation_scopes)
            outs = [self.scope_outputs(b) for b in branches]
            width = len(outs[0])
            if any(len(o) != width for o in outs):
                raise LineageError(
                    "the branches of a UNION/INTERSECT/EXCEPT have different numbers of columns"
                )
            merged: list[tuple[str, Contrib]] = []
            for i in range(width):
                c: Contrib = {}
                for o in outs:
                    _add(c, o[i][1])
                merged.append((outs[0][i][0], c))
            return merged
        if isinstance(e, exp.Select):
            res: list[tuple[str, Contrib]] = []
            for sel in e.expressions:
                if isinstance(sel, exp.Identifier):
                    raise LineageError(f"the select item {sel.sql(dialect=self.dialect)} is not traced")
                if isinstance(sel, exp.Star) or (
                    isinstance(sel, exp.Column) and isinstance(sel.this, exp.Star)
                ):
                    raise LineageError("a * in the select list could not be expanded from the catalog")
                res.append((sel.alias_or_name, self.expr(sel, scope)))
            return res
        if isinstance(e, exp.Values):
            alias_names = _alias_columns(e)
            res_v: list[tuple[str, Contrib]] = []
            for i, column in enumerate(_values_columns(e)):
                cv: Contrib = {}
                for value in column.expressions:  # each row's value is copied as it is
                    _add(cv, self.expr(value, scope))
                res_v.append((alias_names[i] if i < len(alias_names) else f"column{i + 1}", cv))
            return res_v
        if isinstance(e, (exp.Lateral,)):
            inner = e.this
            if isinstance(inner, exp.Subquery):
                inner = inner.this
            sub = self.scope_of.get(id(inner))
            if sub is not None:
                return self.scope_outputs(sub)
            c = self.expr(e.this, scope)
            return [(n, dict(c)) for n in _alias_columns(e)] or [("?", c)]
        if isinstance(e, exp.Table) and isinstance(e.this, exp.Func):
            c = {k: False for k in self.expr(e.this, scope)}
            return [(n, dict(c)) for n in _alias_columns(e)] or [(e.alias_or_name, c)]
        if isinstance(e, exp.Unnest):
            c = {k: False for k in self.expr(e, scope)}
            return [(n, dict(c)) for n in _alias_columns(e)] or [(e.alias_or_name, c)]
        raise LineageError(f"a {type(e).__name__} in FROM is not traced")

    def source_outputs(self, scope: Scope, name: str) -> tuple[list[tuple[str, Contrib]], bool] | None:
        """The outputs of the source ``name`` visible from ``scope`` (walking outwards for
        correlated references), and whether it is a base table."""
        s: Scope | None = scope
        while s is not None:
            src = s.sources.get(name)
            if src is not None:
                return self._outputs_of_source(src, s), True
            # lateral/udtf sources are registered on the enclosing scope under their alias
            s = s.parent
        return None

    def _outputs_of_source(self, src: object, scope: Scope) -> list[tuple[str, Contrib]]:
        if isinstance(src, Scope):
            if id(src) not in self.traversed:
                # sqlglot gives a recursive CTE's self-reference a scope of the anchor alone;
                # the CTE's own scope (all branches) is the one to read
                node: exp.Expr | None = src.expression
                while node is not None:
                    real = self.scope_of.get(id(node))
                    if real is not None and real.is_cte:
                        return self.scope_outputs(real)
                    node = node.parent
                raise LineageError("a recursive query's self-reference could not be traced")
            return self.scope_outputs(src)
        if isinstance(src, exp.Table):
            if isinstance(src.this, exp.Func):
                self.check_tvf(src.this)
                c = {k: False for k in self.expr(src.this, scope)}
                names = _alias_columns(src) or [src.alias_or_name]
                return [(n, dict(c)) for n in names]
            sch = src.db
            name = src.name
            found = self.ctx.catalog.columns(sch, name, self.ctx.dialect)
            if found is None:
                raise LineageError(f"the table {sch}.{name} is not in dbward's catalog")
            (rs, rn), cols = found
            self.ctx.tables.add((rs, rn))
            db = self.ctx.pg_db if self.ctx.dialect == "postgres" else rs
            outs: list[tuple[str, Contrib]] = [
                ((c.lower() if self.ctx.dialect == "mysql" else c), {SourceColumn(db, rs, rn, c): True})
                for c in cols
            ]
            for os_, on in self.shadows.get((rs, rn), ()):
                other_cols = set(self.ctx.catalog.tables.get((os_, on), ()))
                for name, c in outs:
                    if name in other_cols:
                        c[SourceColumn(db, os_, on, name)] = True
            return outs
        if isinstance(src, exp.Unnest):
            c = {k: False for k in self.expr(src, scope)}
            return [(n, dict(c)) for n in _alias_columns(src)] or [(src.alias_or_name, c)]
        raise LineageError(f"a {type(src).__name__} source is not traced")

    def column(self, col: exp.Column, scope: Scope) -> Contrib:
        table = col.table
        name = col.name
        if isinstance(col.this, exp.Star):
            # t.* inside a function (to_json(t.*)): every column of t
            return self.whole_row(table, scope, col)
        if not table:
            # a select alias (ORDER BY p), a whole-row reference (row_to_json(u)), or a
            # column of a set operation's result
            sel = scope.expression
            if isinstance(sel, exp.Select):
                for s in sel.expressions:
                    if s.alias_or_name == name and isinstance(s, exp.Alias):
                        return self.expr(s.this, scope)
            if isinstance(sel, exp.SetOperation):
                outs = self.scope_outputs(scope)
                for n, c in outs:
                    if n == name:
                        return c
            found = self._find_source_scope(name, scope)
            if found is not None:
                return self.whole_row(name, scope, col)
            if isinstance(sel, exp.Select) and name.startswith("@"):
                return {}
            raise LineageError(f"the column {col.sql(dialect=self.dialect)} could not be traced to a table")
        got = self.source_outputs(scope, table)
        if got is None:
            raise LineageError(f"the column {col.sql(dialect=self.dialect)} could not be traced to a table")
        outs, _ = got
        if not outs and self.recursed:
            return {}  # a recursive CTE's first round: the fixed point fills this in
        norm = name.lower() if self.ctx.dialect == "mysql" else name
        for n, c in outs:
            if (n.lower() if self.ctx.dialect == "mysql" else n) == norm:
                return c
        if len(outs) == 1 and outs[0][0] in ("?", table):
            return outs[0][1]
        raise LineageError(f"the column {col.sql(dialect=self.dialect)} could not be traced")

    def _find_source_scope(self, name: str, scope: Scope) -> Scope | None:
        s: Scope | None = scope
        while s is not None:
            if name in s.sources:
                return s
            s = s.parent
        return None

    def whole_row(self, table: str, scope: Scope, col: exp.Expr) -> Contrib:
        if not table:
            raise LineageError(f"{col.sql(dialect=self.dialect)} could not be expanded from the catalog")
        got = self.source_outputs(scope, table)
        if got is None:
            raise LineageError(f"{col.sql(dialect=self.dialect)} could not be expanded from the catalog")
        out: Contrib = {}
        for _, c in got[0]:
            _add(out, c, direct=False)
        return out

    def expr(self, node: exp.Expr, scope: Scope) -> Contrib:
        """The sources of an expression's value in ``scope``; collects inference on the way."""
        if isinstance(node, exp.Column):
            return self.column(node, scope)
        if isinstance(node, exp.TableColumn):  # PostgreSQL whole-row reference: row_to_json(u)
            return self.whole_row(node.name, scope, node)
        if isinstance(node, exp.Star):
            raise LineageError("a * could not be expanded from the catalog")
        if isinstance(node, (exp.Literal, exp.Null, exp.Boolean, exp.Placeholder, exp.Parameter)):
            return {}
        if isinstance(node, (exp.Select, exp.SetOperation)):
            sub = self.scope_of.get(id(node))
            if sub is None:
                raise LineageError("a subquery could not be traced")
            out: Contrib = {}
            for _, c in self.scope_outputs(sub):
                _add(out, c)
            return out
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            if name in _FILE_FUNCTIONS:
                raise LineageError(
                    f"the function {node.name} reads files dbward cannot trace", tables_known=False
                )
            if (
                name not in _BUILTIN_FUNCTIONS
                and name not in _PRESERVING_NAMES
                and name not in _KNOWN_PURE
                and name not in _BUILTIN_TVFS
                and name not in _WRITING_FUNCTIONS
                and name != "set_config"
            ):
                raise LineageError(
                    f"the function {node.name} is not built in: it runs code dbward cannot trace",
                    tables_known=False,
                )
            if name in _TIMING_FUNCTIONS:
                # how long the statement takes tells the argument's value
                _add(self.inference, self._children(node, scope, direct=False), direct=False)
                return {}
            if name in _WRITING_FUNCTIONS or name == "set_config":
                srcs = self._children(node, scope, direct=False)
                if srcs:
                    self._write(Write(f"a setting or object through {node.name}()", frozenset(srcs)))
                return srcs
            return self._children(node, scope, direct=name in _PRESERVING_NAMES)
        if isinstance(node, exp.PropertyEQ):
            # MySQL @v := expr: the variable keeps the value for later statements
            srcs = self.expr(node.expression, scope)
            if srcs:
                self._write(Write("a session variable (:=)", frozenset(srcs)))
            return srcs
        if isinstance(node, exp.Count):
            # COUNT(x) does not carry x's value, but which rows count is inference
            arg = node.this
            if arg is not None and not isinstance(arg, exp.Star):
                _add(self.inference, self.expr(arg, scope), direct=False)
            return {}
        if isinstance(node, exp.Window):
            for part in node.args.get("partition_by") or []:
                _add(self.inference, self.expr(part, scope))
            order = node.args.get("order")
            if order is not None:
                _add(self.inference, self.expr(order, scope))
            return self.expr(node.this, scope)
        if isinstance(node, exp.Case):
            # a condition is a predicate on its columns: which branch runs (a branch that
            # raises an error, or sleeps) tells what the value is, whatever the result shows
            out = {}
            if node.this is not None:
                cond = self.expr(node.this, scope)
                _add(out, cond, direct=False)
                _add(self.inference, cond, direct=False)
            for if_ in node.args.get("ifs") or []:
                cond = self.expr(if_.this, scope)
                _add(out, cond, direct=False)
                _add(self.inference, cond, direct=False)
                _add(out, self.expr(if_.args["true"], scope))
            default = node.args.get("default")
            if default is not None:
                _add(out, self.expr(default, scope))
            return out
        if isinstance(node, exp.If):
            out = {}
            cond = self.expr(node.this, scope)
            _add(out, cond, direct=False)
            _add(self.inference, cond, direct=False)
            for k in ("true", "false"):
                v = node.args.get(k)
                if v is not None:
                    _add(out, self.expr(v, scope))
            return out
        if isinstance(node, exp.Nullif):
            out = {}
            _add(out, self.expr(node.this, scope))
            if node.expression is not None:
                _add(out, self.expr(node.expression, scope), direct=False)
            return out
        if isinstance(node, (exp.Ordered,)):
            return self.expr(node.this, scope)
        if isinstance(node, exp.Func) and not isinstance(node, _PRESERVING):
            name = node.key.lower()
            if name in _BUILTIN_TVFS:
                return self._children(node, scope, direct=False)
        return self._children(node, scope, direct=isinstance(node, _PRESERVING))

    def _children(self, node: exp.Expr, scope: Scope, *, direct: bool) -> Contrib:
        out: Contrib = {}
        for k, v in node.args.items():
            if k in ("alias", "over", "partition_by", "order") and isinstance(node, exp.Window):
                continue
            items = v if isinstance(v, list) else [v]
            for it in items:
                if isinstance(it, exp.Expr):
                    if isinstance(it, (exp.DataType, exp.Identifier, exp.TableAlias, exp.Var)):
                        continue
                    # only the first argument of a preserving function keeps the value unchanged
                    d = direct and (
                        k in ("this", "expressions") or isinstance(node, (exp.Coalesce, exp.Paren))
                    )
                    _add(out, self.expr(it, scope), direct=d)
        return out

    def scope_inference(self, scope: Scope) -> None:
        e = scope.expression
        if not isinstance(e, (exp.Select, exp.SetOperation)):
            return
        for key in ("where", "group", "having", "qualify", "order", "connect", "prewhere"):
            part = e.args.get(key)
            if part is not None:
                _add(self.inference, self.expr(part, scope), direct=False)
        distinct = e.args.get("distinct")
        if isinstance(distinct, exp.Distinct) and distinct.args.get("on") is not None:
            _add(self.inference, self.expr(distinct.args["on"], scope), direct=False)
        for join in e.args.get("joins") or []:
            on = join.args.get("on")
            if on is not None:
                _add(self.inference, self.expr(on, scope), direct=False)
            for u in join.args.get("using") or []:
                name = u.name
                for tname in scope.sources:
                    got = self.source_outputs(scope, tname)
                    if got is None:
                        continue
                    for n, c in got[0]:
                        if n == name:
                            _add(self.inference, c, direct=False)
        for lim in ("limit", "offset"):
            part = e.args.get(lim)
            if part is not None and any(True for _ in part.find_all(exp.Column)):
                _add(self.inference, self.expr(part, scope), direct=False)

    # ---------------------------------------------------------------- DML and DDL

    def _target(self, t: exp.Expr | None) -> tuple[tuple[str, str], tuple[str, ...], exp.Table] | None:
        if isinstance(t, exp.Schema):
            t = t.this
        if not isinstance(t, exp.Table):
            return None
        loc = self.resolve_table(t)
        if loc is None:
            return None
        found = self.ctx.catalog.columns(loc[0], loc[1], self.ctx.dialect)
        if found is None:
            return None
        return found[0], found[1], t

    def _target_name(self, t: exp.Expr | None) -> str:
        if isinstance(t, exp.Schema):
            t = t.this
        return f"table {t.sql(dialect=self.dialect)}" if t is not None else "a table"

    def insert(self, tree: exp.Insert) -> list[tuple[str, Contrib]]:
        target_node = tree.this
        src = tree.expression
        tgt = self._target(target_node)
        cols: list[str] = []
        if isinstance(target_node, exp.Schema):
            cols = [c.name for c in target_node.expressions]
        elif tgt is not None:
            cols = list(tgt[1])
        with_ = tree.args.get("with_")
        if isinstance(src, exp.Query):
            src = src.copy()
            if isinstance(with_, exp.With) and not src.args.get("with_"):
                src.set("with_", with_.copy())  # WITH x AS (...) INSERT ... SELECT ... FROM x
            outs = self.query(src)
            for i, (_, c) in enumerate(outs):
                if not c:
                    continue
                tcol = None
                if tgt is not None and i < len(cols):
                    db = self.ctx.pg_db if self.ctx.dialect == "postgres" else tgt[0][0]
                    tcol = SourceColumn(db, tgt[0][0], tgt[0][1], cols[i])
                self._write(Write(self._target_name(target_node), frozenset(c), tcol))
        elif src is not None and any(True for _ in src.find_all(exp.Select)):
            for sub in _outer_queries(src):
                outs = self.query(sub.copy())
                self._write_outputs(self._target_name(target_node), outs)
        # ON DUPLICATE KEY UPDATE / ON CONFLICT DO UPDATE: columns of the target copied around
        conflict = tree.args.get("conflict")
        if conflict is not None and tgt is not None:
            for eq in conflict.find_all(exp.EQ, exp.PropertyEQ):
                srcs = self._target_columns(eq.expression, tgt)
                if srcs:
                    left = eq.this.name if isinstance(eq.this, exp.Column) else ""
                    db = self.ctx.pg_db if self.ctx.dialect == "postgres" else tgt[0][0]
                    self._write(
                        Write(
                            self._target_name(target_node),
                            frozenset(srcs),
                            SourceColumn(db, tgt[0][0], tgt[0][1], left),
                        )
                    )
        returning = tree.args.get("returning")
        if returning is not None:
            if tgt is None:
                raise LineageError(
                    f"RETURNING of {self._target_name(target_node)}: the table is not in the catalog"
                )
            return self._select_over(returning.expressions, tgt[2], None, None)
        return []

    def _target_columns(
        self, node: exp.Expr | None, tgt: tuple[tuple[str, str], tuple[str, ...], exp.Table]
    ) -> set[SourceColumn]:
        out: set[SourceColumn] = set()
        if node is None:
            return out
        names = {(c.lower() if self.ctx.dialect == "mysql" else c): c for c in tgt[1]}
        db = self.ctx.pg_db if self.ctx.dialect == "postgres" else tgt[0][0]
        for col in node.find_all(exp.Column):
            n = col.name.lower() if self.ctx.dialect == "mysql" else col.name
            if n in names:
                out.add(SourceColumn(db, tgt[0][0], tgt[0][1], names[n]))
        for sub in _outer_queries(node):
            for _, c in self.query(sub.copy()):
                out |= set(c)
        return out

    def _select_over(
        self,
        exprs: list[exp.Expr],
        table: exp.Expr,
        extra_from: list[exp.Expr] | None,
        where: exp.Expr | None,
        joins: list[exp.Expr] | None = None,
    ) -> list[tuple[str, Contrib]]:
        sel = exp.Select(expressions=[e.copy() for e in exprs]).from_(table.copy())
        for f in extra_from or []:
            sel = sel.join(f.copy())
        if joins:
            sel.set("joins", [*(sel.args.get("joins") or []), *(j.copy() for j in joins)])
        if where is not None:
            sel = sel.where(where.this.copy() if isinstance(where, exp.Where) else where.copy())
        return self.query(sel)

    def update(self, tree: exp.Update) -> list[tuple[str, Contrib]]:
        target = tree.this
        tgt = self._target(target)
        from_ = tree.args.get("from_") or tree.args.get("from")
        extra = [from_.this] if from_ is not None else []
        joins = list(tree.args.get("joins") or [])
        sets = list(tree.expressions)
        values = [s.expression if isinstance(s, (exp.EQ, exp.PropertyEQ)) else s for s in sets]
        outs = self._select_over(values, target, extra, tree.args.get("where"), joins)
        for s, (_, c) in zip(sets, outs, strict=True):
            if not c:
                continue
            left = s.this if isinstance(s, (exp.EQ, exp.PropertyEQ)) else None
            tcol = None
            if tgt is not None and isinstance(left, exp.Column):
                db = self.ctx.pg_db if self.ctx.dialect == "postgres" else tgt[0][0]
                names = {(x.lower() if self.ctx.dialect == "mysql" else x): x for x in tgt[1]}
                n = left.name.lower() if self.ctx.dialect == "mysql" else left.name
                if n in names:
                    tcol = SourceColumn(db, tgt[0][0], tgt[0][1], names[n])
            self._write(Write(self._target_name(target), frozenset(c), tcol))
        returning = tree.args.get("returning")
        if returning is not None:
            return self._select_over(returning.expressions, target, extra, None, joins)
        return []

    def delete(self, tree: exp.Delete) -> list[tuple[str, Contrib]]:
        target = tree.this
        using = tree.args.get("using")
        extra = list(using) if isinstance(using, list) else ([using] if isinstance(using, exp.Expr) else [])
        joins = list(tree.args.get("joins") or [])
        where = tree.args.get("where")
        if where is not None or joins or extra:
            self._select_over([exp.Literal.number(1)], target, extra, where, joins)
        returning = tree.args.get("returning")
        if returning is not None:
            return self._select_over(returning.expressions, target, extra, None, joins)
        return []

    def create(self, tree: exp.Create) -> None:
        body = tree.expression
        kind = str(tree.args.get("kind") or "").upper()
        if body is None:
            return
        if isinstance(body, exp.Subquery):
            body = body.this
        if not isinstance(body, exp.Query):
            if any(True for _ in body.find_all(exp.Select)):
                raise LineageError(
                    f"CREATE {kind} with a query in its body is not traced", tables_known=False
                )
            return
        materialized = any(
            isinstance(p, exp.MaterializedProperty)
            for p in (tree.args.get("properties") or exp.Properties()).expressions
        )
        if kind == "VIEW" and not materialized:
            # a view stores no data: reading it is traced through its definition
            self.query(body.copy())
            self.inference.clear()
            return
        outs = self.query(body.copy())
        self._write_outputs(
            f"{'materialized view' if materialized else kind.lower()} {tree.this.sql(dialect=self.dialect)}",
            outs,
        )

    def copy(self, tree: exp.Copy) -> list[tuple[str, Contrib]]:
        if tree.args.get("kind"):  # COPY ... FROM
            return []
        src = tree.this
        if isinstance(src, exp.Subquery):
            outs = self.query(src.this.copy())
        elif isinstance(src, exp.Schema):
            cols = [
                exp.column(i.name, quoted=i.quoted) if isinstance(i, exp.Identifier) else i
                for i in src.expressions
            ]
            outs = self._select_over(cols, src.this, None, None)
        elif isinstance(src, exp.Table):
            outs = self._select_over([exp.Star()], src, None, None)
        else:
            raise LineageError("this COPY is not traced")
        files = [f for f in tree.args.get("files") or []]
        to_client = all(
            f.name.upper() in ("STDOUT", "STDIN")
            for f in files
            if isinstance(f, (exp.Identifier, exp.Var, exp.Column, exp.Literal))
        )
        if not to_client or not files:
            self._write_outputs("a file or program on the database server (COPY TO)", outs)
            return []
        return outs

    def set_(self, tree: exp.Set) -> None:
        for sub in _outer_queries(tree):
            outs = self.query(sub.copy())
            self._write_outputs("a session variable (SET)", outs)


_KNOWN_PURE = frozenset(
    {
        "concat_ws",
        "group_concat",
        "string_agg",
        "array_agg",
        "json_agg",
        "jsonb_agg",
        "json_object_agg",
        "jsonb_object_agg",
        "to_json",
        "to_jsonb",
        "row_to_json",
        "json_build_array",
        "jsonb_build_array",
        "array_to_json",
        "json_extract",
        "json_value",
        "json_query",
        "jsonb_extract_path",
        "jsonb_extract_path_text",
        "json_extract_path",
        "json_extract_path_text",
        "translate",
        "reverse",
        "repeat",
        "overlay",
        "position",
        "strpos",
        "left",
        "right",
        "mid",
        "insert",
        "replace",
        "soundex",
        "to_base64",
        "from_base64",
        "aes_encrypt",
        "aes_decrypt",
        "compress",
        "uncompress",
        "quote",
        "quote_literal",
        "quote_ident",
        "quote_nullable",
        "format",
        "elt",
        "make_set",
        "export_set",
        "char",
        "chr",
        "space",
        "weight_string",
        "row",
        "array",
        "convert",
        "convert_from",
        "convert_to",
        "digest",
        "sha256",
        "sha512",
        "regexp_substr",
        "regexp_instr",
        "regexp_like",
        "json_pretty",
        "json_quote",
        "json_compact",
        "json_detailed",
        "json_loose",
        "json_array_append",
        "json_array_insert",
        "json_contains_path",
        "json_overlaps",
        "json_schema_valid",
        "json_storage_size",
        "json_table",
        "jsonb_pretty",
        "jsonb_strip_nulls",
        "jsonb_insert",
        "jsonb_path_query",
        "jsonb_path_query_first",
        "jsonb_path_query_array",
        "jsonb_typeof",
        "json_typeof",
        "json_strip_nulls",
        "array_length",
        "cardinality",
        "array_position",
        "array_positions",
        "array_append",
        "array_prepend",
        "array_cat",
        "array_remove",
        "array_replace",
        "text",
        "bit_length",
        "length",
        "lengthb",
        "coalesce",
        "greatest",
        "least",
        "inet_ntoa",
        "inet6_ntoa",
        "inet6_aton",
        "bit_count",
        "cast",
        "binary",
        "collate",
    }
)


def _norm(node: exp.Expr | None, dialect: Dialect) -> str:
    if node is None:
        return ""
    name: str = node.name
    quoted = isinstance(node, exp.Identifier) and node.quoted
    if dialect == "mysql":
        return name
    return name if quoted else name.lower()


def _is_write_target(t: exp.Table) -> bool:
    parent = t.parent
    if isinstance(parent, exp.Schema):
        parent = parent.parent
    if isinstance(parent, (exp.Insert, exp.Create)) and parent.this is not None:
        return parent.this is t or (isinstance(parent.this, exp.Schema) and parent.this.this is t)
    return bool(isinstance(parent, exp.Into))


def _outer_queries(node: exp.Expr) -> list[exp.Query]:
    """The queries in ``node`` that are not inside another query in ``node``."""
    out: list[exp.Query] = []
    for q in node.find_all(exp.Query):
        p = q.parent
        nested = False
        while p is not None and p is not node:
            if isinstance(p, exp.Query):
                nested = True
                break
            p = p.parent
        if not nested and q is not node:
            out.append(q)
    return out


def _alias_columns(e: exp.Expr) -> list[str]:
    alias = e.args.get("alias")
    if isinstance(alias, exp.TableAlias):
        return [c.name for c in alias.columns]
    return []


def _values_columns(v: exp.Values) -> list[exp.Expr]:
    """A VALUES list as columns: each column is the tuple of that position's values."""
    rows = [r.expressions if isinstance(r, exp.Tuple) else [r] for r in v.expressions]
    if not rows:
        return []
    width = len(rows[0])
    return [exp.Tuple(expressions=[r[i] for r in rows if i < len(r)]) for i in range(width)]


def _column(name: str, c: Contrib) -> OutputColumn:
    return OutputColumn(
        name,
        frozenset(k for k, v in c.items() if v),
        frozenset(k for k, v in c.items() if not v),
    )
