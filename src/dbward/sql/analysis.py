"""SQL analysis: what a statement does and which objects it touches, for the policy.

``analyze(sql, dialect, database=..., search_path=...)`` turns the exact text a client sent
into an :class:`~dbward.sql.model.Analysis`. It reads the text the way the server will:
MySQL executable comments are expanded first (every reading a server could run is analysed
and the results united), statements are split with :mod:`dbward.sql.lexer`, and each
statement is classified by its leading keywords before sqlglot parses it, because sqlglot
turns what it does not know into an opaque ``Command`` (or, worse, reads ``SAVEPOINT a`` as
a column alias). Every node of the parsed tree is walked, so a write inside a CTE or a
subquery is found. Whatever cannot be read with certainty is ``UNKNOWN`` with a reason.

Counterparts: :mod:`dbward.policy.evaluator` consumes the result; :mod:`dbward.sql.lexer`
and :mod:`dbward.sql.fingerprint` are the lexical halves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from operator import attrgetter
from typing import Literal

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect as SqlglotDialect
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from dbward.sql.dialects import sqlglot_dialect
from dbward.sql.fingerprint import fingerprint_hash, fingerprint_tokens
from dbward.sql.lexer import (
    Dialect,
    expand_exec_comments,
    no_backslash_reading,
    quote_structure,
    split_spans,
    strip_leading_comments,
)
from dbward.sql.model import Access, Analysis, ObjectRef, ObjectType, StatementKind

K = StatementKind

CACHE_SIZE = 8192

# Functions that are built into the servers but that sqlglot does not model as its own
# expression classes (those are recognised by class). Calls of anything else count as
# routine calls: a user-defined function can write.
_BUILTIN_FUNCTIONS = frozenset(
    [
        "now",
        "sleep",
        "pg_sleep",
        "version",
        "database",
        "schema",
        "user",
        "current_setting",
        "pg_backend_pid",
        "current_database",
        "current_schemas",
        "session_user",
        "pg_typeof",
        "format_type",
        "obj_description",
        "col_description",
        "pg_get_userbyid",
        "pg_table_is_visible",
        "pg_get_expr",
        "pg_get_constraintdef",
        "pg_get_indexdef",
        "pg_get_viewdef",
        "pg_encoding_to_char",
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "pg_postmaster_start_time",
        "pg_is_in_recovery",
        "inet_server_addr",
        "txid_current_if_assigned",
        "pg_size_pretty",
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_database_size",
        "to_char",
        "to_number",
        "to_date",
        "to_timestamp",
        "date_trunc",
        "date_part",
        "age",
        "array_agg",
        "string_agg",
        "array_to_string",
        "string_to_array",
        "unnest",
        "generate_series",
        "regexp_replace",
        "regexp_matches",
        "split_part",
        "btrim",
        "ltrim",
        "rtrim",
        "lpad",
        "rpad",
        "initcap",
        "md5",
        "sha1",
        "sha2",
        "encode",
        "decode",
        "jsonb_build_object",
        "json_build_object",
        "jsonb_agg",
        "json_agg",
        "jsonb_set",
        "row_number",
        "rank",
        "dense_rank",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "ntile",
        "cume_dist",
        "percent_rank",
        "connection_id",
        "last_insert_id",
        "found_rows",
        "row_count",
        "uuid",
        "uuid_short",
        "current_role",
        "date_format",
        "str_to_date",
        "unix_timestamp",
        "from_unixtime",
        "timestampdiff",
        "timestampadd",
        "datediff",
        "date_add",
        "date_sub",
        "adddate",
        "subdate",
        "curdate",
        "curtime",
        "sysdate",
        "utc_timestamp",
        "utc_date",
        "utc_time",
        "ifnull",
        "nullif",
        "isnull",
        "if",
        "field",
        "find_in_set",
        "instr",
        "locate",
        "substring_index",
        "group_concat",
        "char_length",
        "character_length",
        "octet_length",
        "hex",
        "unhex",
        "inet_aton",
        "inet_ntoa",
        "json_object",
        "json_array",
        "json_unquote",
        "json_contains",
        "json_length",
        "json_keys",
        "json_valid",
        "json_type",
        "json_search",
        "json_merge_patch",
        "json_set",
        "json_insert",
        "json_replace",
        "json_remove",
        "json_arrayagg",
        "json_objectagg",
        "crc32",
        "conv",
        "bin",
        "oct",
        "ascii",
        "ord",
        "charset",
        "collation",
        "coercibility",
        "benchmark",
        "get_lock",
        "release_lock",
        "is_free_lock",
        "is_used_lock",
        "master_pos_wait",
        "format_bytes",
        "format_pico_time",
        "ps_current_thread_id",
    ]
)
# Built-ins that reach files on the server: FILE privilege in MySQL, superuser or
# pg_read_server_files in PostgreSQL.
_FILE_FUNCTIONS = frozenset(
    [
        "load_file",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "lo_import",
        "lo_export",
        "pg_file_write",
    ]
)
# Built-ins that change state: treated like calls of user routines.
_WRITING_FUNCTIONS = frozenset(
    [
        "nextval",
        "setval",
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "dblink",
        "dblink_exec",
        "lo_unlink",
        "lo_create",
        "lo_put",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_advisory_lock",
        "pg_try_advisory_lock",
        "pg_notify",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot",
    ]
)
_BUILTIN_SCHEMAS = frozenset({"pg_catalog", "information_schema", "sys", "performance_schema"})

_FIRST_WORD = re.compile(r"\(|[A-Za-z_]+")
_WORDS = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|\S")


@dataclass(slots=True)
class _Ctx:
    dialect: Dialect
    database: str | None
    search_path: tuple[str, ...]

    @property
    def default_schema(self) -> str | None:
        if self.dialect == "mysql":
            return self.database
        return self.search_path[0] if self.search_path else "public"


@dataclass(slots=True)
class _Result:
    """One statement's findings while they are being gathered."""

    kind: StatementKind
    kinds: set[StatementKind] = field(default_factory=set)
    accesses: set[Access] = field(default_factory=set)
    opaque: set[StatementKind] = field(default_factory=set)
    unfiltered_write: bool = False
    reads_files: bool = False
    writes_files: bool = False
    calls_routines: bool = False
    procedural: bool = False
    locking: bool = False
    reasons: list[str] = field(default_factory=list)
    new_database: str | None = None
    new_search_path: tuple[str, ...] | None = None

    def add(self, kind: StatementKind, obj: ObjectRef | None = None) -> None:
        self.kinds.add(kind)
        if obj is not None:
            self.accesses.add(Access(kind, obj))

    def merge(self, other: _Result) -> None:
        self.kinds |= other.kinds
        self.accesses |= other.accesses
        self.opaque |= other.opaque
        self.unfiltered_write |= other.unfiltered_write
        self.reads_files |= other.reads_files
        self.writes_files |= other.writes_files
        self.calls_routines |= other.calls_routines
        self.procedural |= other.procedural
        self.locking |= other.locking
        self.reasons.extend(r for r in other.reasons if r not in self.reasons)

    def copy(self) -> _Result:
        return _Result(
            self.kind,
            set(self.kinds),
            set(self.accesses),
            set(self.opaque),
            self.unfiltered_write,
            self.reads_files,
            self.writes_files,
            self.calls_routines,
            self.procedural,
            self.locking,
            list(self.reasons),
            self.new_database,
            self.new_search_path,
        )


def _unknown(reason: str) -> _Result:
    r = _Result(K.UNKNOWN)
    r.add(K.UNKNOWN)
    r.reasons.append(reason)
    return r


def _opaque(kind: StatementKind, reason: str | None = None) -> _Result:
    """A statement of a known kind whose objects cannot be read: the policy must require the
    kind everywhere on the connection."""
    r = _Result(kind)
    r.add(kind)
    r.opaque.add(kind)
    if reason:
        r.reasons.append(reason)
    return r


def _simple(kind: StatementKind) -> _Result:
    r = _Result(kind)
    r.add(kind)
    return r


