"""The approval state machine, as pure functions over :class:`~dbward.approvals.model.Request`.

Who may act on a request at which stage, and what each step does to it. The service
(``approvals/service.py``) loads a request, asks here, and writes the answer back with a
conditional update (so two approvers acting at once cannot both move the same stage).

Rules:

- nobody approves, rejects or reviews their own request (the requester may only cancel it);
- a person approves a request once, whatever the stage: a two-stage line needs two people;
- "any": the first approval by a listed approver completes the stage; "all": every listed
  approver must approve, where a group counts as one approval by any one of its members
  (one approval counts for one listed approver: the user entry naming the person first,
  else the first group or role entry not yet satisfied that the person belongs to);
- a rejection by any approver of the current stage rejects the whole request;
- a pending request expires at ``expires_at``; an approved one at ``valid_until``;
- an urgent request is usable at once; once used it waits for its review (``review_pending``)
  by any approver of any stage of its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dbward.approvals.model import FINAL_STATES, ActionKind, Request, RequestState, Stage, StageMode
from dbward.domain import Principal
from dbward.errors import ConflictError, DbwardError
from dbward.policy.matching import subject_matches
from dbward.policy.subject import SubjectType


class NotAllowed(DbwardError):
    """The person may not take this step on this request."""

    sqlstate = "42501"
    mysql_errno = 1142
    mysql_sqlstate = "42000"
    http_status = 403
    code = "forbidden"


class InvalidState(ConflictError):
    """The request is not in a state that allows this step (already decided, expired, ...)."""

    code = "invalid_state"


@dataclass(frozen=True, kw_only=True)
class Step:
    """What a step does: the request's new state and stage, and what to tell people.

    ``event`` is one of the notice events (``approvals/notice.py``) or ``"recorded"`` for
    an approval that counts but does not complete its stage (an "all" stage)."""

    state: RequestState
    stage: int
    event: str
    satisfies: tuple[str, ...] = ()
    message: str = ""


def _key(kind: SubjectType, name: str) -> str:
    return f"{kind.value}:{name}"


def stage_approvals(req: Request, stage: int) -> list[tuple[str, tuple[str, ...]]]:
    """(actor, approvers counted) of every approval recorded at ``stage``."""
    return [
        (a.actor, a.satisfies) for a in req.actions if a.action is ActionKind.APPROVE and a.stage == stage
    ]


def satisfied(req: Request, stage: int) -> set[str]:
    out: set[str] = set()
    for _, sat in stage_approvals(req, stage):
        out.update(sat)
    return out


def missing(req: Request, stage_no: int | None = None) -> list[str]:
    """The listed approvers of a stage (default: the current one) still to approve."""
    no = stage_no or req.stage
    if req.line is None or not 1 <= no <= len(req.line.stages):
        return []
    st = req.line.stages[no - 1]
    done = satisfied(req, no)
    keys = [_key(a.type, a.name) for a in st.approvers]
    if st.mode is StageMode.ANY:
        return [] if done else keys
    return [k for k in keys if k not in done]


def is_approver(stage: Stage, p: Principal) -> bool:
    return any(subject_matches(a, p) for a in stage.approvers)


def _counts_for(stage: Stage, p: Principal, done: set[str]) -> tuple[str, ...]:
    """Which listed approver one approval by ``p`` counts for (see the module docstring)."""
    mine = [a for a in stage.approvers if subject_matches(a, p) and _key(a.type, a.name) not in done]
    if not mine:
        return ()
    users = [a for a in mine if a.type is SubjectType.USER]
    first = users[0] if users else mine[0]
    return (_key(first.type, first.name),)


def _check_open(req: Request, what: str) -> None:
    if req.state in FINAL_STATES:
        raise InvalidState(f"request #{req.id} is {req.state.value}; it cannot be {what} any more")


def _check_not_expired(req: Request, now: datetime) -> None:
    if req.state is RequestState.PENDING and req.expires_at is not None and now >= req.expires_at:
        raise InvalidState(
            f"request #{req.id} expired at {req.expires_at.isoformat()} without a decision; file a new request"
        )


def approve(req: Request, p: Principal, now: datetime) -> Step:
    """An approval by ``p`` at the request's current stage."""
    _check_open(req, "approved")
    if req.state is not RequestState.PENDING:
        raise InvalidState(
            f"request #{req.id} is {req.state.value}, not pending; there is nothing to approve"
        )
    _check_not_expired(req, now)
    if p.username == req.requester:
        raise NotAllowed(f"nobody approves their own request: {p.username} filed request #{req.id}")
    st = req.current_stage
    if st is None or req.line is None:
        raise InvalidState(
            f"request #{req.id} has no approval line, so nobody can approve it; an administrator adds a line "
            "(approval_lines) that serves it, and the requester files it again"
        )
    if any(a.actor == p.username and a.action is ActionKind.APPROVE for a in req.actions):
        raise NotAllowed(
            f"{p.username} has already approved request #{req.id}; a person approves a request once, "
            f"so stage {req.stage} needs another approver ({st.describe()})"
        )
    if not is_approver(st, p):
        raise NotAllowed(
            f"{p.username} is not an approver of stage {req.stage} of request #{req.id}; "
            f"line {req.line.name} asks {st.describe()}"
        )
    done = satisfied(req, req.stage)
    counts = _counts_for(st, p, done)
    if not counts:
        raise NotAllowed(
            f"the approvers {p.username} belongs to have already approved stage {req.stage} of request #{req.id}; "
            f"it still needs {', '.join(missing(req)) or 'nobody'}"
        )
    after = done | set(counts)
    keys = [_key(a.type, a.name) for a in st.approvers]
    complete = st.mode is StageMode.ANY or all(k in after for k in keys)
    if not complete:
        left = [k for k in keys if k not in after]
        return Step(
            state=RequestState.PENDING,
            stage=req.stage,
            event="recorded",
            satisfies=counts,
            message=f"stage {req.stage} still needs {', '.join(left)}",
        )
    if req.stage < len(req.line.stages):
        nxt = req.line.stages[req.stage]
        return Step(
            state=RequestState.PENDING,
            stage=req.stage + 1,
            event="stage_approved",
            satisfies=counts,
            message=f"stage {req.stage} approved; stage {req.stage + 1} asks {nxt.describe()}",
        )
    return Step(
        state=RequestState.APPROVED,
        stage=req.stage,
        event="approved",
        satisfies=counts,
        message=f"request #{req.id} is approved",
    )


