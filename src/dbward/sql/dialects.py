"""The sqlglot dialects dbward analyses with: sqlglot's own, adjusted where it cannot read
what real clients send. Only analysis uses these; dbward never re-generates SQL to forward.

PostgreSQL: sqlglot reads the object-identifier types (``oid``, ``regclass``, ...) as a
special token that cannot take an array suffix, so ``$1::oid[]`` (asyncpg's type
introspection, psql's \\d queries) fails to parse and would be refused as UNKNOWN. For
analysis they are plain integer types: the kinds and objects of a statement do not change.
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar

from sqlglot.dialects.dialect import Dialect as SqlglotDialect
from sqlglot.dialects.postgres import Postgres
from sqlglot.tokenizer_core import TokenType

_OBJECT_IDENTIFIER_TYPES = (
    "OID",
    "REGCLASS",
    "REGTYPE",
    "REGPROC",
    "REGPROCEDURE",
    "REGOPER",
    "REGOPERATOR",
    "REGNAMESPACE",
    "REGROLE",
    "REGCONFIG",
    "REGDICTIONARY",
    "REGCOLLATION",
)


class DbwardPostgres(Postgres):
    class Tokenizer(Postgres.Tokenizer):
        KEYWORDS: ClassVar[dict[str, TokenType]] = {
            **Postgres.Tokenizer.KEYWORDS,
            **dict.fromkeys(_OBJECT_IDENTIFIER_TYPES, TokenType.BIGINT),
        }


@cache
def sqlglot_dialect(name: str) -> SqlglotDialect:
    """The dialect instance for "mysql" or "postgres" (any other sqlglot name passes through)."""
    if name == "postgres":
        return DbwardPostgres()
    return SqlglotDialect.get_or_raise(name)