# --------------------------------------------------------------------------------------
# public entry points


def analyze(
    sql: str,
    dialect: Literal["mysql", "postgres"],
    *,
    database: str | None = None,
    search_path: tuple[str, ...] = (),
    server_version: str | None = None,
) -> Analysis:
    """Analyse one client message (one or several statements).

    Cached by exact arguments, and for plain statements also by their shape: OLTP traffic
    sends the same statement with other numbers (``WHERE id = 17``, ``= 18``), and those
    share one analysis (see :func:`plain_shape`)."""
    sp = search_path if type(search_path) is tuple else tuple(search_path)
    exact = (sql, dialect, database, sp, server_version)
    hit = _PLAIN_EXACT.get(exact)
    if hit is not None:  # a plain text seen before: no need to find its shape again
        return hit
    shape = plain_shape(sql)
    if shape is None:
        return _analyze_cached(sql, dialect, database, sp, server_version)
    key = (shape, dialect, database, sp, server_version)
    hit = _BY_SHAPE.get(key)
    if hit is not None:
        a = hit if hit.sql == sql else _with_sql(hit, sql)
    else:
        a = _analyze_cached(sql, dialect, database, sp, server_version)
        if not a.statements:  # one statement: nothing but ``sql`` holds the literal values
            if len(_BY_SHAPE) >= CACHE_SIZE:
                _BY_SHAPE.pop(next(iter(_BY_SHAPE)))  # the oldest entry
            _BY_SHAPE[key] = a
    if len(_PLAIN_EXACT) >= CACHE_SIZE:
        # all at once: popping the oldest of a dict one by one leaves a growing run of
        # holes at its start for every next(iter(...)) to skip
        _PLAIN_EXACT.clear()
    _PLAIN_EXACT[exact] = a
    return a


_ANALYSIS_FIELDS = tuple(f.name for f in fields(Analysis) if f.name != "sql")
_get_fields = attrgetter(*_ANALYSIS_FIELDS)
# the slots' own setters: a frozen dataclass refuses setattr, and dataclasses.replace (which
# runs __init__ with every field as a keyword) costs several times as much on this hot path
_set_fields = tuple(vars(Analysis)[name].__set__ for name in _ANALYSIS_FIELDS)
_set_sql = vars(Analysis)["sql"].__set__


def _with_sql(a: Analysis, sql: str) -> Analysis:
    """``dataclasses.replace(a, sql=sql)``, without the cost of running ``__init__`` again."""
    new: Analysis = object.__new__(Analysis)
    for setter, value in zip(_set_fields, _get_fields(a), strict=True):
        setter(new, value)
    _set_sql(new, sql)
    return new


#: analyses of plain texts by their exact arguments (those of other texts are in
#: :func:`_analyze_cached`'s cache), so that a repeated text skips :func:`plain_shape`
_PLAIN_EXACT: dict[tuple[object, ...], Analysis] = {}
#: analyses of plain statements by their shape (and the other arguments of :func:`analyze`)
_BY_SHAPE: dict[tuple[object, ...], Analysis] = {}
#: a double quote or backtick, a comment, an escape, a dollar-quote or parameter, a
#: placeholder, or NUL: the text is not plain, and only an exact match may reuse an analysis
_NOT_PLAIN = re.compile(r"[\"`\\$#?\x00]|--|/\*")
#: a numeric literal standing alone: not part of a name (``t1``, ``é1``, MySQL's ``1abc``), a
#: qualified name (``t.5``), a variable (``@1``) or a bind parameter (``:1``); only ASCII
#: digits are numbers, while any letter (``\w`` is Unicode) makes digits part of a name
_PLAIN_NUMBER = re.compile(r"(?<![\w.@:])[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![\w.])")
#: in a plain text (no other quotes, no comments, no backslashes) every single quote opens a
#: string literal, which ends at the next single quote not doubled
_PLAIN_STRING = re.compile(r"'(?:[^']|'')*'")
#: statements whose string literals are only ever values to the analysis (other statements
#: read some of theirs: ``SET search_path = 'a'``, ``PREPARE s FROM '...'``, ``COPY ... 'f'``)
_VALUE_STATEMENT = re.compile(r"\s*(?:SELECT|WITH|INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
#: the tokens of a plain text's code that say what a string literal is to the statement
_CONTEXT_TOKEN = re.compile(r"[(),;]|@*[\w.:$]+|<=>|->>|->|@>|<@|<>|!=|<=|>=|::|\|\||[=<>~!&|^%*/+-]")
_COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">=", "<=>", "LIKE", "ILIKE", "BETWEEN"})
_LIST_WORDS = frozenset({"IN", "VALUES"})
_VALUE = "\x01"  # a string literal that is a value, in the shape and as a context token
_CAST_AFTER = re.compile(r"\s*::")


def plain_shape(sql: str) -> str | None:
    """The text with each literal value replaced by a marker, when the text is plain (no
    comments, escapes, parameters, or quotes other than single ones); else None.

    The analysis of a statement never depends on its literal values: which kinds it has,
    which objects it touches and its fingerprint are the same for ``WHERE id = 1`` and
    ``= 2``, and for ``WHERE name = 'a'`` and ``= 'b'``. Numbers are always values. A string
    is one only in a SELECT, WITH, INSERT, UPDATE, DELETE or REPLACE where it follows a
    comparison, LIKE or BETWEEN, or is an item of an ``IN (...)`` or ``VALUES (...)`` list,
    and is not cast (``'t'::regclass`` names a table); a function's argument
    (``nextval('s')``) and every other string stay in the shape verbatim."""
    if _NOT_PLAIN.search(sql):
        return None
    if "'" not in sql:
        return _PLAIN_NUMBER.sub("\x00", sql)
    values = _VALUE_STATEMENT.match(sql) is not None
    out: list[str] = []
    # the context: the last three code tokens (words in upper case, a value as _VALUE),
    # whether each open parenthesis is a value list, and whether the last closed one was
    last = ["", "", ""]
    lists: list[bool] = []
    closed_list = False
    pos = 0
    for m in _PLAIN_STRING.finditer(sql):
        gap = sql[pos : m.start()]
        if "'" in gap:
            return None  # an unclosed quote: let the analysis say so
        out.append(_PLAIN_NUMBER.sub("\x00", gap))
        if values:
            for t in _CONTEXT_TOKEN.findall(gap):
                if t == "(":
                    lists.append(
                        last[2] in _LIST_WORDS or (last[2] == "," and last[1] == ")" and closed_list)
                    )
                elif t == ")":
                    closed_list = lists.pop() if lists else False
                elif t == ";":
                    values = False  # a second statement: its strings stay verbatim
                    break
                elif t[0].isdigit():
                    t = _VALUE
                else:
                    t = t.upper()
                last[0], last[1], last[2] = last[1], last[2], t
        pos = m.end()
        prev = last[2]
        value = values and (
            prev in _COMPARISONS
            or (prev in ("(", ",") and bool(lists) and lists[-1])
            or (prev == "AND" and last[1] == _VALUE and last[0] == "BETWEEN")
        )
        if value and _CAST_AFTER.match(sql, pos) is not None:
            value = False
        if value:
            out.append(_VALUE)
            last[0], last[1], last[2] = last[1], prev, _VALUE
        else:
            out.append(m.group())
            last[0], last[1], last[2] = last[1], prev, "'"
    rest = sql[pos:]
    if "'" in rest:
        return None
    out.append(_PLAIN_NUMBER.sub("\x00", rest))
    return "".join(out)


def cache_info() -> str:
    return str(_analyze_cached.cache_info())


def cache_clear() -> None:
    _analyze_cached.cache_clear()
    _SHAPES.clear()
    _BY_SHAPE.clear()
    _PLAIN_EXACT.clear()


