"""A small lexical scanner for MySQL and PostgreSQL text: statement splitting and MySQL
executable-comment expansion.

This is the reference splitter for multi-statement messages (the engines split for
themselves today; this module is what they should agree with). It knows only what decides
where a statement ends: quotes, backticks, ``E''`` strings, dollar quoting, comments (nested
ones in PostgreSQL) and MySQL's executable comments ``/*! ... */`` and ``/*M! ... */``, whose
content the server runs as code. Its counterpart is :mod:`dbward.sql.analysis`, which parses
each piece with sqlglot.

Nothing here does I/O; every function is pure and linear in the length of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["mysql", "postgres"]

# Where the next character that matters can be: a quote, a comment opener, a statement
# separator or (PostgreSQL) a dollar quote. Everything between is plain code.
_MYSQL_INTERESTING = re.compile(r"['\"`#;]|/\*|\*/|--(?=[ \t\n\r\f\v]|$)")
_PG_INTERESTING = re.compile(
    r"(?<![\w$])[eE]'|['\";]|/\*|--|\$(?:[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*)?\$"
)

# A MySQL/MariaDB executable comment opener with its optional version number.
_EXEC_OPEN = re.compile(r"/\*(M?)!(\d{5,6})?")


@dataclass(frozen=True, slots=True)
class Span:
    """A statement's place in the text: ``text[start:end]`` (the separator excluded)."""

    start: int
    end: int
    has_code: bool  # False when the piece is only whitespace and ordinary comments


class _Scan:
    """State for one pass over the text."""

    __slots__ = ("ambiguous", "backslash", "dialect", "pieces", "quoted", "text", "unterminated")

    def __init__(self, text: str, dialect: Dialect, backslash: bool) -> None:
        self.text = text
        self.dialect = dialect
        self.backslash = backslash
        self.pieces: list[Span] = []
        self.quoted: list[tuple[int, int]] = []  # extents of literals and comments
        self.unterminated = False
        self.ambiguous: str | None = None


