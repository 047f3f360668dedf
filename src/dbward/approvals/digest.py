"""The SQL binding of an approval: a digest that changes whenever what the statement does
could change, and only then.

Built on the sqlglot tokenizer and :func:`dbward.sql.fingerprint.fingerprint_tokens`: the
normalized fingerprint (keywords in one case, unquoted identifiers folded as the server folds
them, whitespace and ordinary comments gone) plus every literal value, in order, with its
token type, plus the bound parameters of a prepared statement. So ``update t set a = 1``
and ``UPDATE  t SET a=1 -- ok`` share a digest, while ``UPDATE t SET a = 2`` or another
parameter value does not. MySQL table names are case-sensitive on most servers, so for
MySQL identifiers are kept as written; MySQL executable comments (``/*! ... */``) are code,
so their text is part of the digest. Text the tokenizer cannot read is bound by its exact
characters (whitespace at both ends ignored).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import TokenType

from dbward.sql.dialects import sqlglot_dialect
from dbward.sql.fingerprint import fingerprint_tokens
from dbward.sql.lexer import find_exec_comments

Dialect = Literal["mysql", "postgres"]

_LITERALS = frozenset(
    {
        TokenType.NUMBER,
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
    }
)
_NAMES = frozenset({TokenType.VAR, TokenType.IDENTIFIER})


def _param(value: Any) -> str | None:
    """One bound parameter as text: drivers and the API hand the same value in different
    Python types (``5`` from the API, ``"5"`` from a text-format Bind), and the server sees
    the text either way."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def normalize_params(params: Sequence[Any] | None) -> list[str | None] | None:
    return None if params is None else [_param(p) for p in params]


def statement_digest(sql: str, dialect: Dialect, params: Sequence[Any] | None = None) -> str:
    """The hex SHA-256 binding ``sql`` (as normalized above) and ``params`` together."""
    parts: dict[str, Any] = {"dialect": dialect, "params": normalize_params(params)}
    text = sql.strip().rstrip(";").strip()
    try:
        tokens = list(sqlglot_dialect(dialect).tokenize(text))
    except SqlglotError:
        tokens = []
    if not tokens:
        parts["text"] = text
    else:
        parts["fingerprint"] = fingerprint_tokens(tokens)
        parts["literals"] = [[t.token_type.name, t.text] for t in tokens if t.token_type in _LITERALS]
        if dialect == "mysql":
            parts["names"] = [t.text for t in tokens if t.token_type in _NAMES]
            comments, problem = find_exec_comments(text)
            parts["exec"] = [text[c.start : c.end] for c in comments]
            if problem is not None:
                parts["text"] = text
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