@lru_cache(maxsize=CACHE_SIZE)
def _analyze_cached(
    sql: str,
    dialect: Dialect,
    database: str | None,
    search_path: tuple[str, ...],
    server_version: str | None,
) -> Analysis:
    if dialect not in ("mysql", "postgres"):
        raise ValueError(f"unsupported SQL dialect {dialect!r}")
    try:
        result = _analyze_text(sql, dialect, database, search_path, server_version)
    except RecursionError:
        result = _finish_one(sql, dialect, _unknown("the statement is nested too deeply to analyse"), [])
    return result.with_signature()


def _readings(sql: str, dialect: Dialect, server_version: str | None) -> tuple[list[str], list[str]]:
    """Every text a server could run for ``sql``, the first being the likeliest; plus problems."""
    if dialect != "mysql":
        return [sql], []
    problems: list[str] = []
    texts: list[str] = []
    for exp_ in expand_exec_comments(sql, server_version=server_version):
        if exp_.problem:
            problems.append(exp_.problem)
        texts.append(exp_.text)
        alt = no_backslash_reading(exp_.text)
        if alt is not None:
            texts.append(alt)
    return texts, problems


def _analyze_text(
    sql: str, dialect: Dialect, database: str | None, search_path: tuple[str, ...], server_version: str | None
) -> Analysis:
    texts, problems = _readings(sql, dialect, server_version)
    primary: list[Analysis] = []
    extra = _Result(K.UNKNOWN)
    for n, text in enumerate(texts):
        ctx = _Ctx(dialect, database, search_path)
        for span in split_spans(text, dialect):
            if not span.has_code:
                continue
            piece = text[span.start : span.end]
            res, tokens = _analyze_statement(piece, ctx)
            if n == 0:
                primary.append(_finish_one(piece.strip(), dialect, res, tokens))
            else:
                extra.merge(res)
    if not primary:
        primary.append(_finish_one(sql, dialect, _unknown("the text holds no statement"), []))
    if problems:
        bad = _unknown(f"the text cannot be read with certainty: {problems[0]}")
        extra.merge(bad)
    if len(primary) == 1 and not extra.kinds:
        a = primary[0]
        return replace(a, sql=sql) if a.sql != sql else a
    return _combine(sql, dialect, primary, extra)


def _combine(sql: str, dialect: Dialect, parts: list[Analysis], extra: _Result) -> Analysis:
    kinds: set[StatementKind] = set(extra.kinds)
    accesses: set[Access] = set(extra.accesses)
    opaque: set[StatementKind] = set(extra.opaque)
    reasons: list[str] = []
    for p in parts:
        kinds |= p.kinds
        accesses.update(p.accesses)
        opaque |= p.opaque_kinds
        reasons.extend(r for r in p.reasons if r not in reasons)
    reasons.extend(r for r in extra.reasons if r not in reasons)
    if len(parts) > 1:
        extra_note = "the text holds several statements"
        reasons.append(f"{extra_note} ({len(parts)})")
    fp = "; ".join(p.fingerprint for p in parts)
    kind = K.UNKNOWN if K.UNKNOWN in kinds else parts[0].kind
    return Analysis(
        sql=sql,
        dialect=dialect,
        kind=kind,
        kinds=frozenset(kinds),
        accesses=tuple(sorted(accesses)),
        opaque_kinds=frozenset(opaque),
        unfiltered_write=extra.unfiltered_write or any(p.unfiltered_write for p in parts),
        reads_files=extra.reads_files or any(p.reads_files for p in parts),
        writes_files=extra.writes_files or any(p.writes_files for p in parts),
        calls_routines=extra.calls_routines or any(p.calls_routines for p in parts),
        procedural=extra.procedural or any(p.procedural for p in parts),
        locking=extra.locking or any(p.locking for p in parts),
        fingerprint=fp,
        fingerprint_hash=fingerprint_hash(fp),
        reasons=tuple(reasons),
        statements=tuple(parts) if len(parts) > 1 else (),
        new_database=next((p.new_database for p in reversed(parts) if p.new_database), None),
        new_search_path=next((p.new_search_path for p in reversed(parts) if p.new_search_path), None),
    )


def _finish_one(sql: str, dialect: str, r: _Result, tokens: list[Token]) -> Analysis:
    fp = fingerprint_tokens(tokens) if tokens else " ".join(sql.split())
    if r.reads_files or r.writes_files:
        r.kinds.add(K.FILE)
    if r.procedural:
        r.kinds.add(K.PROCEDURAL)
    kind = K.UNKNOWN if K.UNKNOWN in r.kinds else r.kind
    r.kinds.add(kind)
    return Analysis(
        sql=sql,
        dialect=dialect,
        kind=kind,
        kinds=frozenset(r.kinds),
        accesses=tuple(sorted(r.accesses)),
        opaque_kinds=frozenset(r.opaque),
        unfiltered_write=r.unfiltered_write,
        reads_files=r.reads_files,
        writes_files=r.writes_files,
        calls_routines=r.calls_routines,
        procedural=r.procedural,
        locking=r.locking,
        fingerprint=fp,
        fingerprint_hash=fingerprint_hash(fp),
        reasons=tuple(r.reasons),
        new_database=r.new_database,
        new_search_path=r.new_search_path,
    )


# --------------------------------------------------------------------------------------
# one statement


def _sg(dialect: Dialect) -> SqlglotDialect:
    return sqlglot_dialect(dialect)


def _tokenize(text: str, dialect: Dialect) -> list[Token] | None:
    try:
        return list(_sg(dialect).tokenize(text))
    except SqlglotError:
        return None


def _parse_tokens(tokens: list[Token], text: str, dialect: Dialect) -> exp.Expr | None:
    # error_message_context=0 keeps SQL text out of sqlglot's log lines and error messages
    parsed = _sg(dialect).parser(error_message_context=0).parse(tokens, text)
    stmts = [p for p in parsed if p is not None]
    if len(stmts) != 1:
        return None
    return stmts[0]


def _words(text: str, limit: int = 6) -> list[str]:
    out: list[str] = []
    for m in _WORDS.finditer(text):
        out.append(m.group().upper())
        if len(out) >= limit:
            break
    return out


_TRANSACTION_WORDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END", "ABORT", "XA"})
_ADMIN_WORDS = frozenset(
    {
        "KILL",
        "FLUSH",
        "SHUTDOWN",
        "INSTALL",
        "UNINSTALL",
        "CHECKPOINT",
        "PURGE",
        "CHANGE",
        "STOP",
        "CACHE",
        "BINLOG",
        "REASSIGN",
        "SECURITY",
        "IMPORT",
        "RESTART",
        "CLONE",
    }
)
_MAINTENANCE_WORDS = frozenset(
    {"VACUUM", "OPTIMIZE", "REPAIR", "CHECK", "CHECKSUM", "REINDEX", "CLUSTER", "REFRESH"}
)
_SESSION_WORDS = frozenset({"LISTEN", "UNLISTEN", "DISCARD", "CLOSE", "FETCH", "MOVE", "UNLOCK"})
_QUERY_WORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "(", "INSERT", "UPDATE", "DELETE", "MERGE"})
_ADMIN_OBJECTS = frozenset(
    {
        "USER",
        "ROLE",
        "GROUP",
        "EXTENSION",
        "SERVER",
        "TABLESPACE",
        "SUBSCRIPTION",
        "PUBLICATION",
        "LANGUAGE",
        "PLUGIN",
        "LOGFILE",
        "RESOURCE",
        "SPATIAL",
        "EVENT",  # MySQL scheduled events run later, as their definer
        "FOREIGN",
        "ACCESS",
        "CAST",
        "CONVERSION",
        "TRANSFORM",
        "OPERATOR",
    }
)


