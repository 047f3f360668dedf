"""The SQL binding: whitespace, comments and keyword case do not matter; literals,
identifiers, executable comments and parameters do."""

from __future__ import annotations

import pytest

from dbward.approvals.digest import statement_digest as d


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_layout_comments_and_keyword_case_do_not_matter(dialect: str) -> None:
    base = d("UPDATE customers SET balance = 10 WHERE id = 1", dialect)  # type: ignore[arg-type]
    for same in (
        "update customers set balance=10 where id=1;",
        "UPDATE customers\n   SET balance = 10  -- fixing ticket 42\n WHERE id = 1",
        "UPDATE /* hi */ customers SET balance = 10 WHERE id = 1",
    ):
        assert d(same, dialect) == base, same  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_literals_and_identifiers_matter(dialect: str) -> None:
    base = d("UPDATE customers SET balance = 10 WHERE id = 1", dialect)  # type: ignore[arg-type]
    for other in (
        "UPDATE customers SET balance = 11 WHERE id = 1",
        "UPDATE customers SET balance = '10' WHERE id = 1",
        "UPDATE customers SET balance = 10 WHERE id = 1 OR 1 = 1",
        "UPDATE customers SET credit = 10 WHERE id = 1",
        "UPDATE clients SET balance = 10 WHERE id = 1",
        "UPDATE customers SET balance = 10 WHERE id IN (1, 2)",
    ):
        assert d(other, dialect) != base, other  # type: ignore[arg-type]


def test_mysql_table_name_case_and_executable_comments_matter() -> None:
    assert d("UPDATE T SET a = 1", "mysql") != d("UPDATE t SET a = 1", "mysql")
    assert d("UPDATE t SET a = 1 /*!, b = 2 */", "mysql") != d("UPDATE t SET a = 1", "mysql")
    # PostgreSQL folds unquoted names, so there the case of a name does not matter
    assert d("UPDATE T SET a = 1", "postgres") == d("update t set A = 1", "postgres")


def test_parameters_bind_too_whatever_python_type_carries_them() -> None:
    sql = "UPDATE customers SET balance = $1 WHERE id = $2"
    assert d(sql, "postgres", [10, 1]) == d(sql, "postgres", ["10", "1"])
    assert d(sql, "postgres", [10, 1]) != d(sql, "postgres", [10, 2])
    assert d(sql, "postgres", [10, 1]) != d(sql, "postgres", None)
    assert d(sql, "postgres", [None]) != d(sql, "postgres", ["None"])
