"""Approval lines, requests and their actions in the store (``approvals/service.py`` is the
only caller besides the policy loader). Works alike on SQLite and PostgreSQL.

Concurrency: every state change is a conditional UPDATE on the request's ``version`` (or, for
a use of an approved SQL request, on ``uses_left > 0``) whose row count says whether this
caller won; two nodes acting on one request at once never both succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dbward.errors import ConflictError, NotFoundError
from dbward.store.models import ApprovalActionRow, ApprovalLineRow, ApprovalRequestRow, utcnow

LINE_FIELDS = ("priority", "enabled", "match", "stages", "allow_urgent", "description")


# ----------------------------------------------------------------------------- lines
async def list_lines(s: AsyncSession) -> list[ApprovalLineRow]:
    return list(
        (
            await s.execute(select(ApprovalLineRow).order_by(ApprovalLineRow.priority, ApprovalLineRow.name))
        ).scalars()
    )


async def get_line(s: AsyncSession, name: str) -> ApprovalLineRow | None:
    return (await s.execute(select(ApprovalLineRow).where(ApprovalLineRow.name == name))).scalar_one_or_none()


async def put_line(s: AsyncSession, name: str, *, create: bool, **fields: Any) -> ApprovalLineRow:
    row = await get_line(s, name)
    if create and row is not None:
        raise ConflictError(f"approval line {name} already exists")
    if not create and row is None:
        raise NotFoundError(f"approval line {name} does not exist")
    if row is None:
        row = ApprovalLineRow(name=name)
        s.add(row)
    for k in LINE_FIELDS:
        if k in fields:
            setattr(row, k, fields[k])
    await s.flush()
    return row


async def delete_line(s: AsyncSession, name: str) -> None:
    row = await get_line(s, name)
    if row is None:
        raise NotFoundError(f"approval line {name} does not exist")
    await s.delete(row)
    await s.flush()


# ----------------------------------------------------------------------------- requests
async def add_request(s: AsyncSession, **fields: Any) -> ApprovalRequestRow:
    row = ApprovalRequestRow(**fields)
    s.add(row)
    await s.flush()
    return row


async def get_request(s: AsyncSession, request_id: int) -> ApprovalRequestRow | None:
    return await s.get(ApprovalRequestRow, request_id, populate_existing=True)


async def require_request(s: AsyncSession, request_id: int) -> ApprovalRequestRow:
    row = await get_request(s, request_id)
    if row is None:
        raise NotFoundError(f"there is no approval request #{request_id}")
    return row


async def actions_of(s: AsyncSession, request_ids: Sequence[int]) -> dict[int, list[ApprovalActionRow]]:
    out: dict[int, list[ApprovalActionRow]] = {i: [] for i in request_ids}
    if not request_ids:
        return out
    rows = await s.execute(
        select(ApprovalActionRow)
        .where(ApprovalActionRow.request_id.in_(list(request_ids)))
        .order_by(ApprovalActionRow.id)
    )
    for a in rows.scalars():
        out.setdefault(a.request_id, []).append(a)
    return out


async def add_action(
    s: AsyncSession,
    request_id: int,
    *,
    actor: str,
    action: str,
    stage: int | None = None,
    comment: str | None = None,
    via: str | None = None,
    satisfies: Sequence[str] = (),
) -> ApprovalActionRow:
    row = ApprovalActionRow(
        request_id=request_id,
        actor=actor,
        action=action,
        stage=stage,
        comment=comment,
        via=via,
        satisfies=list(satisfies),
        created_at=utcnow(),
    )
    s.add(row)
    await s.flush()
    return row


async def transition(s: AsyncSession, request_id: int, version: int, **changes: Any) -> bool:
    """Apply ``changes`` if the request is still at ``version``; False when someone else won."""
    res = await s.execute(
        update(ApprovalRequestRow)
        .where(ApprovalRequestRow.id == request_id, ApprovalRequestRow.version == version)
        .values(**changes, version=ApprovalRequestRow.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    assert isinstance(res, CursorResult)
    return res.rowcount == 1


async def list_requests(
    s: AsyncSession,
    *,
    visible_to: tuple[str, Sequence[int]] | None = None,
    requester: str | None = None,
    state: Sequence[str] | None = None,
    type_: str | None = None,
    connection: str | None = None,
    external_ref: str | None = None,
    review_pending: bool | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[ApprovalRequestRow]:
    """Newest first. ``visible_to`` (username, ids they may act on) limits the list to the
    user's own requests and those ids."""
    q = select(ApprovalRequestRow)
    if visible_to is not None:
        who, ids = visible_to
        q = q.where(or_(ApprovalRequestRow.requester == who, ApprovalRequestRow.id.in_(list(ids))))
    if requester is not None:
        q = q.where(ApprovalRequestRow.requester == requester)
    if state:
        q = q.where(ApprovalRequestRow.state.in_(list(state)))
    if type_ is not None:
        q = q.where(ApprovalRequestRow.type == type_)
    if connection is not None:
        q = q.where(ApprovalRequestRow.connection == connection)
    if external_ref is not None:
        q = q.where(ApprovalRequestRow.external_ref == external_ref)
    if review_pending is not None:
        q = q.where(
            (ApprovalRequestRow.review == "pending")
            if review_pending
            else or_(ApprovalRequestRow.review.is_(None), ApprovalRequestRow.review != "pending")
        )
    if before_id is not None:
        q = q.where(ApprovalRequestRow.id < before_id)
    q = q.order_by(ApprovalRequestRow.id.desc()).limit(limit)
    return list((await s.execute(q)).scalars())