def _analyze_statement(text: str, ctx: _Ctx) -> tuple[_Result, list[Token]]:
    body = strip_leading_comments(text, ctx.dialect)
    tokens = _tokenize(text, ctx.dialect)
    if tokens is None:
        return _unknown("the statement cannot be tokenized (an unclosed quote or comment?)"), []
    words = _words(body)
    if not words:
        return _unknown("the statement is empty"), tokens
    fp_tokens, check_text, check_tokens = _command_tokens(tokens, text, ctx.dialect)
    if not _tokens_cover_code(check_text, check_tokens, ctx.dialect):
        return (
            _unknown("part of the statement is code to the server but a comment or literal to the analyser"),
            fp_tokens,
        )
    try:
        result = _dispatch(body, words, tokens, ctx)
    except (SqlglotError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # sqlglot raises more than its own error family on some garbage (a TypeError from
        # its parser was seen); whatever it raises, the statement is unknown and refused
        result = _unknown(f"the statement could not be parsed ({type(exc).__name__})")
    return result, fp_tokens


_UNCOVERED = re.compile(rb"\x00+")


def _tokens_cover_code(text: str, tokens: list[Token], dialect: Dialect) -> bool:
    """Whether sqlglot's tokens cover every character that the server reads as code.

    dbward's own scanner (:mod:`dbward.sql.lexer`) follows each server's lexical rules; the
    parser's tokenizer may differ in a corner (a comment form, an escape). Code that the
    tokenizer skipped would be invisible to the analysis, so such a statement is UNKNOWN.
    """
    covered = bytearray(len(text))
    for t in tokens:
        covered[t.start : t.end + 1] = b"\x01" * (t.end + 1 - t.start)
    quoted, _ = quote_structure(text, dialect)
    for a, b in quoted:
        covered[a:b] = b"\x01" * (b - a)
    return all(not text[m.start() : m.end()].strip() for m in _UNCOVERED.finditer(covered))


def _command_tokens(tokens: list[Token], text: str, dialect: Dialect) -> tuple[list[Token], str, list[Token]]:
    """Tokens for the fingerprint, and the text and tokens to check coverage on.

    sqlglot reads everything after a "command" keyword (CALL, REPLACE, EXPLAIN, DO, ...) as one
    string; that remainder is tokenized again so that its literals become placeholders and its
    comments are checked like any other.
    """
    if len(tokens) == 2 and tokens[1].token_type is TokenType.STRING:
        rest_text = text[tokens[0].end + 1 :]
        stripped = rest_text.lstrip()
        if stripped and stripped[0] not in "'\"$":
            rest = _tokenize(rest_text, dialect)
            if rest:
                return [tokens[0], *rest], rest_text, rest
        return tokens, "", []
    return tokens, text, tokens


def _dispatch(body: str, words: list[str], tokens: list[Token], ctx: _Ctx) -> _Result:
    w0 = words[0]
    w1 = words[1] if len(words) > 1 else ""
    my = ctx.dialect == "mysql"
    if w0 in _QUERY_WORDS:
        return _parsed(body, ctx, tokens)
    if w0 == "REPLACE" and my:
        return _replace(body, ctx)
    if w0 in ("CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "COMMENT"):
        return _ddl(body, words, ctx, tokens)
    if w0 == "GRANT":
        return _opaque(K.GRANT)
    if w0 == "REVOKE":
        return _opaque(K.REVOKE)
    if w0 in _TRANSACTION_WORDS:
        if w0 == "BEGIN" and w1 == "NOT":  # MariaDB compound statement BEGIN NOT ATOMIC
            r = _opaque(K.PROCEDURAL, "BEGIN NOT ATOMIC runs a compound block the analyser cannot see into")
            r.procedural = True
            return r
        return _simple(K.TRANSACTION)
    if w0 == "START":
        return _simple(K.TRANSACTION) if w1 == "TRANSACTION" else _opaque(K.ADMIN)
    if w0 == "SET":
        return _set(body, words, ctx, tokens)
    if w0 == "RESET":
        if my:
            return _opaque(K.ADMIN)
        if w1 in ("ROLE", "SESSION"):
            return _simple(K.SET_ROLE)
        return _simple(K.SET)
    if w0 in ("SHOW", "HELP"):
        return _simple(K.SHOW)
    if w0 in ("DESCRIBE", "DESC") and my:
        if w1 in (
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "REPLACE",
            "WITH",
            "TABLE",
            "FORMAT",
            "ANALYZE",
            "EXTENDED",
            "PARTITIONS",
            "FOR",
            "(",
        ):
            return _explain(body, ctx)
        return _simple(K.SHOW)
    if w0 == "EXPLAIN":
        return _explain(body, ctx)
    if w0 in ("ANALYZE", "ANALYSE"):
        rest = _after_words(body, 1)
        rw = _words(rest, 3)
        if my and rw and rw[0] == "FORMAT":
            rest = re.sub(r"(?is)^\s*FORMAT\s*=\s*\w+", "", rest)
            rw = _words(rest, 3)
        if my and rw and rw[0] in ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "("):
            inner, _ = _analyze_statement(rest, ctx)  # MariaDB ANALYZE stmt runs stmt
            inner.kinds.add(K.EXPLAIN)
            inner.reasons.append("ANALYZE runs the statement it analyses")
            return inner
        return _opaque(K.MAINTENANCE)
    if w0 == "USE" and my:
        return _use(body, ctx)
    if w0 == "CALL":
        return _call(body, ctx)
    if w0 == "PREPARE":
        return _prepare(body, words, ctx, tokens)
    if w0 in ("EXECUTE", "DEALLOCATE"):
        return _simple(K.EXECUTE)
    if w0 == "COPY" and not my:
        return _copy(body, ctx, tokens)
    if w0 == "LOAD":
        if my and w1 in ("DATA", "XML"):
            return _load_data(body, ctx)
        return _opaque(K.ADMIN)
    if w0 == "DO":
        if my:  # MySQL DO evaluates expressions and discards the result
            r = _parsed("SELECT" + _after_words(body, 1), ctx, None)
            return r
        r = _opaque(K.PROCEDURAL, "DO runs a procedural block the analyser cannot see into")
        r.procedural = True
        return r
    if w0 == "LOCK":
        return _lock(body, ctx)
    if w0 in _MAINTENANCE_WORDS:
        return _opaque(K.MAINTENANCE)
    if w0 in _SESSION_WORDS:
        return _simple(K.SESSION)
    if w0 == "DECLARE" and not my:
        m = re.search(r"(?is)\bCURSOR\b.*?\bFOR\b", body)
        if m is None:
            return _unknown("DECLARE without CURSOR ... FOR is not understood")
        return _analyze_statement(body[m.end() :], ctx)[0]
    if w0 == "NOTIFY" and not my:
        return _simple(K.NOTIFY)
    if w0 in _ADMIN_WORDS:
        return _opaque(K.ADMIN)
    return _unknown(f"statements beginning with {w0} are not recognised")


def _after_words(body: str, n: int) -> str:
    """``body`` after its first ``n`` words."""
    pos = 0
    for _ in range(n):
        m = _WORDS.search(body, pos)
        if m is None:
            return ""
        pos = m.end()
    return body[pos:]


# --------------------------------------------------------------------------------------
# parsed statements: walk the whole tree


#: Parsed query results by their token shape (see :func:`_shape`): statements that differ only
#: in numeric literals (``WHERE id = 17`` / ``= 18``, as OLTP traffic does) parse once.
_SHAPES: dict[tuple[object, ...], _Result] = {}
_VERBATIM = frozenset(
    {
        TokenType.VAR,
        TokenType.IDENTIFIER,
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.PARAMETER,
        TokenType.PLACEHOLDER,
    }
)


def _shape(tokens: list[Token], ctx: _Ctx) -> tuple[object, ...]:
    """The cache key of a query: every token's type and text, except that numbers are ``?``.

    Numbers never decide what the analysis finds (kinds, objects, flags); strings can (a
    sequence name in ``nextval('s')``, a file name), so they stay in the key verbatim, and so
    do names; keywords and operators are compared in upper case."""
    key: list[object] = [ctx.dialect, ctx.database, ctx.search_path]
    for t in tokens:
        tt = t.token_type
        if tt is TokenType.NUMBER:
            key.append("?")
        elif tt in _VERBATIM:
            key.append((tt, t.text))
        else:
            key.append(t.text.upper())
    return tuple(key)


def _parsed(text: str, ctx: _Ctx, tokens: list[Token] | None) -> _Result:
    if tokens is None:
        tokens = _tokenize(text, ctx.dialect)
        if tokens is None:
            return _unknown("the statement cannot be tokenized (an unclosed quote or comment?)")
    key = _shape(tokens, ctx)
    hit = _SHAPES.get(key)
    if hit is not None:
        return hit.copy()
    result = _parse_and_walk(text, ctx, tokens)
    if len(_SHAPES) >= CACHE_SIZE:
        _SHAPES.pop(next(iter(_SHAPES)))  # the oldest entry
    _SHAPES[key] = result.copy()
    return result


def _parse_and_walk(text: str, ctx: _Ctx, tokens: list[Token]) -> _Result:
    if ctx.dialect == "mysql":
        outfile = _strip_into_outfile(tokens, text)
        if outfile is not None:
            stripped, kind_word = outfile
            r = _parsed(stripped, ctx, None)
            r.writes_files = True
            r.reasons.append(f"INTO {kind_word} writes a file on the database server")
            return r
    tree = _parse_tokens(tokens, text, ctx.dialect)
    if tree is None:
        return _unknown("the statement could not be parsed")
    return _walk(tree, ctx)


def _strip_into_outfile(tokens: list[Token], text: str) -> tuple[str, str] | None:
    for i, t in enumerate(tokens[:-2]):
        if t.token_type is TokenType.INTO:
            nxt = tokens[i + 1].text.upper()
            if nxt in ("OUTFILE", "DUMPFILE"):
                # cut INTO OUTFILE 'file' and its export options up to FROM, or to the end
                end = len(text)
                for t2 in tokens[i + 2 :]:
                    if t2.token_type in (TokenType.FROM, TokenType.FOR, TokenType.LOCK):
                        end = t2.start
                        break
                return text[: t.start] + " " + text[end:], nxt
    return None


_TOP_KINDS: dict[type[exp.Expr], StatementKind] = {
    exp.Insert: K.INSERT,
    exp.Update: K.UPDATE,
    exp.Delete: K.DELETE,
    exp.Merge: K.MERGE,
    exp.Create: K.CREATE,
    exp.Drop: K.DROP,
    exp.Alter: K.ALTER,
    exp.TruncateTable: K.TRUNCATE,
    exp.Copy: K.COPY_FROM,
    exp.Comment: K.ALTER,
    exp.Set: K.SET,
    exp.Use: K.USE,
}


def _walk(tree: exp.Expr, ctx: _Ctx) -> _Result:
    if isinstance(tree, exp.Command):
        return _unknown(f"the statement is not understood by the analyser ({str(tree.this).upper()})")
    if isinstance(tree, (exp.Query, exp.Values)):
        r = _Result(K.SELECT)
        r.add(K.SELECT)
    else:
        top = next((k for t, k in _TOP_KINDS.items() if isinstance(tree, t)), None)
        if top is None:
            return _unknown(f"the statement ({type(tree).__name__}) is not understood by the analyser")
        r = _Result(top)
    targets: dict[int, StatementKind | None] = {}
    for node in tree.walk():
        if isinstance(node, exp.Command):
            return _unknown("part of the statement is not understood by the analyser")
        if isinstance(node, exp.Insert):
            kind = K.UPSERT if node.args.get("conflict") else K.INSERT
            if node is tree:
                r.kind = kind
            r.kinds.add(kind)
            _target(node.this, kind, targets)
        elif isinstance(node, exp.Update):
            r.kinds.add(K.UPDATE)
            if not node.args.get("where"):
                r.unfiltered_write = True
            _update_targets(node, targets)
        elif isinstance(node, exp.Delete):
            r.kinds.add(K.DELETE)
            if not node.args.get("where"):
                r.unfiltered_write = True
            _delete_targets(node, targets)
        elif isinstance(node, exp.Merge):
            r.kinds.add(K.MERGE)
            _target(node.this, K.MERGE, targets)
        elif isinstance(node, exp.Create):
            r.kinds.add(K.CREATE)
            this = node.this
            kind_word = str(node.args.get("kind") or "").upper()
            if kind_word in ("DATABASE", "SCHEMA"):
                if isinstance(this, exp.Table):
                    targets[id(this)] = None
                r.accesses.add(Access(K.CREATE, _database_ref(this, ctx)))
            elif kind_word in ("TABLE", "VIEW", "INDEX") or "VIEW" in kind_word:
                if isinstance(this, exp.Index):
                    _target(this.args.get("table"), K.CREATE, targets)
                elif isinstance(this, (exp.Table, exp.Schema)):
                    _target(this, K.CREATE, targets)
                else:
                    r.opaque.add(K.CREATE)
            else:
                r.opaque.add(K.CREATE)
        elif isinstance(node, exp.Drop):
            r.kinds.add(K.DROP)
            kind_word = str(node.args.get("kind") or "").upper()
            dropped = node.args.get("tables") or [node.this]
            if kind_word in ("TABLE", "VIEW") or "VIEW" in kind_word:
                for t in dropped:
                    _target(t, K.DROP, targets)
            elif kind_word in ("DATABASE", "SCHEMA"):
                for t in dropped:
                    if isinstance(t, exp.Table):
                        targets[id(t)] = None
                    r.accesses.add(Access(K.DROP, _database_ref(t, ctx)))
            else:
                for t in dropped:
                    if isinstance(t, exp.Table):
                        targets[id(t)] = None
                r.opaque.add(K.DROP)
        elif isinstance(node, exp.Alter):
            r.kinds.add(K.ALTER)
            kind_word = str(node.args.get("kind") or "").upper()
            if kind_word in ("TABLE", "VIEW", "") and isinstance(node.this, exp.Table):
                _target(node.this, K.ALTER, targets)
                for action in node.args.get("actions") or []:
                    if isinstance(action, exp.AlterRename):
                        _target(action.this, K.ALTER, targets)
            else:
                r.opaque.add(K.ALTER)
        elif isinstance(node, exp.TruncateTable):
            r.kinds.add(K.TRUNCATE)
            r.unfiltered_write = True
            if node.args.get("is_database"):
                r.opaque.add(K.TRUNCATE)
            for t in node.expressions:
                _target(t, K.TRUNCATE, targets)
        elif isinstance(node, exp.Comment):
            r.kinds.add(K.ALTER)
            if isinstance(node.this, exp.Table):
                _target(node.this, K.ALTER, targets)
            else:
                r.opaque.add(K.ALTER)
        elif isinstance(node, exp.Copy):
            _copy_node(node, r, targets)
        elif isinstance(node, exp.Select):
            into = node.args.get("into")
            if isinstance(into, exp.Into) and isinstance(into.this, exp.Table):
                r.kinds.add(K.CREATE)  # SELECT ... INTO new_table (PostgreSQL)
                _target(into.this, K.CREATE, targets)
            if node.args.get("locks"):
                r.kinds.add(K.LOCK)
                r.locking = True
                for t in _own_tables(node):
                    targets.setdefault(id(t), K.LOCK)
                    r.accesses.add(Access(K.SELECT, _table_ref(t, ctx)))
        elif isinstance(node, exp.Use):
            r.kinds.add(K.USE)
        elif isinstance(node, exp.Func):
            _function(node, r, ctx)
    for node in tree.find_all(exp.Table):
        if id(node) in targets:
            target_kind = targets[id(node)]
            if target_kind is None:
                continue
        else:
            if not node.name or _is_cte_reference(node):
                continue
            target_kind = K.SELECT
        r.add(target_kind, _table_ref(node, ctx))
    return r


def _target(node: exp.Expr | None, kind: StatementKind, targets: dict[int, StatementKind | None]) -> None:
    if isinstance(node, exp.Schema):
        node = node.this
    if isinstance(node, exp.Table):
        targets[id(node)] = kind


def _own_tables(select: exp.Select) -> Iterable[exp.Table]:
    """Tables in a SELECT's FROM and JOINs (not in its subqueries)."""
    from_ = select.args.get("from_")
    if from_ is not None and isinstance(from_.this, exp.Table):
        yield from_.this
    for j in select.args.get("joins") or []:
        if isinstance(j.this, exp.Table):
            yield j.this


def _alias_map(root: exp.Expr) -> dict[str, exp.Table]:
    out: dict[str, exp.Table] = {}
    tables = [root] if isinstance(root, exp.Table) else []
    tables.extend(j.this for j in root.args.get("joins") or [] if isinstance(j.this, exp.Table))
    for t in tables:
        out[t.name.lower()] = t
        if t.alias:
            out[t.alias.lower()] = t
    return out


def _update_targets(node: exp.Update, targets: dict[int, StatementKind | None]) -> None:
    this = node.this
    if not isinstance(this, exp.Table):
        return
    joins = this.args.get("joins") or []
    if not joins:
        targets[id(this)] = K.UPDATE
        return
    # MySQL multi-table UPDATE: the tables named by the SET columns are written; an
    # unqualified column could belong to any of them (fail closed: all).
    aliases = _alias_map(this)
    written: set[int] = set()
    for assignment in node.expressions:
        col = assignment.this if isinstance(assignment, exp.EQ) else None
        qual = col.table.lower() if isinstance(col, exp.Column) and col.table else None
        if qual and qual in aliases:
            written.add(id(aliases[qual]))
        else:
            written = {id(t) for t in aliases.values()}
            break
    for t in aliases.values():
        if id(t) in written:
            targets[id(t)] = K.UPDATE


def _delete_targets(node: exp.Delete, targets: dict[int, StatementKind | None]) -> None:
    this = node.this
    named = node.args.get("tables")
    if not named:
        _target(this, K.DELETE, targets)
        return
    # MySQL multi-table DELETE t1, t2 FROM t1 JOIN t2 ...: names may be aliases
    aliases = _alias_map(this) if isinstance(this, exp.Table) else {}
    for t in node.args.get("using") or []:
        if isinstance(t, exp.Table):
            aliases.update(_alias_map(t))
    for n in named:
        if not isinstance(n, exp.Table):
            continue
        real = aliases.get(n.name.lower()) if not n.db else None
        if real is not None:
            targets[id(real)] = K.DELETE
            if real is not n:
                targets[id(n)] = None  # the alias named after DELETE is not an object
        else:
            targets[id(n)] = K.DELETE


def _copy_node(node: exp.Copy, r: _Result, targets: dict[int, StatementKind | None]) -> None:
    from_ = bool(node.args.get("kind"))
    kind = K.COPY_FROM if from_ else K.COPY_TO
    r.kind = kind
    r.kinds.discard(K.COPY_FROM)
    r.kinds.add(kind)
    if from_:
        _target(node.this, K.COPY_FROM, targets)
    files = node.args.get("files") or []
    for f in files:
        name = f.name.upper() if isinstance(f, exp.Identifier) else ""
        if name in ("STDIN", "STDOUT"):
            continue
        if from_:
            r.reads_files = True
        else:
            r.writes_files = True
        r.reasons.append("COPY with a file name or PROGRAM reaches the database server's files")


def _is_cte_reference(table: exp.Table) -> bool:
    if table.db or table.catalog:
        return False
    name = table.name.lower()
    child: exp.Expr = table
    parent = table.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            # we are inside a CTE's body: earlier CTEs are visible, itself only if RECURSIVE
            if isinstance(child, exp.CTE):
                idx = next(
                    (i for i, c in enumerate(parent.expressions) if c is child), len(parent.expressions)
                )
                visible = (
                    parent.expressions[: idx + 1]
                    if parent.args.get("recursive")
                    else parent.expressions[:idx]
                )
                if any(c.alias.lower() == name for c in visible):
                    return True
                # skip the owning query's WITH (it was just checked with the right visibility)
                owner = parent.parent
                if owner is None:
                    return False
                child, parent = owner, owner.parent
                continue
        else:
            w = parent.args.get("with_")
            if (
                isinstance(w, exp.With)
                and child is not w
                and any(c.alias.lower() == name for c in w.expressions)
            ):
                return True
        child, parent = parent, parent.parent
    return False


def _ident(node: exp.Expr | None) -> str | None:
    if node is None:
        return None
    name: str = node.name
    return name or None


def _fold(name: str | None, quoted: bool, ctx: _Ctx) -> str | None:
    if name is None:
        return None
    return name if quoted or ctx.dialect == "mysql" else name.lower()


def _table_ref(t: exp.Table, ctx: _Ctx) -> ObjectRef:
    this = t.this
    name = _fold(t.name, bool(isinstance(this, exp.Identifier) and this.quoted), ctx) or ""
    db_node = t.args.get("db")
    cat_node = t.args.get("catalog")
    db = _fold(_ident(db_node), bool(isinstance(db_node, exp.Identifier) and db_node.quoted), ctx)
    cat = _fold(_ident(cat_node), bool(isinstance(cat_node, exp.Identifier) and cat_node.quoted), ctx)
    if ctx.dialect == "mysql":
        database = db or ctx.database
        return ObjectRef(ObjectType.TABLE, database, database, name)
    return ObjectRef(ObjectType.TABLE, cat or ctx.database, db or ctx.default_schema, name)


def _routine_ref(node: exp.Expr | None, ctx: _Ctx) -> ObjectRef:
    if isinstance(node, exp.UserDefinedFunction):
        node = node.this
    if isinstance(node, exp.Table):
        ref = _table_ref(node, ctx)
        return ObjectRef(ObjectType.ROUTINE, ref.database, ref.schema, ref.name)
    name = (node.name if node is not None else "") or "?"
    schema = ctx.default_schema
    return ObjectRef(ObjectType.ROUTINE, ctx.database if ctx.dialect != "mysql" else schema, schema, name)


def _database_ref(node: exp.Expr | None, ctx: _Ctx) -> ObjectRef:
    name = ""
    if isinstance(node, exp.Table):
        name = node.name or node.text("db")
    elif node is not None:
        name = node.name
    name = _fold(name, False, ctx) or "?"
    if ctx.dialect == "mysql":
        return ObjectRef(ObjectType.DATABASE, name, name, "")
    return ObjectRef(ObjectType.DATABASE, ctx.database, name, "")


def _function(node: exp.Func, r: _Result, ctx: _Ctx) -> None:
    if node.find_ancestor(exp.Hint) is not None:
        return  # optimizer hints look like calls
    if isinstance(node, exp.Anonymous):
        name = str(node.this)
    elif isinstance(node, exp.UserDefinedFunction):
        return
    else:
        name = node.sql_name() if hasattr(node, "sql_name") else node.key
    low = name.lower()
    qualifier: str | None = None
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        qualifier = parent.this.name if parent.this is not None else None
    if low in _FILE_FUNCTIONS:
        r.reads_files = True
        r.reasons.append(f"{low}() reads or writes files on the database server")
        return
    if not isinstance(node, exp.Anonymous) and low not in _WRITING_FUNCTIONS:
        return
    if low in _BUILTIN_FUNCTIONS and (qualifier is None or qualifier.lower() in _BUILTIN_SCHEMAS):
        return
    if qualifier is not None and qualifier.lower() in _BUILTIN_SCHEMAS and low not in _WRITING_FUNCTIONS:
        return
    schema = qualifier if qualifier is not None else ctx.default_schema
    if ctx.dialect != "mysql" and qualifier is not None and not (parent and parent.this.args.get("quoted")):
        schema = qualifier.lower()
    fname = low if ctx.dialect != "mysql" else name
    database = schema if ctx.dialect == "mysql" else ctx.database
    r.calls_routines = True
    r.add(K.CALL, ObjectRef(ObjectType.ROUTINE, database, schema, fname))


# --------------------------------------------------------------------------------------
# statements sqlglot reads as opaque commands, or not at all


def _replace(body: str, ctx: _Ctx) -> _Result:
    rest = _after_words(body, 1)
    r = _parsed("INSERT" + rest, ctx, None)
    if r.kind is K.UNKNOWN:
        return r
    r.kind = K.UPSERT
    r.kinds.discard(K.INSERT)
    r.kinds.add(K.UPSERT)
    r.accesses = {Access(K.UPSERT, a.obj) if a.kind is K.INSERT else a for a in r.accesses}
    return r


def _ddl(body: str, words: list[str], ctx: _Ctx, tokens: list[Token]) -> _Result:
    w0 = words[0]
    kind = {
        "CREATE": K.CREATE,
        "ALTER": K.ALTER,
        "DROP": K.DROP,
        "TRUNCATE": K.TRUNCATE,
        "RENAME": K.RENAME,
        "COMMENT": K.ALTER,
    }[w0]
    m = _DDL_OBJECT.match(body)
    objword = m.group(1).upper() if m else ""
    if objword in _ADMIN_OBJECTS or (w0 == "ALTER" and objword == "SYSTEM"):
        return _opaque(K.ADMIN, f"{w0} {objword} administers the server")
    if w0 == "RENAME" and ctx.dialect == "mysql":
        return _rename(body, ctx)
    if objword in ("FUNCTION", "PROCEDURE", "TRIGGER") and w0 == "CREATE":
        # the body is code that runs later, as its definer: the policy needs CREATE here
        r = _opaque(K.CREATE, f"CREATE {objword} defines code the analyser does not read")
        return r
    tree = _parse_tokens(tokens, body, ctx.dialect) if tokens else None
    if tree is None or isinstance(tree, exp.Command):
        return _opaque(kind, f"the objects of this {w0} statement could not be read")
    r = _walk(tree, ctx)
    if r.kind is K.UNKNOWN:
        return _opaque(kind, f"the objects of this {w0} statement could not be read")
    r.kind = kind
    r.kinds.add(kind)
    if w0 == "TRUNCATE":
        r.unfiltered_write = True
    return r


_DDL_OBJECT = re.compile(
    r"(?is)\s*\w+\s+(?:OR\s+REPLACE\s+)?(?:ALGORITHM\s*=\s*\w+\s+)?(?:DEFINER\s*=\s*\S+\s+)?"
    r"(?:SQL\s+SECURITY\s+\w+\s+)?(?:(?:TEMPORARY|TEMP|GLOBAL|LOCAL|UNLOGGED|UNIQUE|MATERIALIZED|RECURSIVE"
    r"|AGGREGATE|CONSTRAINT|ONLINE|OFFLINE|IGNORE|FULLTEXT|SPATIAL\s+INDEX|TRUSTED|PROCEDURAL)\s+)*(\w+)"
)
_NAME = r"(?:`(?:[^`]|``)+`|\"(?:[^\"]|\"\")+\"|[\w$]+)"
_QNAME = re.compile(rf"\s*({_NAME}(?:\s*\.\s*{_NAME})?)")


def _split_qname(q: str, ctx: _Ctx) -> tuple[str | None, str]:
    parts = [p.strip() for p in re.findall(_NAME, q)]

    def clean(p: str) -> str:
        if p[:1] in ("`", '"'):
            return p[1:-1].replace(p[0] * 2, p[0])
        return p if ctx.dialect == "mysql" else p.lower()

    parts = [clean(p) for p in parts]
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return None, parts[0] if parts else ""


def _qualified(q: str, ctx: _Ctx, otype: ObjectType = ObjectType.TABLE) -> ObjectRef:
    schema, name = _split_qname(q, ctx)
    if ctx.dialect == "mysql":
        db = schema or ctx.database
        return ObjectRef(otype, db, db, name)
    return ObjectRef(otype, ctx.database, schema or ctx.default_schema, name)


def _rename(body: str, ctx: _Ctx) -> _Result:
    # RENAME TABLE a TO b [, c TO d] ...
    m = re.match(r"(?is)\s*RENAME\s+TABLES?\s+(.*)$", body)
    if m is None:
        return (
            _opaque(K.RENAME, "this RENAME statement could not be read")
            if "USER" not in body.upper()
            else _opaque(K.ADMIN)
        )
    r = _Result(K.RENAME)
    r.add(K.RENAME)
    for pair in m.group(1).split(","):
        names = re.split(r"(?i)\s+TO\s+", pair.strip())
        if len(names) != 2:
            return _opaque(K.RENAME, "this RENAME statement could not be read")
        for n in names:
            r.add(K.RENAME, _qualified(n, ctx))
    return r


def _set(body: str, words: list[str], ctx: _Ctx, tokens: list[Token]) -> _Result:
    w1 = words[1] if len(words) > 1 else ""
    w2 = words[2] if len(words) > 2 else ""
    scope_word = w1
    if w1 in ("SESSION", "LOCAL"):
        scope_word = w2
    if scope_word in ("ROLE", "AUTHORIZATION") or (w1 == "DEFAULT" and w2 == "ROLE"):
        return _simple(K.SET_ROLE)
    if w1 == "SESSION" and w2 == "CHARACTERISTICS":
        return _simple(K.TRANSACTION)
    if w1 == "TRANSACTION" or (w1 in ("SESSION", "GLOBAL", "LOCAL") and w2 == "TRANSACTION"):
        return _simple(K.SET_GLOBAL if w1 == "GLOBAL" else K.TRANSACTION)
    if w1 in ("GLOBAL", "PERSIST", "PERSIST_ONLY") or re.search(
        r"(?i)@@(global|persist|persist_only)\.", body
    ):
        return _opaque(K.SET_GLOBAL)
    if w1 == "PASSWORD":
        return _opaque(K.ADMIN)
    if w1 == "CONSTRAINTS":
        return _simple(K.TRANSACTION)
    if ctx.dialect == "postgres" and (
        scope_word == "SEARCH_PATH" or (scope_word == "SCHEMA" and w1 != "SCHEMA") or w1 == "SCHEMA"
    ):
        r = _simple(K.SET)
        r.new_search_path = _search_path_value(body)
        if r.new_search_path:
            ctx.search_path = r.new_search_path
        return r
    if ctx.dialect == "postgres" and scope_word == "ROLE":
        return _simple(K.SET_ROLE)
    # MySQL user variables can hold subqueries and function calls: parse and walk them
    if "(" in body or ("@" in body and "SELECT" in body.upper()):
        tree = _parse_tokens(tokens, body, ctx.dialect)
        if tree is None or isinstance(tree, exp.Command):
            return _unknown("a SET with an expression the analyser could not read")
        r = _walk(tree, ctx)
        if r.kind is not K.UNKNOWN:
            r.kind = K.SET
            r.kinds.add(K.SET)
        return r
    return _simple(K.SET)


def _search_path_value(body: str) -> tuple[str, ...] | None:
    m = re.match(r"(?is)\s*SET\s+(?:SESSION\s+|LOCAL\s+)?(?:search_path\s*(?:=|\bTO\b)|SCHEMA)\s*(.*)$", body)
    if m is None:
        return None
    value = m.group(1).strip().rstrip(";").strip()
    if value.upper() == "DEFAULT":
        return ("public",)
    out: list[str] = []
    for part in value.split(","):
        p = part.strip()
        if p.startswith("'") and p.endswith("'"):
            p = p[1:-1]
        if p.startswith('"') and p.endswith('"'):
            out.append(p[1:-1])
        elif p:
            out.append(p.lower())
    return tuple(o for o in out if o != "$user") or None


def _use(body: str, ctx: _Ctx) -> _Result:
    m = re.match(rf"(?is)\s*USE\s+({_NAME})\s*$", body)
    if m is None:
        return _unknown("this USE statement could not be read")
    _, name = _split_qname(m.group(1), ctx)
    r = _Result(K.USE)
    r.add(K.USE, ObjectRef(ObjectType.DATABASE, name, name, ""))
    r.new_database = name
    ctx.database = name
    return r


def _call(body: str, ctx: _Ctx) -> _Result:
    rest = _after_words(body, 1)
    m = _QNAME.match(rest)
    if m is None:
        return _unknown("this CALL statement could not be read")
    ref = _qualified(m.group(1), ctx, ObjectType.ROUTINE)
    r = _Result(K.CALL)
    r.add(K.CALL, ref)
    r.calls_routines = True
    args = rest[m.end() :].strip()
    if args:
        # read the arguments as a SELECT list: they can hold subqueries and function calls
        if not (args.startswith("(") and args.endswith(")")):
            return _unknown("the arguments of this CALL could not be read")
        inner = _parsed("SELECT " + args[1:-1] if args[1:-1].strip() else "SELECT 1", ctx, None)
        if inner.kind is K.UNKNOWN:
            return inner
        inner.kinds.discard(K.SELECT)
        inner.accesses = {a for a in inner.accesses}
        r.merge(inner)
        if not any(a.kind is K.SELECT for a in inner.accesses):
            r.kinds.discard(K.SELECT)
    return r


def _prepare(body: str, words: list[str], ctx: _Ctx, tokens: list[Token]) -> _Result:
    if len(words) > 1 and words[1] == "TRANSACTION":
        return _simple(K.TRANSACTION)
    if ctx.dialect == "mysql":
        m = re.match(rf"(?is)\s*PREPARE\s+{_NAME}\s+FROM\s+(.*)$", body)
        if m is None:
            return _unknown("this PREPARE statement could not be read")
        src = m.group(1).strip()
        toks = _tokenize(src, ctx.dialect)
        if (
            not toks
            or len(toks) != 1
            or toks[0].token_type not in (TokenType.STRING, TokenType.NATIONAL_STRING)
        ):
            return _unknown(
                "PREPARE from a variable or expression cannot be analysed; the statement text is not known"
            )
        inner_sql = toks[0].text
    else:
        m = re.match(rf"(?is)\s*PREPARE\s+{_NAME}\s*(?:\([^)]*\))?\s+AS\s+(.*)$", body)
        if m is None:
            return _unknown("this PREPARE statement could not be read")
        inner_sql = m.group(1)
    inner = _analyze_text(inner_sql, ctx.dialect, ctx.database, ctx.search_path, None)
    r = _Result(K.EXECUTE)
    r.add(K.EXECUTE)
    r.kinds |= set(inner.kinds)
    r.accesses |= set(inner.accesses)
    r.opaque |= set(inner.opaque_kinds)
    r.unfiltered_write = inner.unfiltered_write
    r.reads_files, r.writes_files = inner.reads_files, inner.writes_files
    r.calls_routines, r.procedural = inner.calls_routines, inner.procedural
    r.reasons.extend(inner.reasons)
    r.reasons.append("PREPARE is checked as the statement it prepares")
    if inner.statement_count > 1:
        return _unknown("PREPARE of several statements is not supported")
    return r


def _copy(body: str, ctx: _Ctx, tokens: list[Token]) -> _Result:
    upper = body.upper()
    tree = None
    try:
        tree = _parse_tokens(tokens, body, ctx.dialect)
    except SqlglotError:
        tree = None
    if isinstance(tree, exp.Copy):
        r = _walk(tree, ctx)
        if re.search(r"\bPROGRAM\b", upper):
            r.reads_files = r.writes_files = True
            r.reasons.append("COPY ... PROGRAM runs a program on the database server")
        return r
    return _unknown("this COPY statement could not be read")


def _load_data(body: str, ctx: _Ctx) -> _Result:
    r = _Result(K.LOAD_DATA)
    r.add(K.LOAD_DATA)
    local = (
        re.match(r"(?is)\s*LOAD\s+(?:DATA|XML)\s+(?:LOW_PRIORITY\s+|CONCURRENT\s+)?LOCAL\b", body) is not None
    )
    r.reads_files = True
    if local:
        r.reasons.append("LOAD DATA LOCAL reads a file from the client's machine")
    else:
        r.reasons.append("LOAD DATA INFILE reads a file on the database server")
    m = re.search(rf"(?is)\bINTO\s+TABLE\s+({_NAME}(?:\s*\.\s*{_NAME})?)", body)
    if m is None:
        r.opaque.add(K.LOAD_DATA)
    else:
        r.add(K.LOAD_DATA, _qualified(m.group(1), ctx))
    if local:
        # the client's file is not the server's: only the FILE privilege of server files
        # is needed for the non-LOCAL form
        r.reads_files = False
    return r


def _lock(body: str, ctx: _Ctx) -> _Result:
    r = _Result(K.LOCK)
    r.add(K.LOCK)
    r.locking = True
    if ctx.dialect == "mysql":
        m = re.match(r"(?is)\s*LOCK\s+(?:TABLES?|INSTANCE)\s+(.*)$", body)
        if m is None or body.upper().split()[1:2] == ["INSTANCE"]:
            return _opaque(K.ADMIN)
        for item in m.group(1).split(","):
            q = _QNAME.match(item)
            if q is None:
                return _opaque(K.LOCK)
            r.add(K.LOCK, _qualified(q.group(1), ctx))
        return r
    m = re.match(r"(?is)\s*LOCK\s+(?:TABLE\s+)?(?:ONLY\s+)?(.*?)(?:\s+IN\s+.*|\s+NOWAIT\s*)?$", body)
    if m is None:
        return _opaque(K.LOCK)
    for item in m.group(1).split(","):
        q = _QNAME.match(item.replace("*", ""))
        if q is None:
            return _opaque(K.LOCK)
        r.add(K.LOCK, _qualified(q.group(1), ctx))
    return r


_EXPLAIN_RUNNABLE = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "WITH",
        "TABLE",
        "VALUES",
        "MERGE",
        "CREATE",
        "DECLARE",
        "EXECUTE",
        "(",
    }
)


