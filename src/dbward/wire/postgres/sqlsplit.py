"""Splitting a simple Query's text into the statements PostgreSQL will run, lexically.

The server runs every statement of a Query message in turn; the gate must see each one.
This follows PostgreSQL's lexer (``scan.l``) closely enough to find the separating
semicolons: '...' strings ('' escapes), E'...' strings (backslash escapes), "..." quoted
identifiers, $tag$...$tag$ dollar quoting, -- line comments and nested /* */ comments.
Empty statements (only whitespace or comments) are dropped, as the server drops them.
"""

from __future__ import annotations

import re

_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z_0-9\x80-\uffff$]")


def _only_comments(text: str) -> bool:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            i = _skip_block_comment(text, i)
        else:
            return False
    return True


def _skip_block_comment(text: str, i: int) -> int:
    depth, i, n = 1, i + 2, len(text)
    while i < n and depth:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
        else:
            i += 1
    return i


_LEXICAL = re.compile(r"['\"$]|--|/\*")


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql`` in order, each without its trailing semicolon, trimmed."""
    if not _LEXICAL.search(sql):  # no strings, identifiers, dollar quotes or comments: the common case
        return [p for p in (part.strip() for part in sql.split(";")) if p]
    out: list[str] = []
    start, i, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR.match(sql[i - 2]))
            i += 1
            while i < n:
                if escapes and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if i + 1 < n and sql[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif c == '"':
            j = i + 1
            while j < n:
                if sql[j] == '"':
                    if j + 1 < n and sql[j + 1] == '"':
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif c == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif c == "$" and (i == 0 or not _IDENT_CHAR.match(sql[i - 1])):
            m = _DOLLAR.match(sql, i)
            if m:
                close = sql.find(m.group(0), m.end())
                i = n if close < 0 else close + len(m.group(0))
            else:
                i += 1
        elif c == ";":
            piece = sql[start:i]
            if not _only_comments(piece):
                out.append(piece.strip())
            i += 1
            start = i
        else:
            i += 1
    piece = sql[start:]
    if not _only_comments(piece):
        out.append(piece.strip())
    return out


_COPY_RE = re.compile(r"^\s*copy\b", re.IGNORECASE)


def copy_kind(sql: str) -> str | None:
    """For a COPY statement: "stdio", "program" or "file" (server-side); None if not COPY."""
    if not _COPY_RE.match(sql):
        return None
    # Look at the words after the last FROM/TO outside quotes and parentheses.
    tokens = _tokens_outside_quotes(sql)
    for k, tok in enumerate(tokens):
        if tok in ("from", "to") and k + 1 < len(tokens):
            nxt = tokens[k + 1]
            if nxt == "program":
                return "program"
            if nxt in ("stdin", "stdout"):
                return "stdio"
            if nxt.startswith("'") or nxt.startswith("e'"):
                return "file"
    return "stdio"


def _tokens_outside_quotes(sql: str) -> list[str]:
    tokens: list[str] = []
    depth = 0
    for m in re.finditer(r"[Ee]?'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\(|\)|[A-Za-z_]+", sql):
        t = m.group(0)
        if t == "(":
            depth += 1
        elif t == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            tokens.append(t.lower() if not t.startswith('"') else t)
    return tokens