def reject(req: Request, p: Principal, now: datetime) -> Step:
    _check_open(req, "rejected")
    if req.state is not RequestState.PENDING:
        raise InvalidState(f"request #{req.id} is {req.state.value}, not pending; there is nothing to reject")
    _check_not_expired(req, now)
    if p.username == req.requester:
        raise NotAllowed(f"a requester cancels their own request instead of rejecting it (request #{req.id})")
    st = req.current_stage
    if st is None or not is_approver(st, p):
        line = req.line.name if req.line is not None else "(none)"
        raise NotAllowed(
            f"{p.username} is not an approver of stage {req.stage} of request #{req.id} (line {line})"
        )
    return Step(
        state=RequestState.REJECTED,
        stage=req.stage,
        event="rejected",
        message=f"request #{req.id} is rejected",
    )


def cancel(req: Request, p: Principal, *, on_behalf: bool = False) -> Step:
    """The requester (or an administrator / the ITSM acting for them) withdraws the request."""
    _check_open(req, "cancelled")
    if p.username != req.requester and not on_behalf:
        raise NotAllowed(f"only the requester ({req.requester}) cancels request #{req.id}")
    if req.state not in (RequestState.PENDING, RequestState.APPROVED):
        raise InvalidState(
            f"request #{req.id} is {req.state.value}; only a pending or approved request is cancelled"
        )
    return Step(
        state=RequestState.CANCELLED,
        stage=req.stage,
        event="cancelled",
        message=f"request #{req.id} is cancelled",
    )


def review(req: Request, p: Principal) -> Step:
    """The mandatory review of an urgent request that ran (or was approved) before its review."""
    if not req.urgent or req.review != "pending":
        raise InvalidState(f"request #{req.id} does not wait for a review")
    if p.username == req.requester:
        raise NotAllowed(f"nobody reviews their own urgent request: {p.username} filed request #{req.id}")
    if req.line is None or not any(is_approver(st, p) for st in req.line.stages):
        raise NotAllowed(
            f"{p.username} is not an approver of the line of request #{req.id}, so cannot review it"
        )
    state = RequestState.EXECUTED if req.state is RequestState.REVIEW_PENDING else req.state
    return Step(state=state, stage=req.stage, event="review", message=f"urgent request #{req.id} is reviewed")


def expiry(req: Request, now: datetime) -> Step | None:
    """The expiry step due now, if any."""
    if req.state is RequestState.PENDING and req.expires_at is not None and now >= req.expires_at:
        return Step(
            state=RequestState.EXPIRED, stage=req.stage, event="expired", message="not decided in time"
        )
    if req.state is RequestState.APPROVED and req.valid_until is not None and now >= req.valid_until:
        return Step(state=RequestState.EXPIRED, stage=req.stage, event="expired", message="its period ended")
    return None


def next_approvers(req: Request) -> list[str]:
    """Who is asked now: the current stage's approvers still to approve."""
    return missing(req) if req.state is RequestState.PENDING else []
