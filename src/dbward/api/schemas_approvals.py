"""Request and response bodies of the approvals API (``api/routers/approvals.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dbward.approvals.model import ApprovalLine

ApprovalLineItem = ApprovalLine


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnmaskColumn(_Body):
    database: str = "*"
    schema_: str = Field("*", alias="schema")
    table: str
    column: str

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RequestCreate(_Body):
    """A new request. ``type`` decides which other fields apply:

    - ``sql``: ``sql`` (one statement), optional ``params`` (the bound values of a prepared
      statement), ``uses`` (default 1), ``database``, ``valid_until`` (end of the window to run it),
      ``scheduled_at`` (dbward runs it itself then, once approved; clients cannot run it);
    - ``access``: ``privileges`` and ``scope``, with ``period_hours`` or ``valid_from``/``valid_until``;
    - ``unmask``: ``columns``, with a period;
    - ``export``: ``max_rows``, with a period.

    ``requester`` files it on someone's behalf (administrators' tokens with approvals:write:
    the ITSM case); ``external_ref`` is the other system's ticket number.
    """

    type: Literal["access", "sql", "unmask", "export"]
    connection: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=4000)
    database: str | None = None
    sql: str | None = Field(default=None, max_length=1_000_000)
    params: list[Any] | None = None
    uses: int = Field(default=1, ge=1)
    scheduled_at: datetime | None = None
    privileges: list[str] = Field(default_factory=list)
    scope: dict[str, list[str]] = Field(default_factory=dict)
    columns: list[UnmaskColumn] = Field(default_factory=list)
    max_rows: int | None = Field(default=None, ge=1)
    period_hours: float | None = Field(default=None, gt=0)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    urgent: bool = False
    requester: str | None = None
    external_ref: str | None = Field(default=None, max_length=256)


class Decide(_Body):
    comment: str | None = Field(default=None, max_length=4000)


class Callback(_Body):
    """An external approval system's decision. The request is named by ``request_id`` or by
    the ``external_ref`` it was filed with; ``approver`` is the dbward user who decided (an
    approver of the request's current stage: the usual rules hold)."""

    request_id: int | None = None
    external_ref: str | None = None
    decision: Literal["approve", "reject"]
    approver: str = Field(min_length=1, max_length=128)
    comment: str | None = Field(default=None, max_length=4000)


class StageOut(BaseModel):
    stage: int
    name: str
    mode: str
    approvers: list[str]
    approved_by: list[str]
    missing: list[str]


class ActionOut(BaseModel):
    actor: str
    action: str
    stage: int | None = None
    comment: str | None = None
    via: str | None = None
    at: datetime | None = None


class RequestOut(BaseModel):
    id: int
    type: str
    state: str
    requester: str
    created_by: str
    external_ref: str | None = None
    connection: str | None = None
    database: str | None = None
    title: str
    reason: str
    sql: str | None = None
    params: list[Any] | None = None
    statement_kind: str | None = None
    privileges: list[str] | None = None
    scope: dict[str, Any] | None = None
    columns: list[dict[str, str]] | None = None
    max_rows: int | None = None
    period_hours: float | None = None
    line: str | None = None
    stage: int
    stages: list[StageOut]
    urgent: bool
    review_required: bool
    uses_allowed: int
    uses_left: int
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    effect: str | None = None
    scheduled_at: datetime | None = None
    #: dbward's executor: claimed | running | done | failed | refused | unknown
    execution_state: str | None = None
    attempt: int = 0
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    statement_id: str | None = None
    outcome: dict[str, Any] = Field(default_factory=dict)
    executed_at: datetime | None = None
    created_at: datetime | None = None
    actions: list[ActionOut] = Field(default_factory=list)
    can_act: bool | None = None


class RequestPage(BaseModel):
    items: list[RequestOut]
    next_cursor: str | None = None
