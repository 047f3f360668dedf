"""SQL analysis for the policy: statement kinds, objects touched, fingerprints, splitting.

Pure code on sqlglot; imports nothing of dbward but itself. See :mod:`dbward.sql.analysis`.
"""

from dbward.sql.analysis import analyze, cache_clear, cache_info
from dbward.sql.lexer import expand_exec_comments, split_spans, split_statements
from dbward.sql.model import Access, Analysis, ObjectRef, ObjectType, StatementKind

__all__ = [
    "Access",
    "Analysis",
    "ObjectRef",
    "ObjectType",
    "StatementKind",
    "analyze",
    "cache_clear",
    "cache_info",
    "expand_exec_comments",
    "split_spans",
    "split_statements",
]
