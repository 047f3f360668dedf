"""The approval state machine: every transition, self-approval, any/all stages, expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dbward.approvals import workflow
from dbward.approvals.model import (
    Action,
    ActionKind,
    ApprovalLine,
    Request,
    RequestState,
    RequestType,
    choose_line,
)
from dbward.domain import Principal

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def who(name: str, *groups: str) -> Principal:
    return Principal(user_id=1, username=name, groups=frozenset(groups))


def line(*stages: dict[str, object], **kw: object) -> ApprovalLine:
    return ApprovalLine.model_validate({"name": "l", "stages": list(stages), **kw})


def req(ln: ApprovalLine, **kw: object) -> Request:
    base = Request(
        id=7,
        type=RequestType.SQL,
        state=RequestState.PENDING,
        requester="carol",
        connection="pg",
        line=ln,
        expires_at=NOW + timedelta(hours=1),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def after(r: Request, p: Principal, step: workflow.Step) -> Request:
    act = Action(actor=p.username, action=ActionKind.APPROVE, stage=r.stage, satisfies=step.satisfies)
    return replace(r, state=step.state, stage=step.stage, actions=(*r.actions, act))


def test_two_stages_need_two_people_and_never_the_requester() -> None:
    r = req(line({"approvers": ["group:leads"]}, {"approvers": ["group:dba"]}))
    with pytest.raises(workflow.NotAllowed, match="own request"):
        workflow.approve(r, who("carol", "leads"), NOW)
    with pytest.raises(workflow.NotAllowed, match="not an approver of stage 1"):
        workflow.approve(r, who("erin", "dba"), NOW)
    dave = who("dave", "leads", "dba")
    s1 = workflow.approve(r, dave, NOW)
    assert (s1.state, s1.stage, s1.event) == (RequestState.PENDING, 2, "stage_approved")
    r = after(r, dave, s1)
    with pytest.raises(workflow.NotAllowed, match="already approved"):
        workflow.approve(r, dave, NOW)
    erin = who("erin", "dba")
    s2 = workflow.approve(r, erin, NOW)
    assert (s2.state, s2.event) == (RequestState.APPROVED, "approved")
    r = after(r, erin, s2)
    with pytest.raises(workflow.InvalidState):
        workflow.approve(r, who("frank", "dba"), NOW)


def test_all_stage_needs_every_listed_approver_and_a_group_counts_once() -> None:
    r = req(line({"mode": "all", "approvers": ["user:dave", "group:dba"]}))
    erin = who("erin", "dba")
    s = workflow.approve(r, erin, NOW)
    assert s.event == "recorded" and s.state is RequestState.PENDING and s.satisfies == ("group:dba",)
    r = after(r, erin, s)
    assert workflow.missing(r) == ["user:dave"]
    with pytest.raises(workflow.NotAllowed, match="already approved stage 1"):
        workflow.approve(r, who("frank", "dba"), NOW)
    s = workflow.approve(r, who("dave"), NOW)
    assert s.state is RequestState.APPROVED


def test_any_stage_is_done_by_one_member() -> None:
    r = req(line({"approvers": ["user:dave", "group:dba"]}))
    assert workflow.approve(r, who("erin", "dba"), NOW).state is RequestState.APPROVED


def test_reject_cancel_and_their_limits() -> None:
    r = req(line({"approvers": ["user:dave"]}))
    with pytest.raises(workflow.NotAllowed):
        workflow.reject(r, who("carol"), NOW)
    with pytest.raises(workflow.NotAllowed):
        workflow.reject(r, who("erin"), NOW)
    assert workflow.reject(r, who("dave"), NOW).state is RequestState.REJECTED
    with pytest.raises(workflow.NotAllowed, match="only the requester"):
        workflow.cancel(r, who("dave"))
    assert workflow.cancel(r, who("dave"), on_behalf=True).state is RequestState.CANCELLED
    assert workflow.cancel(r, who("carol")).state is RequestState.CANCELLED
    done = replace(r, state=RequestState.CANCELLED)
    for fn in (lambda: workflow.cancel(done, who("carol")), lambda: workflow.approve(done, who("dave"), NOW)):
        with pytest.raises(workflow.InvalidState):
            fn()


def test_expiry_of_pending_and_approved_requests() -> None:
    r = req(line({"approvers": ["user:dave"]}))
    assert workflow.expiry(r, NOW) is None
    late = NOW + timedelta(hours=2)
    step = workflow.expiry(r, late)
    assert step is not None and step.state is RequestState.EXPIRED
    with pytest.raises(workflow.InvalidState, match="expired"):
        workflow.approve(r, who("dave"), late)
    approved = replace(r, state=RequestState.APPROVED, valid_until=NOW + timedelta(minutes=5))
    assert workflow.expiry(approved, NOW) is None
    gone = workflow.expiry(approved, NOW + timedelta(minutes=5))
    assert gone is not None and gone.state is RequestState.EXPIRED
    assert workflow.expiry(replace(r, state=RequestState.EXECUTED), late) is None


def test_urgent_review_by_an_approver_not_the_requester() -> None:
    r = req(
        line({"approvers": ["user:dave"]}, allow_urgent=True),
        state=RequestState.REVIEW_PENDING,
        urgent=True,
        review="pending",
    )
    with pytest.raises(workflow.NotAllowed):
        workflow.review(r, who("carol"))
    with pytest.raises(workflow.NotAllowed):
        workflow.review(r, who("erin"))
    assert workflow.review(r, who("dave")).state is RequestState.EXECUTED
    with pytest.raises(workflow.InvalidState):
        workflow.review(replace(r, review="done"), who("dave"))


def test_no_line_means_nobody_can_approve() -> None:
    r = req(line({"approvers": ["user:dave"]}), line=None)
    with pytest.raises(workflow.InvalidState, match="no approval line"):
        workflow.approve(r, who("dave"), NOW)


def test_lines_are_chosen_by_rules_in_priority_order() -> None:
    ledger = line({"approvers": ["user:cfo"]}, name="ledger", priority=10, match={"ledger": True})
    deletes = line(
        {"approvers": ["user:dba"]}, name="deletes", priority=20, match={"statement_kinds": ["delete"]}
    )
    prod = line(
        {"approvers": ["user:ops"]},
        name="prod",
        priority=30,
        match={"connections": ["prod-*"], "request_types": ["sql", "access"]},
    )
    off = line({"approvers": ["user:x"]}, name="off", priority=1, enabled=False)
    lines = [prod, deletes, ledger, off]
    pick = lambda **kw: (choose_line(lines, **kw) or line({"approvers": ["user:none"]}, name="none")).name  # noqa: E731
    assert pick(request_type=RequestType.SQL, connection="prod-1", kind="UPDATE", ledger=True) == "ledger"
    assert pick(request_type=RequestType.SQL, connection="dev", kind="DELETE") == "deletes"
    assert pick(request_type=RequestType.ACCESS, connection="prod-eu") == "prod"
    assert pick(request_type=RequestType.UNMASK, connection="prod-eu") == "none"


def test_a_line_has_one_to_four_stages() -> None:
    with pytest.raises(ValueError):
        line()
    with pytest.raises(ValueError):
        line(*[{"approvers": ["user:a"]}] * 5)
