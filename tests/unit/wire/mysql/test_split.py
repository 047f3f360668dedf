"""The COM_QUERY statement splitter the gate relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbward.wire.mysql.split import is_load_data_local, split_statements, use_target


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 'a;b'; SELECT \"c;d\"", ["SELECT 'a;b'", 'SELECT "c;d"']),
        ("SELECT 'it''s;'; SELECT 'x\\';y'", ["SELECT 'it''s;'", "SELECT 'x\\';y'"]),
        ("SELECT `we;ird`; SELECT 2", ["SELECT `we;ird`", "SELECT 2"]),
        ("SELECT 1 -- c; x\n; SELECT 2", ["SELECT 1 -- c; x", "SELECT 2"]),
        ("SELECT 1 # c; x\n; SELECT 2", ["SELECT 1 # c; x", "SELECT 2"]),
        ("SELECT 1 /* ; */; SELECT 2", ["SELECT 1 /* ; */", "SELECT 2"]),
        ("/*!40101 SET NAMES utf8; */; DROP TABLE t", ["/*!40101 SET NAMES utf8; */", "DROP TABLE t"]),
        ("SELECT 5--1; SELECT 6", ["SELECT 5--1", "SELECT 6"]),
        (";;  ;", []),
        ("-- only a comment", []),
        (
            "CREATE PROCEDURE p() BEGIN SELECT 1; IF 1 THEN SELECT 2; END IF; END; CALL p()",
            ["CREATE PROCEDURE p() BEGIN SELECT 1; IF 1 THEN SELECT 2; END IF; END", "CALL p()"],
        ),
        (
            "CREATE DEFINER=`a`@`%` TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET NEW.a = 1; END; SELECT 1",
            [
                "CREATE DEFINER=`a`@`%` TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET NEW.a = 1; END",
                "SELECT 1",
            ],
        ),
        (
            "BEGIN NOT ATOMIC SELECT 1; SELECT 2; END; SELECT 3",
            ["BEGIN NOT ATOMIC SELECT 1; SELECT 2; END", "SELECT 3"],
        ),
        ("BEGIN; DELETE FROM t; COMMIT", ["BEGIN", "DELETE FROM t", "COMMIT"]),
        (
            "SELECT CASE WHEN a THEN 1 END FROM t; DELETE FROM t",
            ["SELECT CASE WHEN a THEN 1 END FROM t", "DELETE FROM t"],
        ),
        ("SELECT 'unterminated; DELETE FROM t", ["SELECT 'unterminated; DELETE FROM t"]),
    ],
)
def test_split(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


@given(st.text(max_size=200))
def test_split_never_loses_statement_text(sql: str) -> None:
    parts = split_statements(sql)
    for p in parts:
        assert p in sql
    # every non-blank, non-separator character of the input is in some part or a dropped comment
    assert sum(len(p) for p in parts) <= len(sql)


def test_use_and_load_data_local() -> None:
    assert use_target("USE information_schema") == "information_schema"
    assert use_target("use `we``ird`") == "we`ird"
    assert use_target("SELECT 1") is None
    assert is_load_data_local("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t")
    assert is_load_data_local("load data low_priority local infile 'x' into table t")
    assert is_load_data_local("LOAD /* hide */ DATA /*!LOCAL*/ INFILE 'x' INTO TABLE t")
    assert is_load_data_local("LOAD DATA /*! LOCAL */ INFILE 'x' INTO TABLE t")
    assert not is_load_data_local("LOAD DATA INFILE '/tmp/x' INTO TABLE t")