async def open_requests(s: AsyncSession) -> list[ApprovalRequestRow]:
    """Pending requests and urgent ones awaiting review (to find those a person may act on)."""
    q = select(ApprovalRequestRow).where(
        or_(ApprovalRequestRow.state == "pending", ApprovalRequestRow.review == "pending")
    )
    return list((await s.execute(q)).scalars())


# ----------------------------------------------------------------------------- SQL uses
async def usable_sql(
    s: AsyncSession, *, requester: str, connection: str, digest: str, now: datetime
) -> list[ApprovalRequestRow]:
    """Approved SQL requests of ``requester`` bound to ``digest`` on ``connection``, in their
    window, with uses left; oldest first."""
    q = (
        select(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.type == "sql",
            ApprovalRequestRow.state == "approved",
            ApprovalRequestRow.requester == requester,
            ApprovalRequestRow.connection == connection,
            ApprovalRequestRow.digest == digest,
            ApprovalRequestRow.uses_left > 0,
            or_(ApprovalRequestRow.valid_from.is_(None), ApprovalRequestRow.valid_from <= now),
            or_(ApprovalRequestRow.valid_until.is_(None), ApprovalRequestRow.valid_until > now),
        )
        .order_by(ApprovalRequestRow.id)
    )
    return list((await s.execute(q)).scalars())


async def pending_sql(
    s: AsyncSession, *, requester: str, connection: str, digest: str
) -> list[ApprovalRequestRow]:
    """Requests of ``requester`` for this statement that the client cannot use now (pending,
    approved with a window that has not opened, scheduled, or being run by dbward)."""
    q = (
        select(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.type == "sql",
            ApprovalRequestRow.state.in_(["pending", "approved", "executing"]),
            ApprovalRequestRow.requester == requester,
            ApprovalRequestRow.connection == connection,
            ApprovalRequestRow.digest == digest,
        )
        .order_by(ApprovalRequestRow.id)
    )
    return list((await s.execute(q)).scalars())


