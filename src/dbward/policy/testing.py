"""``dbward policy test``: run a table of cases against a policy set and report mismatches.

A case names who (user, groups, roles), where (connection, database, client address), what
(SQL) and the expected effect. The CLI reads the cases from a YAML/CSV file and prints
:meth:`PolicyTestReport.render`; CI fails when :attr:`PolicyTestReport.ok` is false.
Counterpart of :func:`dbward.policy.evaluator.explain`, which it uses for each case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from dbward.domain import Principal
from dbward.policy.evaluator import CompiledPolicy, Explanation, explain
from dbward.policy.model import Effect, PolicySet


class PolicyTestCase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    connection: str
    database: str | None = None
    search_path: tuple[str, ...] = ()
    sql: str
    expect: Effect
    dialect: Literal["mysql", "postgres"] | None = None  # default: the connection's engine
    client_ip: str = "127.0.0.1"
    at: datetime | None = None  # the moment to evaluate at (default: now)
    name: str | None = None

    @field_validator("groups", "roles", mode="before")
    @classmethod
    def _set(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("expect", mode="before")
    @classmethod
    def _effect(cls, v: Any) -> Any:
        if isinstance(v, str):
            key = v.strip().lower().replace(" ", "_").replace("-", "_")
            return {"approval": "require_approval", "needs_approval": "require_approval"}.get(key, key)
        return v


@dataclass(frozen=True, slots=True)
class PolicyTestResult:
    index: int
    case: PolicyTestCase
    explanation: Explanation | None
    error: str | None = None

    @property
    def actual(self) -> Effect | None:
        return self.explanation.decision.effect if self.explanation else None

    @property
    def passed(self) -> bool:
        return self.error is None and self.actual is self.case.expect

    def describe(self) -> str:
        label = self.case.name or f"case {self.index + 1}"
        who = self.case.user
        if self.error:
            return f"{label}: ERROR for {who} on {self.case.connection}: {self.error}"
        assert self.explanation is not None
        d = self.explanation.decision
        verdict = "ok" if self.passed else "MISMATCH"
        return (
            f"{label}: {verdict}: {who} on {self.case.connection}: {self.case.sql!r}: "
            f"expected {self.case.expect.value}, got {d.effect.value} ({d.message}) "
            f"[{', '.join(d.rule_ids)}]"
        )


@dataclass(frozen=True, slots=True)
class PolicyTestReport:
    results: tuple[PolicyTestResult, ...]

    @property
    def failures(self) -> tuple[PolicyTestResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self, *, verbose: bool = False) -> str:
        shown = self.results if verbose else self.failures
        lines = [r.describe() for r in shown]
        lines.append(f"{len(self.results) - len(self.failures)} of {len(self.results)} cases passed")
        return "\n".join(lines)


def run_policy_tests(
    policy_set: PolicySet,
    cases: Iterable[PolicyTestCase | Mapping[str, Any]],
    *,
    now: datetime | None = None,
) -> PolicyTestReport:
    """Evaluate every case; a case that cannot be evaluated is reported, never skipped."""
    cp = CompiledPolicy(policy_set)
    results: list[PolicyTestResult] = []
    when = now or datetime.now(UTC)
    for i, raw in enumerate(cases):
        try:
            case = raw if isinstance(raw, PolicyTestCase) else PolicyTestCase.model_validate(raw)
        except ValueError as exc:
            dummy = PolicyTestCase(user="?", connection="?", sql="", expect=Effect.DENY, name=f"case {i + 1}")
            results.append(PolicyTestResult(i, dummy, None, f"invalid case: {exc}"))
            continue
        dialect = case.dialect or cp.connection_policy(case.connection)[0].engine
        if dialect is None:
            results.append(
                PolicyTestResult(
                    i,
                    case,
                    None,
                    f"connection {case.connection} has no engine in the policy; give the case a dialect",
                )
            )
            continue
        principal = Principal(user_id=0, username=case.user, groups=case.groups, roles=case.roles)
        exp = explain(
            cp,
            principal=principal,
            connection=case.connection,
            sql=case.sql,
            dialect=dialect,
            database=case.database,
            search_path=case.search_path,
            client_host=case.client_ip,
            now=case.at or when,
        )
        results.append(PolicyTestResult(i, case, exp))
    return PolicyTestReport(tuple(results))