def _end_of_quote(text: str, i: int, quote: str, backslash: bool) -> int:
    """Index just after the closing quote of a literal that opens at ``i`` (or len(text))."""
    n = len(text)
    j = i + 1
    while j < n:
        c = text[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and text[j + 1] == quote:  # doubled quote is an escaped quote
                j += 2
                continue
            return j + 1
        j += 1
    return -1


def _scan(text: str, dialect: Dialect, *, backslash: bool = True) -> _Scan:
    st = _Scan(text, dialect, backslash)
    n = len(text)
    pos = 0
    start = 0
    has_code = False
    in_exec = False  # inside a MySQL executable comment: code until its "*/"
    pattern = _MYSQL_INTERESTING if dialect == "mysql" else _PG_INTERESTING
    while True:
        m = pattern.search(text, pos)
        if m is None:
            if text[pos:].strip():
                has_code = True
            break
        i = m.start()
        tok = m.group()
        if not has_code and text[pos:i].strip():
            has_code = True
        if tok == ";":
            st.pieces.append(Span(start, i, has_code))
            start = pos = i + 1
            has_code = False
            continue
        if tok == "*/":
            if in_exec:
                in_exec = False
            else:  # a stray "*/" is code (and a syntax error the parser will report)
                has_code = True
            pos = i + 2
            continue
        if tok == "/*":
            exec_m = _EXEC_OPEN.match(text, i) if dialect == "mysql" else None
            if exec_m is not None:
                if in_exec:
                    st.ambiguous = "an executable comment is nested inside another"
                in_exec = True
                has_code = True
                pos = exec_m.end()
                continue
            if dialect == "mysql" and text.startswith("/*+", i):
                has_code = True  # optimizer hints belong to the statement
            end = _end_of_comment(text, i, nested=dialect == "postgres")
            if in_exec:
                st.ambiguous = "an ordinary comment is nested inside an executable comment"
            if end < 0:
                st.unterminated = True
                st.quoted.append((i, n))
                pos = n
                break
            st.quoted.append((i, end))
            pos = end
            continue
        if tok in ("--", "#"):
            nl = text.find("\n", i)
            end = n if nl < 0 else nl
            st.quoted.append((i, end))
            pos = end
            continue
        has_code = True
        if tok.startswith("$"):
            # "$1" style parameters never reach here (the tag cannot start with a digit); a
            # dollar sign glued to an identifier (a$b$) is part of that identifier.
            if i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$"):
                pos = i + 1
                continue
            close = text.find(tok, i + len(tok))
            if close < 0:
                st.unterminated = True
                st.quoted.append((i, n))
                pos = n
                break
            end = close + len(tok)
            st.quoted.append((i, end))
            pos = end
            continue
        if tok in ("e'", "E'"):
            end = _end_of_quote(text, i + 1, "'", True)
        elif dialect == "mysql":
            end = _end_of_quote(text, i, tok, backslash and tok != "`")
        else:
            end = _end_of_quote(text, i, tok, False)
        if end < 0:
            st.unterminated = True
            st.quoted.append((i, n))
            pos = n
            break
        st.quoted.append((i, end))
        pos = end
    if in_exec:
        st.unterminated = True
    st.pieces.append(Span(start, n, has_code))
    return st


def _end_of_comment(text: str, i: int, *, nested: bool) -> int:
    if not nested:
        end = text.find("*/", i + 2)
        return -1 if end < 0 else end + 2
    depth = 0
    j = i
    n = len(text)
    while j < n:
        if text.startswith("/*", j):
            depth += 1
            j += 2
        elif text.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            nxt = min((k for k in (text.find("/*", j), text.find("*/", j)) if k >= 0), default=-1)
            if nxt < 0:
                return -1
            j = nxt
    return -1


def split_spans(sql: str, dialect: Dialect) -> list[Span]:
    """Every piece between top-level semicolons, as spans; ``;``.join of them is ``sql``."""
    return _scan(sql, dialect).pieces


def split_statements(sql: str, dialect: Dialect) -> list[str]:
    """The statements of a multi-statement text, stripped, without empty or comment-only pieces.

    A semicolon inside a literal, a quoted identifier, a comment or a dollar-quoted body does
    not split. In MySQL a semicolon inside an executable comment does split, because the server
    runs that content as code. Procedure bodies (``BEGIN ... END`` with inner semicolons) are
    split naively; analysing the pieces then fails closed.
    """
    return [sql[s.start : s.end].strip() for s in _scan(sql, dialect).pieces if s.has_code]


@dataclass(frozen=True, slots=True)
class ExecComment:
    start: int
    end: int
    content_start: int
    content_end: int
    mariadb: bool
    version: int | None


@dataclass(frozen=True, slots=True)
class Expansion:
    """A reading of MySQL text with its executable comments turned into code."""

    text: str
    comments: tuple[ExecComment, ...]
    problem: str | None = None


def find_exec_comments(sql: str) -> tuple[list[ExecComment], str | None]:
    """The executable comments in MySQL text (outside literals), and a problem if any."""
    out: list[ExecComment] = []
    if "/*" not in sql or "!" not in sql:
        return out, None
    n = len(sql)
    pos = 0
    problem: str | None = None
    while True:
        m = _MYSQL_INTERESTING.search(sql, pos)
        if m is None:
            break
        i, tok = m.start(), m.group()
        if tok in ("'", '"', "`"):
            end = _end_of_quote(sql, i, tok, tok != "`")
            if end < 0:
                break
            pos = end
        elif tok in ("--", "#"):
            nl = sql.find("\n", i)
            if nl < 0:
                break
            pos = nl
        elif tok == "/*":
            em = _EXEC_OPEN.match(sql, i)
            if em is None:
                end = sql.find("*/", i + 2)
                if end < 0:
                    break
                pos = end + 2
                continue
            # executable content is code: scan it for literals until its own "*/"
            j = em.end()
            while True:
                mm = _MYSQL_INTERESTING.search(sql, j)
                if mm is None:
                    problem = "an executable comment /*! is not closed"
                    out.append(ExecComment(i, n, em.end(), n, em.group(1) == "M", _ver(em.group(2))))
                    return out, problem
                k, t = mm.start(), mm.group()
                if t == "*/":
                    out.append(ExecComment(i, k + 2, em.end(), k, em.group(1) == "M", _ver(em.group(2))))
                    pos = k + 2
                    break
                if t in ("'", '"', "`"):
                    end = _end_of_quote(sql, k, t, t != "`")
                    if end < 0:
                        return out, "an executable comment contains a literal that is not closed"
                    j = end
                elif t == "/*":
                    return out, "an executable comment contains another comment"
                elif t in ("--", "#"):
                    return out, "an executable comment contains a line comment"
                else:
                    j = k + 1
        else:
            pos = i + len(tok)
    return out, problem


def _ver(digits: str | None) -> int | None:
    return int(digits) if digits else None


def server_version_number(version: str | None) -> int | None:
    """MySQL's comment version number for a server version string: "8.0.36" -> 80036,
    "10.11.6-MariaDB" -> 101106. None when unknown."""
    if not version:
        return None
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        return None
    major, minor, patch = (int(x) for x in m.groups())
    return major * 10000 + minor * 100 + patch


def expand_exec_comments(
    sql: str, *, server_version: str | None = None, mariadb: bool | None = None
) -> list[Expansion]:
    """The readings of MySQL text a server could run, with executable comments expanded.

    With a known server version there is one reading: content runs when its version is at
    most the server's (``/*M!`` only on MariaDB). Without one, every comment's content is
    executed in the first reading, and when some comment carries a version or is
    MariaDB-only a second reading leaves those out, so that neither ``DELETE FROM t /*!99999
    WHERE id = 1 */`` nor a hidden statement escapes analysis.
    """
    comments, problem = find_exec_comments(sql)
    if not comments:
        return [Expansion(sql, (), problem)]
    vnum = server_version_number(server_version)
    is_maria = (
        mariadb if mariadb is not None else bool(server_version and "mariadb" in server_version.lower())
    )

    def build(run: list[bool]) -> str:
        parts: list[str] = []
        last = 0
        for c, r in zip(comments, run, strict=True):
            parts.append(sql[last : c.start])
            parts.append(" " + sql[c.content_start : c.content_end] + " " if r else " ")
            last = c.end
        parts.append(sql[last:])
        return "".join(parts)

    if vnum is not None:
        run = [(not c.mariadb or is_maria) and (c.version is None or c.version <= vnum) for c in comments]
        return [Expansion(build(run), tuple(comments), problem)]
    readings = [Expansion(build([True] * len(comments)), tuple(comments), problem)]
    if any(c.version is not None or c.mariadb for c in comments):
        run = [c.version is None and not c.mariadb for c in comments]
        readings.append(Expansion(build(run), tuple(comments), problem))
    return readings


def quote_structure(
    sql: str, dialect: Dialect, *, backslash: bool = True
) -> tuple[list[tuple[int, int]], bool]:
    """Extents of literals/comments and whether one is unterminated (for ambiguity checks)."""
    st = _scan(sql, dialect, backslash=backslash)
    return st.quoted, st.unterminated


def no_backslash_reading(sql: str) -> str | None:
    """MySQL text as a server with NO_BACKSLASH_ESCAPES reads it, rewritten for a parser that
    treats backslash as an escape; None when that reading is the same or a syntax error."""
    if "\\" not in sql:
        return None
    with_bs, _ = quote_structure(sql, "mysql", backslash=True)
    without, unterminated = quote_structure(sql, "mysql", backslash=False)
    if unterminated or with_bs == without:
        return None
    parts: list[str] = []
    last = 0
    for a, b in without:
        if sql[a] in ("'", '"'):
            parts.append(sql[last:a])
            parts.append(sql[a:b].replace("\\", "\\\\"))
            last = b
    parts.append(sql[last:])
    return "".join(parts)


def strip_leading_comments(sql: str, dialect: Dialect) -> str:
    """The text from its first code character (comments and whitespace skipped)."""
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("/*", i) and not (dialect == "mysql" and _EXEC_OPEN.match(sql, i)):
            end = _end_of_comment(sql, i, nested=dialect == "postgres")
            if end < 0:
                return ""
            i = end
        elif sql.startswith("--", i) or (dialect == "mysql" and c == "#"):
            if dialect == "mysql" and c == "-" and not (i + 2 >= n or sql[i + 2].isspace()):
                break
            nl = sql.find("\n", i)
            if nl < 0:
                return ""
            i = nl + 1
        else:
            break
    return sql[i:]