def _explain(body: str, ctx: _Ctx) -> _Result:
    """EXPLAIN x is EXPLAIN on x's objects; EXPLAIN ANALYZE x runs x, so it is x."""
    rest = _after_words(body, 1)
    analyze_ = False
    # PostgreSQL option list: EXPLAIN (ANALYZE, BUFFERS) ...
    s = rest.lstrip()
    if s.startswith("(") and ctx.dialect == "postgres":
        close = s.find(")")
        if close < 0:
            return _unknown("the EXPLAIN options could not be read")
        opts = s[1:close].upper()
        # any ANALYZE option counts, even "ANALYZE false": failing closed costs nothing here
        if re.search(r"\bANALY[SZ]E\b", opts):
            analyze_ = True
        s = s[close + 1 :]
    while True:
        ws = _words(s, 2)
        if not ws:
            return _simple(K.EXPLAIN)
        w = ws[0]
        if w in ("ANALYZE", "ANALYSE"):
            analyze_ = True
            s = _after_words(s, 1)
        elif w in ("VERBOSE", "EXTENDED", "PARTITIONS", "COSTS", "BUFFERS"):
            s = _after_words(s, 1)
        elif w == "FORMAT":
            s = re.sub(r"(?is)^\s*FORMAT\s*=?\s*\w+", "", s)
        elif w == "FOR":  # EXPLAIN FOR CONNECTION n
            return _simple(K.EXPLAIN)
        else:
            break
    if w not in _EXPLAIN_RUNNABLE:
        if ctx.dialect == "mysql":  # EXPLAIN tbl is DESCRIBE tbl
            return _simple(K.SHOW)
        return _unknown(f"EXPLAIN of a statement beginning with {w} is not understood")
    inner, _ = _analyze_statement(s, ctx)
    if analyze_:
        inner.kinds.add(K.EXPLAIN)
        inner.reasons.append("EXPLAIN ANALYZE runs the statement it explains")
        return inner
    if inner.kind is K.UNKNOWN:
        return _opaque(K.EXPLAIN, "the statement under EXPLAIN could not be read")
    r = _Result(K.EXPLAIN)
    r.add(K.EXPLAIN)
    for a in inner.accesses:
        r.add(K.EXPLAIN, a.obj)
    if inner.opaque:
        r.opaque.add(K.EXPLAIN)
    return r