async def consume_use(
    s: AsyncSession, request_id: int, *, statement_id: str, now: datetime, last_state: str
) -> bool:
    """Take one use of an approved SQL request; True when this caller got it.

    One conditional UPDATE: ``uses_left > 0`` and the state and window still hold, so two
    nodes (or two sessions) racing for a single-use approval consume it once between them.
    When it was the last use the state becomes ``last_state`` (executed, or review_pending
    for an urgent request)."""
    left = ApprovalRequestRow.uses_left
    res = await s.execute(
        update(ApprovalRequestRow)
        .where(
            and_(
                ApprovalRequestRow.id == request_id,
                ApprovalRequestRow.state == "approved",
                left > 0,
                or_(ApprovalRequestRow.valid_until.is_(None), ApprovalRequestRow.valid_until > now),
            )
        )
        .values(
            uses_left=left - 1,
            state=_case_last(left, last_state),
            statement_id=statement_id,
            executed_at=now,
            version=ApprovalRequestRow.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    assert isinstance(res, CursorResult)
    return res.rowcount == 1


def _case_last(left: Any, last_state: str) -> Any:
    from sqlalchemy import case, literal

    return case((left <= 1, literal(last_state)), else_=ApprovalRequestRow.state)


async def record_outcome(
    s: AsyncSession, request_id: int, statement_id: str, outcome: dict[str, Any], *, failed: bool
) -> ApprovalRequestRow | None:
    """Append one run's outcome to the request; a failed last run marks it failed."""
    row = await get_request(s, request_id)
    if row is None:
        return None
    data = dict(row.outcome or {})
    runs = list(data.get("runs") or [])
    runs.append({"statement_id": statement_id, **outcome})
    data["runs"] = runs[-50:]
    data.update({k: v for k, v in outcome.items() if k in ("rows_affected", "rows", "error")})
    row.outcome = data
    if failed and row.state == "executed":
        row.state = "failed"
    row.version = row.version + 1
    await s.flush()
    return row


# ----------------------------------------------------------------------------- expiry, effects
async def due_for_expiry(s: AsyncSession, now: datetime, limit: int = 500) -> list[ApprovalRequestRow]:
    q = (
        select(ApprovalRequestRow)
        .where(
            or_(
                and_(ApprovalRequestRow.state == "pending", ApprovalRequestRow.expires_at <= now),
                and_(ApprovalRequestRow.state == "approved", ApprovalRequestRow.valid_until <= now),
            )
        )
        .order_by(ApprovalRequestRow.id)
        .limit(limit)
    )
    return list((await s.execute(q)).scalars())


async def active_effects(s: AsyncSession, type_: str, now: datetime) -> list[ApprovalRequestRow]:
    """Approved requests of ``type_`` (unmask, export) whose period holds now."""
    q = select(ApprovalRequestRow).where(
        ApprovalRequestRow.type == type_,
        ApprovalRequestRow.state == "approved",
        or_(ApprovalRequestRow.valid_from.is_(None), ApprovalRequestRow.valid_from <= now),
        or_(ApprovalRequestRow.valid_until.is_(None), ApprovalRequestRow.valid_until > now),
    )
    return list((await s.execute(q.order_by(ApprovalRequestRow.id))).scalars())


# ----------------------------------------------------------------------------- dbward's executor
# The scheduled executor (``approvals/executor.py``) moves a request through
#   state approved, execution_state NULL|done
#     -> claim:    state executing, execution_state claimed   (before it connects)
#     -> consume:  execution_state running, statement_id      (the gate took the use)
#     -> finish:   state executed|failed|approved, execution_state done|unknown
# Every step is one conditional UPDATE on the claim (``claimed_by``), so a node that lost its
# claim (another node took over a stale one) cannot finish or consume it any more.


async def due_scheduled(s: AsyncSession, now: datetime, limit: int = 50) -> list[ApprovalRequestRow]:
    """Approved SQL requests whose ``scheduled_at`` has come, unclaimed, in their window."""
    q = (
        select(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.type == "sql",
            ApprovalRequestRow.state == "approved",
            ApprovalRequestRow.scheduled_at.is_not(None),
            ApprovalRequestRow.scheduled_at <= now,
            ApprovalRequestRow.execution_state.is_(None),
            ApprovalRequestRow.uses_left > 0,
            or_(ApprovalRequestRow.valid_until.is_(None), ApprovalRequestRow.valid_until > now),
        )
        .order_by(ApprovalRequestRow.scheduled_at, ApprovalRequestRow.id)
        .limit(limit)
    )
    return list((await s.execute(q)).scalars())


async def claim_execution(s: AsyncSession, request_id: int, *, claimer: str, now: datetime) -> bool:
    """Claim an approved SQL request for dbward's executor; True when this caller got it."""
    res = await s.execute(
        update(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.id == request_id,
            ApprovalRequestRow.type == "sql",
            ApprovalRequestRow.state == "approved",
            ApprovalRequestRow.uses_left > 0,
            or_(ApprovalRequestRow.execution_state.is_(None), ApprovalRequestRow.execution_state == "done"),
            or_(ApprovalRequestRow.valid_until.is_(None), ApprovalRequestRow.valid_until > now),
        )
        .values(
            state="executing",
            execution_state="claimed",
            claimed_by=claimer,
            claimed_at=now,
            attempt=ApprovalRequestRow.attempt + 1,
            version=ApprovalRequestRow.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    assert isinstance(res, CursorResult)
    return res.rowcount == 1


async def renew_claim(s: AsyncSession, request_id: int, *, claimer: str, now: datetime) -> bool:
    """The executing node's heartbeat on its claim; False when the claim is no longer its own."""
    res = await s.execute(
        update(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.id == request_id,
            ApprovalRequestRow.state == "executing",
            ApprovalRequestRow.claimed_by == claimer,
        )
        .values(claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(res, CursorResult)
    return res.rowcount == 1


async def executing(s: AsyncSession) -> list[ApprovalRequestRow]:
    """Every request in the executor's hands (to find those whose claim went stale)."""
    q = select(ApprovalRequestRow).where(ApprovalRequestRow.state == "executing")
    return list((await s.execute(q.order_by(ApprovalRequestRow.id))).scalars())


async def take_over(
    s: AsyncSession, request_id: int, *, old_claimer: str, stale_before: datetime, claimer: str, now: datetime
) -> bool:
    """Take a claim whose holder stopped renewing it before ``stale_before``. Loses to the
    holder's own renewal at the same moment, and to another node taking it over first."""
    res = await s.execute(
        update(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.id == request_id,
            ApprovalRequestRow.state == "executing",
            ApprovalRequestRow.claimed_by == old_claimer,
            ApprovalRequestRow.claimed_at < stale_before,
        )
        .values(claimed_by=claimer, claimed_at=now, version=ApprovalRequestRow.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(res, CursorResult)
    return res.rowcount == 1


async def consume_claimed(
    s: AsyncSession, request_id: int, *, claimer: str, statement_id: str, now: datetime
) -> bool:
    """The gate takes the use of a request claimed by dbward's executor (its only use per run)."""
    res = await s.execute(
        update(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.id == request_id,
            ApprovalRequestRow.state == "executing",
            ApprovalRequestRow.execution_state == "claimed",
            ApprovalRequestRow.claimed_by == claimer,
            ApprovalRequestRow.uses_left > 0,
        )
        .values(
            uses_left=ApprovalRequestRow.uses_left - 1,
            execution_state="running",
            statement_id=statement_id,
            executed_at=now,
            version=ApprovalRequestRow.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    assert isinstance(res, CursorResult)
    return res.rowcount == 1


async def finish_execution(
    s: AsyncSession, request_id: int, *, claimer: str, now: datetime, **changes: Any
) -> bool:
    """End the executor's hold on a request (``changes``: state, execution_state, outcome,
    ...); False when the claim is not this caller's any more."""
    res = await s.execute(
        update(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.id == request_id,
            ApprovalRequestRow.state == "executing",
            ApprovalRequestRow.claimed_by == claimer,
        )
        .values(**changes, version=ApprovalRequestRow.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(res, CursorResult)
    return res.rowcount == 1
