"""Statements that share a plain shape share one analysis (``sql/analysis.plain_shape``).

The shape replaces literal values by markers so that OLTP traffic (the same statement with
other ids, names, dates) is analysed once. It is only safe if two texts with one shape
always get the same analysis, which the property test below checks against fresh analyses
with every cache cleared; the other tests pin which strings are values and which are not.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.sql import analysis as analysis_mod
from dbward.sql import analyze
from dbward.sql.analysis import plain_shape


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT * FROM users WHERE email = 'a@x.org'", "SELECT * FROM users WHERE email = 'b@y.com'"),
        ("SELECT * FROM t WHERE a LIKE 'x%' AND b <> 'q'", "SELECT * FROM t WHERE a LIKE 'yy%' AND b <> ''"),
        (
            "SELECT * FROM t WHERE d BETWEEN '2024-01-01' AND '2024-12-31'",
            "SELECT * FROM t WHERE d BETWEEN '1' AND '2'",
        ),
        ("SELECT * FROM t WHERE s IN ('a', 'b', 3)", "SELECT * FROM t WHERE s IN ('it''s', 'c', 4)"),
        (
            "INSERT INTO orders (user_id, note) VALUES (1, 'one'), (2, 'two')",
            "INSERT INTO orders (user_id, note) VALUES (3, 'x'), (4, 'y;DROP TABLE orders')",
        ),
        (
            "UPDATE t SET name = 'Kim', city = 'Seoul' WHERE id = 1",
            "UPDATE t SET name = 'Lee', city = '' WHERE id = 2",
        ),
        ("DELETE FROM s WHERE token = 'abc'", "DELETE FROM s WHERE token = 'x'"),
    ],
)
def test_statements_differing_in_string_values_share_a_shape(a: str, b: str) -> None:
    assert plain_shape(a) is not None and plain_shape(a) == plain_shape(b)
    analysis_mod.cache_clear()
    x = analyze(a, "mysql", database="app")
    y = analyze(b, "mysql", database="app")
    assert y.sql == b and replace(y, sql=a) == x


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT nextval('seq_a')", "SELECT nextval('seq_b')"),  # a function's argument can name an object
        (
            "SELECT * FROM pg_class WHERE oid = 'a'::regclass",
            "SELECT * FROM pg_class WHERE oid = 'b'::regclass",
        ),
        (
            "SELECT * FROM t WHERE x = 'a'         ::regclass",
            "SELECT * FROM t WHERE x = 'b'         ::regclass",
        ),
        ("SELECT 'a' FROM t", "SELECT 'b' FROM t"),
        ("SELECT * FROM t WHERE a = E'x'", "SELECT * FROM t WHERE a = E'y'"),  # prefixed strings stay
        ("SELECT * FROM t WHERE j @> 'a'", "SELECT * FROM t WHERE j @> 'b'"),
        ("SELECT c->>'a' FROM t", "SELECT c->>'b' FROM t"),
        ("SELECT * FROM t WHERE a IN (f('x'))", "SELECT * FROM t WHERE a IN (f('y'))"),
        ("SET search_path = 'a'", "SET search_path = 'b'"),  # SET reads its value
        ("PREPARE s FROM 'SELECT 1'", "PREPARE s FROM 'DROP TABLE t'"),
        ("SELECT 1 INTO OUTFILE '/tmp/a'", "SELECT 1 INTO OUTFILE '/tmp/b'"),
        ("SELECT 1; SET search_path = 'a'", "SELECT 1; SET search_path = 'b'"),  # after a ';': verbatim
        (
            "SELECT * FROM t WHERE a BETWEEN 1 AND 2 AND 'x'",
            "SELECT * FROM t WHERE a BETWEEN 1 AND 2 AND 'y'",
        ),
    ],
)
def test_strings_that_are_not_plain_values_stay_in_the_shape(a: str, b: str) -> None:
    assert plain_shape(a) != plain_shape(b)


@pytest.mark.parametrize(
    "text", ["SELECT * FROM t WHERE a = 'x", "SELECT * FROM t WHERE a = 'x''", "SELECT 'a' 'b"]
)
def test_an_unclosed_quote_is_not_plain(text: str) -> None:
    assert plain_shape(text) is None


def test_a_shared_shape_is_one_analysis_with_its_own_text() -> None:
    analysis_mod.cache_clear()
    a = analyze("SELECT * FROM users WHERE name = 'Kim'", "postgres", database="app")
    b = analyze("SELECT * FROM users WHERE name = 'Lee'", "postgres", database="app")
    assert b.sql.endswith("'Lee'") and replace(b, sql=a.sql) == a
    # one parse only: the second text was found by its shape, before any tokenizing
    assert analysis_mod._analyze_cached.cache_info().misses == 1


# -- property: one shape, one analysis ------------------------------------------------------

_STRING_LIST = [
    "''",
    "'a'",
    "'t'",
    "'public.t'",
    "'1'",
    "'it''s'",
    "'x;y'",
    "'SELECT 1'",
    "'('",
    "'/etc/passwd'",
]
_STRINGS = st.sampled_from(_STRING_LIST)
_CONDITIONS = st.sampled_from(
    [
        "a = {s}",
        "a <> {s}",
        "a LIKE {s}",
        "a BETWEEN {s} AND {s}",
        "a IN ({s}, {s}, 3)",
        "a = f({s})",
        "a = {s}::regclass",
        "a @> {s}",
        "a->>{s} = {s}",
        "{s} = a",
        "a = E{s}",
        "(a, b) IN (({s}, {s}))",
        "a = nextval({s})",
        "a = pg_read_file({s})",
        "a = (SELECT b FROM u WHERE c = {s})",
        "a IN (SELECT {s} FROM v)",
        "a = {s} {s}",
        "a = 1 AND {s}",
    ]
)
_STATEMENTS = st.sampled_from(
    [
        "SELECT * FROM t WHERE {c}",
        "UPDATE t SET a = {s}, b = g({s}) WHERE {c}",
        "DELETE FROM t WHERE {c}",
        "INSERT INTO t (a, b) VALUES ({s}, {s}), (1, {s})",
        "INSERT INTO t (a, b) SELECT {s}, b FROM u WHERE {c}",
        "SELECT {s}, a FROM t WHERE {c}",
        "SET @a = {s}",
        "SET search_path = {s}",
        "SELECT 1 FROM t WHERE {c}; SET search_path = {s}",
        "SELECT * FROM t WHERE {c} INTO OUTFILE {s}",
        "PREPARE p FROM {s}",
        "COPY t FROM {s}",
        "WITH w AS (SELECT * FROM t WHERE {c}) SELECT * FROM w",
        "REPLACE INTO t VALUES ({s})",
    ]
)


def _fill(template: str, strings: list[str]) -> str:
    it = iter(strings)
    out = template
    while "{s}" in out:
        out = out.replace("{s}", next(it), 1)
    return out


@settings(max_examples=400, deadline=None)
@given(
    statement=_STATEMENTS,
    conditions=st.lists(_CONDITIONS, min_size=1, max_size=3),
    first=st.lists(_STRINGS, min_size=16, max_size=16),
    other=st.lists(_STRINGS, min_size=16, max_size=16),
    keep=st.lists(st.booleans(), min_size=16, max_size=16),
    dialect=st.sampled_from(["mysql", "postgres"]),
)
def test_texts_with_one_shape_get_one_analysis(
    statement: str, conditions: list[str], first: list[str], other: list[str], keep: list[bool], dialect: str
) -> None:
    template = statement.replace("{c}", " AND ".join(conditions))
    second = [f if k else o for f, o, k in zip(first, other, keep, strict=True)]
    a, b = _fill(template, first), _fill(template, second)
    sa, sb = plain_shape(a), plain_shape(b)
    if sa is None or sa != sb:
        return
    analysis_mod.cache_clear()
    x = analyze(a, dialect, database="app")  # type: ignore[arg-type]
    analysis_mod.cache_clear()
    y = analyze(b, dialect, database="app")  # type: ignore[arg-type]
    # the parts of a text with several statements hold their own texts (such an analysis is
    # never shared: ``analyze`` keeps only single statements by shape)
    assert len(y.statements) == len(x.statements), (a, b)
    parts = tuple(replace(q, sql=p.sql) for q, p in zip(y.statements, x.statements, strict=True))
    assert replace(y, sql=a, statements=parts) == x, (a, b)
