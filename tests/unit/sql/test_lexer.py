"""The statement splitter and MySQL executable-comment expansion."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.sql.lexer import (
    expand_exec_comments,
    no_backslash_reading,
    server_version_number,
    split_spans,
    split_statements,
    strip_leading_comments,
)


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        ("mysql", "SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("mysql", "SELECT 'a;b'; SELECT \"c;d\"", ["SELECT 'a;b'", 'SELECT "c;d"']),
        ("mysql", "SELECT `we;ird` FROM t; DELETE FROM t", ["SELECT `we;ird` FROM t", "DELETE FROM t"]),
        ("mysql", "SELECT 'it\\'s;'; SELECT 2", ["SELECT 'it\\'s;'", "SELECT 2"]),
        ("mysql", "SELECT 'it''s;'; SELECT 2", ["SELECT 'it''s;'", "SELECT 2"]),
        ("mysql", "SELECT 1 -- c;omment\n; SELECT 2", ["SELECT 1 -- c;omment", "SELECT 2"]),
        ("mysql", "SELECT 1 # c;omment\n; SELECT 2", ["SELECT 1 # c;omment", "SELECT 2"]),
        ("mysql", "SELECT 1 /* a;b */; SELECT 2", ["SELECT 1 /* a;b */", "SELECT 2"]),
        # the server runs an executable comment's content: its semicolon splits
        ("mysql", "SELECT 1 /*!50000 ; DELETE FROM t */", ["SELECT 1 /*!50000", "DELETE FROM t */"]),
        ("mysql", "SELECT 1;;; ;", ["SELECT 1"]),
        ("mysql", "/* only a comment */; SELECT 1", ["SELECT 1"]),
        ("mysql", "SELECT 5--1; SELECT 2", ["SELECT 5--1", "SELECT 2"]),  # --1 is not a comment
        ("postgres", "SELECT $$a;b$$; SELECT 2", ["SELECT $$a;b$$", "SELECT 2"]),
        ("postgres", "SELECT $fn$ x; $$ ; $fn$; SELECT 2", ["SELECT $fn$ x; $$ ; $fn$", "SELECT 2"]),
        ("postgres", "SELECT $1; SELECT $2", ["SELECT $1", "SELECT $2"]),
        ("postgres", "SELECT E'a\\';b'; SELECT 2", ["SELECT E'a\\';b'", "SELECT 2"]),
        ("postgres", "SELECT 'a\\'; SELECT 2", ["SELECT 'a\\'", "SELECT 2"]),  # no backslash escapes
        ("postgres", 'SELECT "a;b" FROM t; SELECT 2', ['SELECT "a;b" FROM t', "SELECT 2"]),
        (
            "postgres",
            "SELECT 1 /* outer /* inner; */ still; */; SELECT 2",
            ["SELECT 1 /* outer /* inner; */ still; */", "SELECT 2"],
        ),
        ("postgres", "SELECT 1 -- x;\n; SELECT 2", ["SELECT 1 -- x;", "SELECT 2"]),
        ("postgres", "SELECT a$b$c FROM t; SELECT 2", ["SELECT a$b$c FROM t", "SELECT 2"]),
        ("postgres", "SELECT 'unterminated; SELECT 2", ["SELECT 'unterminated; SELECT 2"]),
    ],
)
def test_split(dialect: str, sql: str, expected: list[str]) -> None:
    assert split_statements(sql, dialect) == expected  # type: ignore[arg-type]


_ALPHABET = st.sampled_from(list("ab ;'\"`$#-*/!\\\nEe(),x1M"))


@settings(max_examples=400, deadline=None)
@given(st.text(_ALPHABET, max_size=60), st.sampled_from(["mysql", "postgres"]))
def test_split_never_loses_or_invents_characters(sql: str, dialect: str) -> None:
    spans = split_spans(sql, dialect)  # type: ignore[arg-type]
    assert ";".join(sql[s.start : s.end] for s in spans) == sql
    assert spans[0].start == 0 and spans[-1].end == len(sql)
    for a, b in itertools.pairwise(spans):
        assert sql[a.end] == ";" and b.start == a.end + 1
    # split_statements returns stripped pieces, in order, each a piece of the text
    pos = 0
    for piece in split_statements(sql, dialect):  # type: ignore[arg-type]
        found = sql.find(piece, pos)
        assert found >= 0
        pos = found + len(piece)


def test_split_is_fast_on_large_text() -> None:
    sql = "INSERT INTO t VALUES " + ",".join(f"({i}, 'x;{i}', \"y\")" for i in range(20000)) + "; SELECT 1"
    assert len(split_statements(sql, "mysql")) == 2


def test_expand_executes_all_without_a_version() -> None:
    readings = expand_exec_comments("SELECT 1 /*!50000 ; DELETE FROM t */")
    assert "DELETE FROM t" in readings[0].text
    # a second reading leaves versioned content out
    assert len(readings) == 2 and "DELETE" not in readings[1].text


def test_expand_with_server_version() -> None:
    sql = "SELECT 1 /*!50000 , 2 */ /*!90000 , 3 */ /*M!100100 , 4 */"
    (mysql8,) = expand_exec_comments(sql, server_version="8.0.36")
    assert ", 2" in mysql8.text and ", 3" not in mysql8.text and ", 4" not in mysql8.text
    (maria,) = expand_exec_comments(sql, server_version="10.11.6-MariaDB")
    assert ", 2" in maria.text and ", 4" in maria.text
    assert server_version_number("10.11.6-MariaDB-log") == 101106
    assert server_version_number("garbage") is None


def test_expand_ignores_comment_lookalikes_in_strings() -> None:
    (r,) = expand_exec_comments("SELECT '/*! DROP TABLE t */'")
    assert r.text == "SELECT '/*! DROP TABLE t */'"


def test_expand_respects_quotes_inside_the_comment() -> None:
    (r, *_) = expand_exec_comments("SELECT 1 /*! , '*/' */ FROM t")
    assert r.text.strip().endswith("FROM t")
    assert "'*/'" in r.text


def test_expand_reports_unclosed_comment() -> None:
    (r, *_) = expand_exec_comments("SELECT 1 /*! , 2")
    assert r.problem


def test_no_backslash_reading() -> None:
    assert no_backslash_reading("SELECT 'plain'") is None
    # a valid reading under NO_BACKSLASH_ESCAPES that differs: analysed too
    alt = no_backslash_reading("SELECT 'a\\'; DELETE FROM t; -- '")
    assert alt is not None and "DELETE FROM t" in alt.split("'")[2]
    # O\'Brien is a syntax error without backslash escapes: no second reading
    assert no_backslash_reading("INSERT INTO t VALUES ('O\\'Brien')") is None


def test_strip_leading_comments() -> None:
    assert strip_leading_comments("  /* x */ -- y\n SELECT 1", "mysql") == "SELECT 1"
    assert strip_leading_comments("/*!50000 SELECT */ 1", "mysql").startswith("/*!")
    assert strip_leading_comments("# c\nSELECT 1", "mysql") == "SELECT 1"
