"""Approval requests and approval lines as values: request types and states, the lines
administrators define (one to four stages of approvers with "any" or "all" semantics, chosen by
rules) and the request as the workflow (``approvals/workflow.py``) and the service
(``approvals/service.py``) see it. No I/O; the store keeps these in ``approval_lines``,
``approval_requests`` and ``approval_actions`` (``store/approvals_repo.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dbward.policy.matching import glob
from dbward.policy.subject import Subject


class RequestType(StrEnum):
    ACCESS = "access"  # a grant for a period
    SQL = "sql"  # one statement, run as approved
    UNMASK = "unmask"  # clear values of masked columns for a period
    EXPORT = "export"  # a larger CSV export limit on one connection for a period


class RequestState(StrEnum):
    PENDING = "pending"  # waiting for the current stage's approvers
    APPROVED = "approved"  # every stage approved (or urgent): usable
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not decided in time, or approved and never used within its window
    EXECUTING = "executing"  # claimed by dbward's scheduled executor
    EXECUTED = "executed"  # every use consumed (SQL), outcome recorded
    FAILED = "failed"  # the approved statement ran and the target answered with an error
    REVIEW_PENDING = "review_pending"  # urgent: it ran before approval and awaits its review


#: states from which nothing more happens
FINAL_STATES = frozenset(
    {
        RequestState.REJECTED,
        RequestState.CANCELLED,
        RequestState.EXPIRED,
        RequestState.EXECUTED,
        RequestState.FAILED,
    }
)


class ActionKind(StrEnum):
    REQUEST = "request"  # filed (by the requester, or on their behalf)
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    REVIEW = "review"  # the mandatory review after an urgent execution
    COMMENT = "comment"


class StageMode(StrEnum):
    ANY = "any"  # one approval by any listed approver completes the stage
    ALL = "all"  # every listed approver must approve (a group: any one member, once)


class Stage(BaseModel):
    """One stage of a line: who approves and whether one or all of them must."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    mode: StageMode = StageMode.ANY
    approvers: tuple[Subject, ...] = Field(min_length=1)

    @field_validator("approvers", mode="before")
    @classmethod
    def _subjects(cls, v: Any) -> Any:
        return (v,) if isinstance(v, (str, dict)) else v

    def describe(self) -> str:
        who = ", ".join(str(a) for a in self.approvers)
        if len(self.approvers) == 1:
            return who
        return f"{'all of' if self.mode is StageMode.ALL else 'any of'} {who}"


class LineMatch(BaseModel):
    """Which requests a line serves; every non-empty criterion must hold.

    ``connections``: globs of connection names; ``request_types``; ``statement_kinds``
    (SQL requests: "UPDATE", "DELETE", ...); ``ledger``: True serves only SQL requests that
    change a ledger table of the connection, False only those that do not, None either.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connections: tuple[str, ...] = ()
    request_types: tuple[RequestType, ...] = ()
    statement_kinds: tuple[str, ...] = ()
    ledger: bool | None = None

    @field_validator("connections", "statement_kinds", "request_types", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("statement_kinds")
    @classmethod
    def _upper(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(k.strip().upper().replace("_", " ") for k in v)


class ApprovalLine(BaseModel):
    """An approval line: what it serves, its stages, and whether requesters may go urgent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    priority: int = 100  # lower first; the first enabled matching line serves a request
    enabled: bool = True
    match: LineMatch = LineMatch()
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=4)
    allow_urgent: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ApprovalLine:
        if not 1 <= len(self.stages) <= 4:
            raise ValueError(f"approval line {self.name}: a line has one to four stages")
        return self

    def matches(
        self, *, request_type: RequestType, connection: str | None, kind: str | None, ledger: bool
    ) -> bool:
        m = self.match
        if not self.enabled:
            return False
        if m.request_types and request_type not in m.request_types:
            return False
        if m.connections and (
            connection is None or not any(glob(c).match(connection) for c in m.connections)
        ):
            return False
        if m.statement_kinds and (kind is None or kind.upper() not in m.statement_kinds):
            return False
        return m.ledger is None or m.ledger == ledger


def choose_line(
    lines: list[ApprovalLine] | tuple[ApprovalLine, ...],
    *,
    request_type: RequestType,
    connection: str | None,
    kind: str | None = None,
    ledger: bool = False,
) -> ApprovalLine | None:
    """The first enabled line (by priority, then name) that serves this request."""
    for line in sorted(lines, key=lambda ln: (ln.priority, ln.name)):
        if line.matches(request_type=request_type, connection=connection, kind=kind, ledger=ledger):
            return line
    return None


@dataclass(frozen=True, kw_only=True)
class Action:
    """A step someone took on a request (``approval_actions`` row)."""

    actor: str
    action: ActionKind
    stage: int | None = None
    comment: str | None = None
    via: str | None = None
    satisfies: tuple[str, ...] = ()  # the stage's approvers ("user:bob", "group:dba") it counts for
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, kw_only=True)
class Request:
    """A request as the workflow sees it (``approval_requests`` row, line snapshot parsed)."""

    id: int
    type: RequestType
    state: RequestState
    requester: str
    connection: str | None
    line: ApprovalLine | None  # None: no line applies and the request cannot be approved
    stage: int = 1  # 1-based current stage
    urgent: bool = False
    review: Literal["pending", "done"] | None = None
    expires_at: datetime | None = None  # a pending request expires then
    valid_until: datetime | None = None  # an approved request (its use or its effect) ends then
    uses_left: int = 0
    actions: tuple[Action, ...] = ()

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self.line.stages if self.line is not None else ()

    @property
    def current_stage(self) -> Stage | None:
        if self.line is None or not 1 <= self.stage <= len(self.line.stages):
            return None
        return self.line.stages[self.stage - 1]


@dataclass(frozen=True, kw_only=True)
class ApprovalUse:
    """The broker's answer to the gate for a statement the policy refused or sent for approval.

    ``request_id`` set: an approved SQL request of the user matches the statement exactly and
    (``consumed``) one of its uses was taken for it, so the gate lets it through. Not set:
    ``hint`` is the sentence the refusal ends with (file a request, or which one is pending)."""

    request_id: int | None = None
    consumed: bool = False
    urgent: bool = False
    uses_left: int | None = None
    hint: str = ""
