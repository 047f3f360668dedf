"""policy/testing.py: a table of cases against a policy set."""

from __future__ import annotations

from datetime import UTC, datetime

from dbward.policy.model import Effect, PolicySet
from dbward.policy.testing import PolicyTestCase, run_policy_tests

PS = PolicySet.model_validate(
    {
        "version": 3,
        "grants": [
            {"name": "ro", "subject": "group:analysts", "connection": "prod", "privileges": "read-only"},
            {"name": "rw", "subject": "user:carol", "connection": "prod", "privileges": ["read-write"]},
        ],
        "connections": [
            {"connection": "prod", "engine": "mysql", "approval_required": ["DELETE WITHOUT WHERE"]}
        ],
    }
)


def test_all_cases_pass() -> None:
    report = run_policy_tests(
        PS,
        [
            {"user": "dan", "groups": "analysts", "connection": "prod", "sql": "SELECT 1", "expect": "allow"},
            {
                "user": "dan",
                "groups": ["analysts"],
                "connection": "prod",
                "sql": "DELETE FROM t WHERE id = 1",
                "expect": "deny",
            },
            {"user": "carol", "connection": "prod", "sql": "DELETE FROM t", "expect": "approval"},
            PolicyTestCase(user="zed", connection="prod", sql="SELECT 1", expect=Effect.DENY),
        ],
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert report.ok, report.render()
    assert report.render().endswith("4 of 4 cases passed")


def test_mismatches_and_errors_are_reported() -> None:
    report = run_policy_tests(
        PS,
        [
            {
                "name": "carol may delete",
                "user": "carol",
                "connection": "prod",
                "sql": "DELETE FROM t",
                "expect": "allow",
            },
            {"user": "carol", "connection": "nowhere", "sql": "SELECT 1", "expect": "deny"},
            {
                "user": "carol",
                "connection": "nowhere",
                "sql": "SELECT 1",
                "expect": "deny",
                "dialect": "postgres",
            },
            {"user": "carol", "sql": "SELECT 1", "expect": "deny"},
        ],
    )
    assert not report.ok
    assert len(report.failures) == 3
    text = report.render()
    assert "carol may delete: MISMATCH" in text
    assert "expected allow, got require_approval" in text
    assert "connection:prod:approval:DELETE WITHOUT WHERE" in text
    assert "has no engine in the policy" in text
    assert "invalid case" in text
    assert text.endswith("1 of 4 cases passed")
