"""Fixtures for masking through the PostgreSQL engine: a database with the bypass corpus's
schema (``tests/unit/masking/corpus.py``) plus typed columns, and a node whose policy is the
store's policy set with masking rules (and connection settings) added.

Until the store holds masking rules itself, :class:`WithMasking` wraps the store's provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dbward.masking.rules import MaskingConfig
from dbward.policy.evaluator import PolicyEvaluator, PolicySetProvider
from dbward.policy.model import ConnectionPolicy, PolicySet
from dbward.store.policy_source import StorePolicyProvider
from tests.conftest import RunningNode, pg_dsn
from tests.unit.masking.corpus import MASKING, POSTGRES_DDL

#: the database the masking tests use (the corpus's three-part names say "shop")
MASK_DB = "dbward_mask_shop"

TYPED_DDL = """
CREATE TABLE public.accounts (id int PRIMARY KEY, balance numeric(12,2), born date, uid uuid,
                              doc jsonb, card bigint, seen timestamptz, secret text, note varchar(20));
INSERT INTO public.accounts VALUES
  (1, 1234.50, '1990-01-01', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": "v1"}', 4111111111111111,
   '2024-01-02 03:04:05+00', 'top secret', 'hello'),
  (2, -7.25, '1985-05-05', 'b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a22', '{"k": "v2"}', 5500000000000004,
   '2024-02-03 04:05:06+00', NULL, 'world');
CREATE TABLE public.big (g int, phone text);
INSERT INTO public.big SELECT g, '010-' || lpad((g % 10000)::text, 4, '0') || '-5678' FROM generate_series(1, 2000) g;
"""

TYPED_RULES: list[dict[str, Any]] = [
    {
        "name": "acc-balance",
        "schema": "public",
        "table": "accounts",
        "column": "balance",
        "algorithm": "full",
    },
    {
        "name": "acc-born",
        "schema": "public",
        "table": "accounts",
        "column": "born",
        "algorithm": "keep_first:4",
    },
    {"name": "acc-uid", "schema": "public", "table": "accounts", "column": "uid", "algorithm": "redact"},
    {"name": "acc-doc", "schema": "public", "table": "accounts", "column": "doc", "algorithm": "fixed:{}"},
    {
        "name": "acc-card",
        "schema": "public",
        "table": "accounts",
        "column": "card",
        "algorithm": "keep_last:4",
    },
    {"name": "acc-seen", "schema": "public", "table": "accounts", "column": "seen", "algorithm": "null"},
    {"name": "acc-secret", "schema": "public", "table": "accounts", "column": "secret", "algorithm": "token"},
    {"name": "big-phone", "schema": "public", "table": "big", "column": "phone", "pattern": "phone"},
]

#: every value of a protected column in the corpus data: none may reach a client as it is
PROTECTED = (
    "010-1234-5678",
    "010-9876-5432",
    "minji@example.com",
    "jun.lee@example.org",
    "900101-1234567",
    "850505-2345678",
    "010-1111-2222",
    "home",
)


def masking_section() -> dict[str, Any]:
    rules = list(MASKING["rules"]) + TYPED_RULES  # type: ignore[call-overload]
    return {"patterns": MASKING["patterns"], "rules": rules}


class WithMasking:
    """The store's policy set plus masking rules and connection settings."""

    def __init__(
        self,
        inner: PolicySetProvider,
        masking: dict[str, Any],
        connections: tuple[ConnectionPolicy, ...] = (),
    ) -> None:
        self.inner = inner
        cfg = MaskingConfig.model_validate(masking)
        self.patterns = cfg.patterns
        self.rules = cfg.rules
        self.connections = connections
        self._src: PolicySet | None = None
        self._out: PolicySet | None = None

    async def current(self) -> PolicySet:
        ps = await self.inner.current()
        if ps is not self._src or self._out is None:
            self._src = ps
            self._out = PolicySet.model_validate(
                {
                    **ps.model_dump(),
                    "masking_patterns": [p.model_dump() for p in self.patterns],
                    "masking_rules": [r.model_dump() for r in self.rules],
                    # the test's settings first: the first exact match wins
                    "connections": [c.model_dump() for c in (*self.connections, *ps.connections)],
                }
            )
        return self._out


def use_masking(node: RunningNode, *, max_rows: int | None = None, **conn: Any) -> PolicyEvaluator:
    """Make ``node`` decide with the store's policy plus the masking rules (and settings of
    connection ``pg``), with the node's own catalog provider."""
    connections: tuple[ConnectionPolicy, ...] = ()
    if max_rows is not None or conn:
        connections = (ConnectionPolicy(connection="pg", max_rows=max_rows, **conn),)
    provider = WithMasking(StorePolicyProvider(node.store), masking_section(), connections)
    evaluator = PolicyEvaluator(provider, catalog=node.node.catalogs)
    node.node.gate.policy = evaluator
    return evaluator


def reset_mask_db() -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {MASK_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {MASK_DB} OWNER dbward_upstream")
    with psycopg.connect(pg_dsn(MASK_DB), autocommit=True) as conn:
        conn.execute(POSTGRES_DDL)
        conn.execute(TYPED_DDL)
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public, crm, other TO dbward_upstream")


@pytest.fixture(scope="session")
def mask_db(pg_upstream: None) -> Iterator[str]:
    reset_mask_db()
    yield MASK_DB


@pytest.fixture
def fresh_mask_db(pg_upstream: None) -> Iterator[str]:
    """The masking database rebuilt for a test that changes its schema."""
    reset_mask_db()
    yield MASK_DB
    reset_mask_db()
