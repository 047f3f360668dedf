"""The approval service: requests filed, decided and used, backed by the store.

The API (``api/routers/approvals.py``), the console and the gate (as its
:class:`~dbward.proxy.gate.ApprovalBroker`) all go through :class:`ApprovalService`. Every step
is one store transaction with its audit record (``approval.step``) appended inside it (if the
journal cannot take it, nothing changes) and a notice handed to the notifier afterwards
(``approvals/notice.py``; a delivery failure never fails the step).

Effects of an approval:

- access: a grant ``approval-<id>`` for the requester with ``conditions.valid_until``, so it
  ends by itself; the policy version is bumped and every node reloads;
- unmask: the requester sees the listed columns in clear until ``valid_until`` (the policy
  loader turns approved unmask requests into time-limited exemptions, ``masking/plan.py``);
- export: :meth:`ApprovalService.export_limit_for` gives the console the larger CSV limit;
- sql: the statement may run, exactly as approved, ``uses`` times until ``valid_until``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dbward.approvals import workflow
from dbward.approvals.digest import statement_digest
from dbward.approvals.model import (
    Action,
    ActionKind,
    ApprovalLine,
    ApprovalUse,
    Request,
    RequestState,
    RequestType,
    choose_line,
)
from dbward.approvals.notice import ApprovalNotice, NoticeEvent, Notifier, NullNotifier
from dbward.audit.events import ApprovalEvent
from dbward.audit.journal import AuditJournal
from dbward.config import Settings
from dbward.domain import Principal, SessionInfo, Statement, StatementOrigin, StatementOutcome
from dbward.errors import NotFoundError, ValidationError
from dbward.policy.matching import glob
from dbward.policy.model import BUILTIN_PRIVILEGE_TYPES, Scope
from dbward.sql import analyze
from dbward.sql.model import DDL_KINDS, WRITE_KINDS, ObjectType, StatementKind
from dbward.store import approvals_repo as arepo
from dbward.store import policy_repo, repo
from dbward.store.db import Store
from dbward.store.directory import StoreDirectory
from dbward.store.models import ApprovalActionRow, ApprovalRequestRow, User

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Via = Literal["api", "console", "callback", "system", "proxy"]


def _aware(d: datetime | None) -> datetime | None:
    if d is None:
        return None
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ExecutorRun:
    """A loopback session of dbward's executor (``approvals/executor.py``), known by the exact
    local address of its socket: the one request it may run and the claim it runs under."""

    request_id: int
    claimer: str


@dataclass(frozen=True, kw_only=True)
class SqlRequest:
    sql: str
    params: list[Any] | None = None
    uses: int = 1
    scheduled_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class AccessRequest:
    privileges: tuple[str, ...]
    scope: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest:
    #: each {"database", "schema", "table", "column"}: globs, "*" where any
    columns: tuple[dict[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    max_rows: int


Details = SqlRequest | AccessRequest | UnmaskRequest | ExportRequest


def request_from_row(row: ApprovalRequestRow, actions: Sequence[ApprovalActionRow]) -> Request:
    line = ApprovalLine.model_validate(row.line) if row.line else None
    review = row.review if row.review in ("pending", "done") else None
    return Request(
        id=row.id,
        type=RequestType(row.type),
        state=RequestState(row.state),
        requester=row.requester,
        connection=row.connection,
        line=line,
        stage=row.stage,
        urgent=row.urgent,
        review=review,  # type: ignore[arg-type]
        expires_at=_aware(row.expires_at),
        valid_until=_aware(row.valid_until),
        uses_left=row.uses_left,
        actions=tuple(
            Action(
                actor=a.actor,
                action=ActionKind(a.action),
                stage=a.stage,
                comment=a.comment,
                via=a.via,
                satisfies=tuple(a.satisfies or ()),
                at=_aware(a.created_at) or datetime.now(UTC),
            )
            for a in actions
        ),
    )


def line_to_row(line: ApprovalLine) -> dict[str, Any]:
    d = line.model_dump(mode="json")
    return {k: d[k] for k in ("priority", "enabled", "match", "stages", "allow_urgent", "description")}


def line_from_row(row: Any) -> ApprovalLine:
    return ApprovalLine.model_validate(
        {
            "name": row.name,
            "priority": row.priority,
            "enabled": row.enabled,
            "match": row.match or {},
            "stages": row.stages or [],
            "allow_urgent": row.allow_urgent,
            "description": row.description or "",
        }
    )


class ApprovalService:
    def __init__(
        self,
        store: Store,
        journal: AuditJournal,
        settings: Settings,
        *,
        notifier: Notifier | None = None,
        node_name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.settings = settings
        self.notifier: Notifier = notifier or NullNotifier()
        self.node_name = node_name or socket.gethostname()
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.directory = StoreDirectory(store)
        # local (host, port) of the executor's own sockets to this node's listeners -> its run
        self._executor_sessions: dict[tuple[str, int], ExecutorRun] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def a(self) -> Any:
        return self.settings.approvals

    def base_url(self) -> str:
        api = self.settings.api
        if api.public_url:
            return api.public_url.rstrip("/")
        host = api.listen_host if ":" not in api.listen_host else f"[{api.listen_host}]"
        return f"http://{host}:{api.port}"

    def request_url(self, request_id: int) -> str:
        return f"{self.base_url()}/console/requests/{request_id}"

    def new_request_url(self, connection: str) -> str:
        return f"{self.base_url()}/console/requests/new?connection={connection}"

    async def principal(self, username: str) -> Principal:
        creds = await self.directory.lookup(username)
        if creds is None:
            raise NotFoundError(f"user {username} does not exist or is disabled")
        return creds.principal

    async def _audit(
        self,
        row: ApprovalRequestRow,
        action: str,
        *,
        actor: str | None,
        comment: str | None = None,
        stage: int | None = None,
        statement_id: str | None = None,
        state: str | None = None,
        session: SessionInfo | None = None,
        client_addr: str | None = None,
    ) -> None:
        ev = ApprovalEvent(
            request_id=str(row.id),
            request_type=row.type,
            action=action,
            actor=actor,
            comment=comment,
            stage=stage,
            state=state or row.state,
            urgent=row.urgent,
            review_required=row.review == "pending",
            statement_id=statement_id,
            external_ref=row.external_ref,
            user=actor or row.requester,
            connection=row.connection,
            database=row.database,
            client_addr=client_addr,
            node=self.node_name,
        )
        if session is not None:
            ev.session_id = session.id
            ev.client_addr = session.client.host
            ev.client_program = session.client_program
            ev.database = session.database
        await self.journal.append(ev)

    async def _emails(self, s: AsyncSession, subjects: Sequence[str]) -> tuple[str, ...]:
        names: set[str] = set()
        for key in subjects:
            kind, _, name = key.partition(":")
            try:
                if kind == "user":
                    names.add(name)
                elif kind == "group":
                    names.update(await repo.group_members(s, name))
                elif kind == "role":
                    for t, n in await repo.role_members(s, name):
                        if t == "user":
                            names.add(n)
                        else:
                            names.update(await repo.group_members(s, n))
            except NotFoundError:
                continue
        if not names:
            return ()
        rows = await s.execute(
            select(User.email).where(User.username.in_(sorted(names)), User.email.is_not(None))
        )
        return tuple(sorted({e for e in rows.scalars() if e}))

    async def _notify(
        self,
        s: AsyncSession,
        row: ApprovalRequestRow,
        event: NoticeEvent,
        *,
        actor: str | None,
        comment: str | None = None,
        to: Sequence[str] = (),
        details: dict[str, Any] | None = None,
    ) -> ApprovalNotice:
        return ApprovalNotice(
            event=event,
            request_id=str(row.id),
            request_type=row.type,
            title=row.title,
            requester=row.requester,
            occurred_at=self.clock(),
            actor=actor,
            connection=row.connection,
            comment=comment,
            stage=row.stage,
            urgent=row.urgent,
            url=self.request_url(row.id),
            recipients=await self._emails(s, to),
            details={**self._details(row), **(details or {})},
        )

    async def _send(self, notices: Sequence[ApprovalNotice]) -> None:
        for n in notices:
            try:
                await self.notifier.notify(n)
            except Exception:  # the contract says never raises; a bug there must not fail a step
                log.exception("the approval notifier failed for request %s", n.request_id)

    @staticmethod
    def _details(row: ApprovalRequestRow) -> dict[str, Any]:
        p = dict(row.payload or {})
        out: dict[str, Any] = {"reason": row.reason, "state": row.state}
        if row.type == "sql":
            out.update({"sql": p.get("sql"), "database": row.database, "uses": row.uses_allowed})
        elif row.type == "access":
            out.update({"privileges": p.get("privileges"), "scope": p.get("scope")})
        elif row.type == "unmask":
            out.update({"columns": p.get("columns")})
        elif row.type == "export":
            out.update({"max_rows": p.get("max_rows")})
        if row.valid_until is not None:
            out["valid_until"] = _aware(row.valid_until).isoformat()  # type: ignore[union-attr]
        return out

    async def lines(self, s: AsyncSession) -> list[ApprovalLine]:
        return [line_from_row(r) for r in await arepo.list_lines(s)]

    def _fallback_line(self) -> ApprovalLine | None:
        if not self.a.fallback_approvers:
            return None
        return ApprovalLine.model_validate(
            {"name": "fallback", "stages": [{"name": "approvers", "approvers": self.a.fallback_approvers}]}
        )

    # ------------------------------------------------------------------ filing
    async def create(
        self,
        *,
        requester: str,
        created_by: str,
        type_: RequestType,
        connection: str | None,
        reason: str,
        details: Details,
        database: str | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        period_hours: float | None = None,
        urgent: bool = False,
        external_ref: str | None = None,
        via: Via = "api",
        client_addr: str | None = None,
    ) -> dict[str, Any]:
        """File a request (``created_by`` differs from ``requester`` when an administrator or
        an ITSM files it on the requester's behalf)."""
        now = self.clock()
        reason = reason.strip()
        if not reason:
            raise ValidationError("a request needs a reason: say why the access or statement is needed")
        valid_from, valid_until = _aware(valid_from), _aware(valid_until)
        if valid_until is not None and valid_until <= now:
            raise ValidationError(f"valid_until {valid_until.isoformat()} has already passed")
        if valid_from is not None and valid_until is not None and valid_until <= valid_from:
            raise ValidationError("valid_until must be after valid_from")
        max_period = self.a.max_period_hours
        if period_hours is not None and not 0 < period_hours <= max_period:
            raise ValidationError(
                f"period_hours must be more than 0 and at most {max_period:g} (approvals.max_period_hours)"
            )
        if urgent and type_ is not RequestType.SQL:
            raise ValidationError("only SQL requests can be urgent (run first, reviewed after)")
        async with self.store.transaction() as s:
            user = await repo.get_user(s, requester)
            if user is None or user.disabled:
                raise NotFoundError(
                    f"user {requester} does not exist or is disabled, so cannot be a requester"
                )
            conn = await repo.get_connection(s, connection) if connection else None
            if connection and conn is None:
                raise NotFoundError(f"connection {connection} does not exist")
            if conn is None:
                raise ValidationError(f"a {type_.value} request names the connection it is for")
            payload: dict[str, Any] = {}
            digest: str | None = None
            kind: str | None = None
            ledger = False
            uses = 1
            scheduled_at: datetime | None = None
            db = database or conn.database
            dialect: Literal["mysql", "postgres"] = "mysql" if conn.engine == "mysql" else "postgres"
            if isinstance(details, SqlRequest):
                if type_ is not RequestType.SQL:
                    raise ValidationError("statement details belong to a sql request")
                sql = details.sql.strip()
                if not sql:
                    raise ValidationError("a SQL request needs the statement (sql)")
                if not 1 <= details.uses <= self.a.max_uses:
                    raise ValidationError(
                        f"uses must be between 1 and {self.a.max_uses} (approvals.max_uses)"
                    )
                uses = details.uses
                if details.scheduled_at is not None:
                    _check_schedule(details, dialect, now, valid_until)
                analysis = analyze(sql, dialect, database=db)
                kind = analysis.kind.value
                ledger = _touches_ledger(analysis, conn.policy or {})
                digest = statement_digest(sql, dialect, details.params)
                payload = {
                    "sql": sql,
                    "params": details.params,
                    "dialect": dialect,
                    "kinds": sorted(k.value for k in analysis.kinds),
                    "text_digest": statement_digest(sql, dialect, None),
                    "fingerprint": analysis.fingerprint,
                }
                scheduled_at = _aware(details.scheduled_at)
                title = f"{requester} asks to run {_article(kind)} {kind} on {conn.name}" + (
                    f" ({db})" if db else ""
                )
            elif isinstance(details, AccessRequest):
                if type_ is not RequestType.ACCESS:
                    raise ValidationError("privileges and scope belong to an access request")
                known = {p.name for p in BUILTIN_PRIVILEGE_TYPES} | {
                    p.name for p in await policy_repo.list_privilege_types(s)
                }
                bad = [p for p in details.privileges if p not in known]
                if not details.privileges or bad:
                    raise ValidationError(
                        f"unknown privilege type {bad[0]!r}; known: {', '.join(sorted(known))}"
                        if bad
                        else "an access request names at least one privilege type (read-only, read-write, ...)"
                    )
                try:
                    scope = Scope.model_validate(details.scope or {})
                except PydanticValidationError as exc:
                    raise ValidationError(f"the scope is not valid: {exc.errors()[0]['msg']}") from None
                payload = {
                    "privileges": list(details.privileges),
                    "scope": scope.model_dump(mode="json", exclude_defaults=True),
                }
                title = f"{requester} asks for {', '.join(details.privileges)} on {conn.name} ({scope.describe()})"
            elif isinstance(details, UnmaskRequest):
                if type_ is not RequestType.UNMASK:
                    raise ValidationError("columns belong to an unmask request")
                cols = [_column(c) for c in details.columns]
                if not cols:
                    raise ValidationError("an unmask request names at least one column")
                payload = {"columns": cols}
                names = ", ".join(f"{c['table']}.{c['column']}" for c in cols[:3])
                title = f"{requester} asks to see {names}{' and more' if len(cols) > 3 else ''} unmasked on {conn.name}"
            else:
                if type_ is not RequestType.EXPORT:
                    raise ValidationError("max_rows belongs to an export request")
                if not 1 <= details.max_rows <= 10_000_000:
                    raise ValidationError("max_rows must be between 1 and 10000000")
                payload = {"max_rows": details.max_rows}
                title = f"{requester} asks to export up to {details.max_rows} rows from {conn.name}"
            if period_hours is not None:
                payload["period_hours"] = period_hours
            line = (
                choose_line(
                    await self.lines(s), request_type=type_, connection=conn.name, kind=kind, ledger=ledger
                )
                or self._fallback_line()
            )
            if line is None:
                raise ValidationError(
                    f"no approval line serves a {type_.value} request on connection {conn.name}"
                    + (f" for {kind}" if kind else "")
                    + "; an administrator adds one (approval_lines in `dbward apply`, or the API)"
                )
            if urgent and not (line.allow_urgent and self.a.urgent_allowed):
                why = (
                    "approvals.urgent_allowed is off"
                    if not self.a.urgent_allowed
                    else f"approval line {line.name} does not allow it (allow_urgent)"
                )
                raise ValidationError(f"this request cannot be urgent: {why}")
            state = RequestState.APPROVED if urgent else RequestState.PENDING
            row = await arepo.add_request(
                s,
                type=type_.value,
                state=state.value,
                requester=requester,
                created_by=created_by,
                external_ref=external_ref,
                connection=conn.name,
                database=db,
                title=title,
                reason=reason,
                payload=payload,
                digest=digest,
                statement_kind=kind,
                line_name=line.name,
                line=line.model_dump(mode="json"),
                stage=1,
                urgent=urgent,
                review="pending" if urgent else None,
                uses_allowed=uses,
                uses_left=uses,
                valid_from=valid_from,
                valid_until=valid_until,
                expires_at=now + timedelta(hours=self.a.request_lifetime_hours),
                scheduled_at=scheduled_at,
                attempt=0,
                outcome={},
                version=1,
            )
            if urgent:
                row.valid_until = valid_until or now + timedelta(hours=self.a.sql_window_hours)
                row.decided_at, row.decided_by = now, requester
            await arepo.add_action(s, row.id, actor=created_by, action="request", comment=reason, via=via)
            await self._audit(row, "requested", actor=created_by, comment=reason, client_addr=client_addr)
            notices = [
                await self._notify(
                    s,
                    row,
                    NoticeEvent.REQUESTED,
                    actor=created_by,
                    comment=reason,
                    to=[f"{a.type.value}:{a.name}" for a in line.stages[0].approvers],
                )
            ]
            if urgent:
                await self._audit(
                    row,
                    "approved",
                    actor=requester,
                    comment="urgent: usable at once; its review by an approver is mandatory",
                )
                notices.append(
                    await self._notify(
                        s,
                        row,
                        NoticeEvent.REVIEW_REQUIRED,
                        actor=requester,
                        comment="urgent request: it may run before anyone approves it; review it",
                        to=_all_approvers(line),
                    )
                )
            out = await self._view(s, row)
        await self._send(notices)
        return out

    # ------------------------------------------------------------------ deciding
    async def _load(self, s: AsyncSession, request_id: int) -> tuple[ApprovalRequestRow, Request]:
        row = await arepo.require_request(s, request_id)
        acts = (await arepo.actions_of(s, [row.id]))[row.id]
        return row, request_from_row(row, acts)

    async def approve(
        self,
        request_id: int,
        actor: str,
        comment: str | None = None,
        *,
        via: Via = "api",
        client_addr: str | None = None,
    ) -> dict[str, Any]:
        p = await self.principal(actor)
        now = self.clock()
        notices: list[ApprovalNotice] = []
        async with self.store.transaction() as s:
            row, req = await self._load(s, request_id)
            step = workflow.approve(req, p, now)
            changes: dict[str, Any] = {"state": step.state.value, "stage": step.stage}
            if step.state is RequestState.APPROVED:
                changes.update(decided_at=now, decided_by=actor)
                changes.update(await self._effects(s, row, now))
            await _transition(s, row, actor, "approving", **changes)
            await arepo.add_action(
                s,
                row.id,
                actor=actor,
                action="approve",
                stage=req.stage,
                comment=comment,
                via=via,
                satisfies=step.satisfies,
            )
            row = await arepo.require_request(s, row.id)
            action = {"recorded": "stage_approved", "stage_approved": "stage_approved"}.get(
                step.event, step.event
            )
            await self._audit(
                row, action, actor=actor, comment=comment, stage=req.stage, client_addr=client_addr
            )
            if step.event == "stage_approved":
                nxt = row.stage
                assert req.line is not None
                to = [f"{a.type.value}:{a.name}" for a in req.line.stages[nxt - 1].approvers]
                notices.append(
                    await self._notify(
                        s, row, NoticeEvent.STAGE_APPROVED, actor=actor, comment=comment, to=to
                    )
                )
            elif step.event == "approved":
                notices.append(
                    await self._notify(
                        s,
                        row,
                        NoticeEvent.APPROVED,
                        actor=actor,
                        comment=comment,
                        to=[f"user:{row.requester}"],
                    )
                )
            out = await self._view(s, row)
        await self._send(notices)
        return out

    async def _effects(self, s: AsyncSession, row: ApprovalRequestRow, now: datetime) -> dict[str, Any]:
        """What the last approval does, as column changes of the request (and store rows)."""
        p = dict(row.payload or {})
        start = _aware(row.valid_from) or now
        if row.type == "sql":
            # a scheduled request's window opens at its time, so approving early does not
            # let it expire before dbward runs it
            opens = max(now, _aware(row.scheduled_at) or now)
            until = _aware(row.valid_until) or opens + timedelta(hours=self.a.sql_window_hours)
            return {"valid_until": until, "valid_from": row.valid_from}
        hours = float(p.get("period_hours") or self.a.default_period_hours)
        until = _aware(row.valid_until) or start + timedelta(hours=hours)
        changes: dict[str, Any] = {"valid_from": start, "valid_until": until}
        if row.type == "access":
            name = f"approval-{row.id}"
            await repo.create_grant(
                s,
                name,
                subject_type="user",
                subject_name=row.requester,
                connection=row.connection or "",
                privileges=list(p.get("privileges") or []),
                scope={k: v for k, v in dict(p.get("scope") or {}).items() if v},
                conditions={"valid_from": start.isoformat(), "valid_until": until.isoformat()},
                description=f"approved request #{row.id}: {row.reason}"[:1000],
            )
            changes["effect_ref"] = name
        else:  # unmask, export: the policy loader and the console read approved requests
            await repo.bump_policy_version(s)
        return changes

    async def reject(
        self,
        request_id: int,
        actor: str,
        comment: str | None = None,
        *,
        via: Via = "api",
        client_addr: str | None = None,
    ) -> dict[str, Any]:
        p = await self.principal(actor)
        now = self.clock()
        async with self.store.transaction() as s:
            row, req = await self._load(s, request_id)
            step = workflow.reject(req, p, now)
            await _transition(
                s, row, actor, "rejecting", state=step.state.value, decided_at=now, decided_by=actor
            )
            await arepo.add_action(
                s, row.id, actor=actor, action="reject", stage=req.stage, comment=comment, via=via
            )
            row = await arepo.require_request(s, row.id)
            await self._audit(
                row, "rejected", actor=actor, comment=comment, stage=req.stage, client_addr=client_addr
            )
            notice = await self._notify(
                s, row, NoticeEvent.REJECTED, actor=actor, comment=comment, to=[f"user:{row.requester}"]
            )
            out = await self._view(s, row)
        await self._send([notice])
        return out

    async def cancel(
        self,
        request_id: int,
        actor: str,
        comment: str | None = None,
        *,
        on_behalf: bool = False,
        via: Via = "api",
        client_addr: str | None = None,
    ) -> dict[str, Any]:
        p = await self.principal(actor)
        now = self.clock()
        async with self.store.transaction() as s:
            row, req = await self._load(s, request_id)
            step = workflow.cancel(req, p, on_behalf=on_behalf)
            changes: dict[str, Any] = {"state": step.state.value, "decided_at": now, "decided_by": actor}
            if row.type == "access" and row.effect_ref:
                # an approved access request withdrawn: its grant goes with it
                await _drop_grant(s, row.effect_ref)
            elif row.type in ("unmask", "export") and row.state == "approved":
                await repo.bump_policy_version(s)
            await _transition(s, row, actor, "cancelling", **changes)
            await arepo.add_action(s, row.id, actor=actor, action="cancel", comment=comment, via=via)
            row = await arepo.require_request(s, row.id)
            await self._audit(row, "cancelled", actor=actor, comment=comment, client_addr=client_addr)
            to = workflow.next_approvers(req) or ([f"user:{row.requester}"] if actor != row.requester else [])
            notice = await self._notify(s, row, NoticeEvent.CANCELLED, actor=actor, comment=comment, to=to)
            out = await self._view(s, row)
        await self._send([notice])
        return out

    async def review(
        self,
        request_id: int,
        actor: str,
        comment: str | None = None,
        *,
        via: Via = "api",
        client_addr: str | None = None,
    ) -> dict[str, Any]:
        """The mandatory review of an urgent request."""
        p = await self.principal(actor)
        async with self.store.transaction() as s:
            row, req = await self._load(s, request_id)
            step = workflow.review(req, p)
            await _transition(s, row, actor, "reviewing", state=step.state.value, review="done")
            await arepo.add_action(s, row.id, actor=actor, action="review", comment=comment, via=via)
            row = await arepo.require_request(s, row.id)
            await self._audit(row, "review", actor=actor, comment=comment, client_addr=client_addr)
            out = await self._view(s, row)
        return out

    async def expire_due(self) -> list[int]:
        """Expire every request due now; idempotent (two nodes at once expire each request once)."""
        now = self.clock()
        done: list[int] = []
        notices: list[ApprovalNotice] = []
        async with self.store.transaction() as s:
            for row in await arepo.due_for_expiry(s, now):
                acts = (await arepo.actions_of(s, [row.id]))[row.id]
                step = workflow.expiry(request_from_row(row, acts), now)
                if step is None:
                    continue
                if not await arepo.transition(s, row.id, row.version, state=step.state.value):
                    continue  # another node expired it (or someone acted) first
                if row.type in ("unmask", "export") and row.state == "approved":
                    await repo.bump_policy_version(s)
                await arepo.add_action(
                    s,
                    row.id,
                    actor="dbward",
                    action="comment",
                    comment=f"expired: {step.message}",
                    via="system",
                )
                row = await arepo.require_request(s, row.id)
                await self._audit(row, "expired", actor=None, comment=step.message)
                notices.append(
                    await self._notify(
                        s,
                        row,
                        NoticeEvent.EXPIRED,
                        actor=None,
                        comment=step.message,
                        to=[f"user:{row.requester}"],
                    )
                )
                done.append(row.id)
        await self._send(notices)
        return done

    # ------------------------------------------------------------------ reading
    async def _view(self, s: AsyncSession, row: ApprovalRequestRow) -> dict[str, Any]:
        acts = (await arepo.actions_of(s, [row.id]))[row.id]
        return request_view(row, acts)

    async def may_act(self, req: Request, p: Principal) -> bool:
        if p.username == req.requester:
            return False
        if req.state is RequestState.PENDING and req.current_stage is not None:
            return workflow.is_approver(req.current_stage, p)
        return (
            req.review == "pending"
            and req.line is not None
            and any(workflow.is_approver(st, p) for st in req.line.stages)
        )

    @staticmethod
    def _approver_anywhere(req: Request, p: Principal) -> bool:
        return req.line is not None and any(workflow.is_approver(st, p) for st in req.line.stages)

    async def get(self, request_id: int, *, viewer: str | None = None) -> dict[str, Any]:
        """One request; ``viewer`` set: only if it is theirs or they approve on its line."""
        async with self.store.session() as s:
            row, req = await self._load(s, request_id)
            if viewer is not None and row.requester != viewer:
                p = await self.principal(viewer)
                if not self._approver_anywhere(req, p) and not any(a.actor == viewer for a in req.actions):
                    raise NotFoundError(f"there is no approval request #{request_id} that {viewer} may see")
            view = request_view(row, list((await arepo.actions_of(s, [row.id]))[row.id]))
            if viewer is not None:
                view["can_act"] = await self.may_act(req, await self.principal(viewer))
            return view

    async def list_requests(
        self,
        *,
        viewer: str | None = None,
        requester: str | None = None,
        state: Sequence[str] | None = None,
        type_: str | None = None,
        connection: str | None = None,
        external_ref: str | None = None,
        review_pending: bool | None = None,
        to_act: bool = False,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first. ``viewer`` set: their own requests and those on whose line they
        approve. ``to_act``: only those the viewer can approve or review now."""
        async with self.store.session() as s:
            visible: tuple[str, list[int]] | None = None
            p: Principal | None = None
            if viewer is not None:
                p = await self.principal(viewer)
                ids: list[int] = []
                rows = await s.execute(
                    select(ApprovalRequestRow.id, ApprovalRequestRow.line, ApprovalRequestRow.requester)
                )
                for rid, line, who in rows.all():
                    if who == viewer or not line:
                        continue
                    ln = ApprovalLine.model_validate(line)
                    if any(workflow.is_approver(st, p) for st in ln.stages):
                        ids.append(rid)
                visible = (viewer, ids)
            out: list[dict[str, Any]] = []
            cursor = before_id
            while len(out) < limit:
                batch = await arepo.list_requests(
                    s,
                    visible_to=visible,
                    requester=requester,
                    state=state,
                    type_=type_,
                    connection=connection,
                    external_ref=external_ref,
                    review_pending=review_pending,
                    before_id=cursor,
                    limit=limit,
                )
                if not batch:
                    break
                acts = await arepo.actions_of(s, [r.id for r in batch])
                for r in batch:
                    view = request_view(r, acts[r.id])
                    if p is not None:
                        view["can_act"] = await self.may_act(request_from_row(r, acts[r.id]), p)
                        if to_act and not view["can_act"]:
                            continue
                    out.append(view)
                    if len(out) >= limit:
                        break
                cursor = batch[-1].id
                if not to_act:
                    break
            return out

    # ------------------------------------------------------------------ lines
    async def put_line(self, line: ApprovalLine, *, create: bool) -> ApprovalLine:
        async with self.store.transaction() as s:
            await arepo.put_line(s, line.name, create=create, **line_to_row(line))
        return line

    async def list_lines(self) -> list[ApprovalLine]:
        async with self.store.session() as s:
            return await self.lines(s)

    # ------------------------------------------------------------------ effects read elsewhere
    async def export_limit_for(self, user: str, connection: str) -> int | None:
        """The largest CSV export limit an approved export request gives ``user`` on
        ``connection`` now (None: no such request; the connection's limit applies)."""
        now = self.clock()
        async with self.store.session() as s:
            rows = await arepo.active_effects(s, "export", now)
        limits = [
            int((r.payload or {}).get("max_rows") or 0)
            for r in rows
            if r.requester == user and r.connection == connection
        ]
        return max(limits) if limits else None

    # ------------------------------------------------------------------ the gate's broker
    async def use_for(self, session: SessionInfo, statement: Statement, statement_id: str) -> ApprovalUse:
        """Whether an approved SQL request of the session's user matches ``statement`` exactly
        (connection, database, text and literals, parameters) now; if so one use is taken
        (atomically: a single-use approval is used once however many nodes race for it).

        A PREPARE (Parse, COM_STMT_PREPARE) carries no parameter values: it is let through
        when an approved request's text matches, without taking a use; each execution then
        takes one."""
        run = self.executor_run(session)
        if run is not None:
            return await self._use_for_executor(run, session, statement, statement_id)
        user = session.principal.username
        connection = session.target.name
        dialect: Literal["mysql", "postgres"] = (
            "mysql" if session.target.engine.value == "mysql" else "postgres"
        )
        database = statement.database if statement.database is not None else session.database
        now = self.clock()
        prepare = statement.origin is StatementOrigin.PREPARE
        digest = statement_digest(statement.sql, dialect, None if prepare else statement.params)
        async with self.store.transaction() as s:
            if prepare:
                rows = await s.execute(
                    select(ApprovalRequestRow).where(
                        ApprovalRequestRow.type == "sql",
                        ApprovalRequestRow.state == "approved",
                        ApprovalRequestRow.requester == user,
                        ApprovalRequestRow.connection == connection,
                        ApprovalRequestRow.uses_left > 0,
                    )
                )
                cands = [
                    r
                    for r in rows.scalars()
                    if (r.payload or {}).get("text_digest") == digest
                    and r.scheduled_at is None  # a scheduled request is run by dbward only
                    and _db_ok(r.database, database)
                    and _in_window(r, now)
                ]
                if cands:
                    r = cands[0]
                    return ApprovalUse(
                        request_id=r.id, consumed=False, urgent=r.urgent, uses_left=r.uses_left
                    )
            else:
                for r in await arepo.usable_sql(
                    s, requester=user, connection=connection, digest=digest, now=now
                ):
                    if not _db_ok(r.database, database) or r.scheduled_at is not None:
                        continue  # a scheduled request is run by dbward only
                    last = "review_pending" if r.urgent and r.review == "pending" else "executed"
                    if await arepo.consume_use(s, r.id, statement_id=statement_id, now=now, last_state=last):
                        fresh = await arepo.require_request(s, r.id)
                        await self._audit(
                            fresh,
                            "used",
                            actor=user,
                            statement_id=statement_id,
                            comment=f"{fresh.uses_left} of {fresh.uses_allowed} uses left",
                            session=session,
                        )
                        return ApprovalUse(
                            request_id=r.id, consumed=True, urgent=r.urgent, uses_left=fresh.uses_left
                        )
            waiting = [
                r
                for r in await arepo.pending_sql(s, requester=user, connection=connection, digest=digest)
                if _db_ok(r.database, database)
            ]
        return ApprovalUse(hint=self._hint(waiting, connection, now))

    def _hint(self, waiting: Sequence[ApprovalRequestRow], connection: str, now: datetime) -> str:
        for r in waiting:
            if r.state == "pending":
                line = ApprovalLine.model_validate(r.line) if r.line else None
                stage = (
                    line.stages[r.stage - 1]
                    if line is not None and 1 <= r.stage <= len(line.stages)
                    else None
                )
                who = stage.describe() if stage is not None else "nobody (the request has no approval line)"
                return (
                    f"Request #{r.id} for this statement is waiting for approval by {who} (stage {r.stage})."
                )
            if r.state == "executing":
                return (
                    f"Approved request #{r.id} for this statement is being run by dbward now; "
                    "its outcome is recorded on the request."
                )
            at = _aware(r.scheduled_at)
            if at is not None:
                return (
                    f"Approved request #{r.id} for this statement is scheduled: dbward runs it itself at "
                    f"{at.isoformat()}, so it cannot be run from a client; its outcome is recorded on the request."
                )
            vf = _aware(r.valid_from)
            if vf is not None and vf > now:
                return f"Approved request #{r.id} for this statement can be used from {vf.isoformat()}."
        return (
            "This statement needs an approved SQL request: file one in the console at "
            f"{self.new_request_url(connection)} (or with the dbward API: POST /api/v1/approvals/requests); "
            "once approved, run exactly the same statement again."
        )

    async def completed(
        self, session: SessionInfo, request_id: int, statement_id: str, outcome: StatementOutcome
    ) -> None:
        """Record the outcome of a statement run under an approved request."""
        result: dict[str, Any] = {
            "rows_affected": outcome.affected,
            "rows": outcome.rows,
            "error": outcome.error,
            "at": self.clock().isoformat(),
        }
        notices: list[ApprovalNotice] = []
        async with self.store.transaction() as s:
            row = await arepo.record_outcome(
                s, request_id, statement_id, result, failed=outcome.error is not None
            )
            if row is None:
                return
            if row.state == "executing":
                return  # dbward's executor ran it: it records the end, audits and notifies
            if row.uses_left == 0 or outcome.error is not None:
                await self._audit(
                    row,
                    "executed",
                    actor=session.principal.username,
                    statement_id=statement_id,
                    comment=(
                        f"failed: {outcome.error}"
                        if outcome.error
                        else f"{outcome.affected or 0} rows affected"
                    ),
                    session=session,
                )
            notices.append(
                await self._notify(
                    s,
                    row,
                    NoticeEvent.EXECUTED,
                    actor=session.principal.username,
                    to=[f"user:{row.requester}"],
                    details={"outcome": result, "statement_id": statement_id},
                )
            )
            if row.urgent and row.review == "pending":
                line = ApprovalLine.model_validate(row.line) if row.line else None
                notices.append(
                    await self._notify(
                        s,
                        row,
                        NoticeEvent.REVIEW_REQUIRED,
                        actor=session.principal.username,
                        comment="an urgent request ran before its approval; its review is mandatory",
                        to=_all_approvers(line) if line is not None else [],
                    )
                )
        await self._send(notices)

    # ------------------------------------------------------------------ dbward's executor
    # (approvals/executor.py drives these; the gate reaches _use_for_executor through use_for)
    def expect_executor(self, local: tuple[str, int], run: ExecutorRun) -> None:
        """The executor bound a socket to ``local`` and will connect it to this node's listener
        to run ``run``; the session from exactly that address may take that request's use."""
        self._executor_sessions[local] = run

    def forget_executor(self, local: tuple[str, int]) -> None:
        self._executor_sessions.pop(local, None)

    def executor_run(self, session: SessionInfo) -> ExecutorRun | None:
        """The run of dbward's executor this session belongs to, if it is one. Only a direct
        connection counts: the kernel lets no other socket hold the executor's local address
        while it is bound, so no client can pose as the executor (its program name proves
        nothing)."""
        c = session.client
        if c.source != "direct":
            return None
        return self._executor_sessions.get((c.host, c.port))

    def executes(self, session: SessionInfo) -> bool:
        return self.executor_run(session) is not None

    async def _use_for_executor(
        self, run: ExecutorRun, session: SessionInfo, statement: Statement, statement_id: str
    ) -> ApprovalUse:
        """The executor's session takes the use of the request it claimed, and nothing else."""
        dialect: Literal["mysql", "postgres"] = (
            "mysql" if session.target.engine.value == "mysql" else "postgres"
        )
        database = statement.database if statement.database is not None else session.database
        prepare = statement.origin is StatementOrigin.PREPARE
        digest = statement_digest(statement.sql, dialect, None if prepare else statement.params)
        rid = run.request_id
        async with self.store.transaction() as s:
            row = await arepo.get_request(s, rid)
            if (
                row is None
                or row.connection != session.target.name
                or row.requester != session.principal.username
                or not _db_ok(row.database, database)
                or digest != ((row.payload or {}).get("text_digest") if prepare else row.digest)
            ):
                return ApprovalUse(
                    hint=f"dbward's executor may run only the statement of approved request #{rid} "
                    "in this session, and this statement is not it."
                )
            if prepare:
                return ApprovalUse(request_id=rid, consumed=False, urgent=row.urgent, uses_left=row.uses_left)
            now = self.clock()
            if not await arepo.consume_claimed(
                s, rid, claimer=run.claimer, statement_id=statement_id, now=now
            ):
                return ApprovalUse(
                    hint=f"request #{rid} is not claimed for this run any more (it ran, or another node "
                    "took it over); dbward never runs an approved statement twice."
                )
            fresh = await arepo.require_request(s, rid)
            await self._audit(
                fresh,
                "used",
                actor=fresh.requester,
                statement_id=statement_id,
                comment=f"run by dbward's executor (attempt {fresh.attempt}); "
                f"{fresh.uses_left} of {fresh.uses_allowed} uses left",
                session=session,
            )
            return ApprovalUse(request_id=rid, consumed=True, urgent=fresh.urgent, uses_left=fresh.uses_left)

    async def due_scheduled(self) -> list[int]:
        """Ids of approved scheduled requests whose time has come and nobody claimed."""
        async with self.store.session() as s:
            return [r.id for r in await arepo.due_scheduled(s, self.clock())]

    async def check_execute_now(self, request_id: int, actor: str) -> None:
        """Whether ``actor`` may have dbward run approved request ``request_id`` now; raises why not."""
        now = self.clock()
        async with self.store.session() as s:
            row = await arepo.get_request(s, request_id)
            if row is None or row.requester != actor:
                raise NotFoundError(f"there is no approval request #{request_id} of {actor} to execute")
            if row.type != "sql":
                raise workflow.InvalidState(
                    f"request #{row.id} is an {row.type} request; only a SQL request is executed"
                )
            if row.state != "approved" or row.uses_left < 1:
                raise workflow.InvalidState(
                    f"request #{row.id} is {row.state}; dbward executes only an approved request with a use left"
                )
            at = _aware(row.scheduled_at)
            if at is not None and at > now:
                raise workflow.InvalidState(
                    f"request #{row.id} is scheduled for {at.isoformat()}; dbward runs it then, not before"
                )
            if not _in_window(row, now):
                raise workflow.InvalidState(
                    f"request #{row.id} can be run only from {_iso(row.valid_from)} until {_iso(row.valid_until)}"
                )
            p = dict(row.payload or {})
            if p.get("params") and p.get("dialect") == "mysql":
                raise workflow.InvalidState(
                    f"request #{row.id} has bound parameters on a MySQL connection, which dbward's executor "
                    "cannot send as a prepared statement; run it from your own client"
                )

    async def claim_execution(
        self, request_id: int, claimer: str, *, actor: str | None, via: Via = "system"
    ) -> Execution | None:
        """Claim an approved SQL request for this node's executor (before it connects); None
        when it is not claimable (another node claimed it, it was cancelled, ...)."""
        now = self.clock()
        async with self.store.transaction() as s:
            if not await arepo.claim_execution(s, request_id, claimer=claimer, now=now):
                return None
            row = await arepo.require_request(s, request_id)
            who = "scheduled" if actor is None else f"asked by {actor}"
            comment = f"dbward's executor on {claimer} runs it ({who}; attempt {row.attempt})"
            await arepo.add_action(
                s, row.id, actor=actor or "dbward", action="comment", comment=comment, via=via
            )
            await self._audit(row, "executing", actor=actor, comment=comment)
            return Execution.of(row)

    async def executions(self) -> list[Execution]:
        """Every request in an executor's hands now."""
        async with self.store.session() as s:
            return [Execution.of(r) for r in await arepo.executing(s)]

    async def execution(self, request_id: int) -> Execution | None:
        async with self.store.session() as s:
            row = await arepo.get_request(s, request_id)
            return Execution.of(row) if row is not None else None

    async def renew_claim(self, request_id: int, claimer: str) -> bool:
        async with self.store.transaction() as s:
            return await arepo.renew_claim(s, request_id, claimer=claimer, now=self.clock())

    async def take_over(self, ex: Execution, claimer: str, stale_before: datetime) -> bool:
        assert ex.claimed_by is not None
        async with self.store.transaction() as s:
            return await arepo.take_over(
                s,
                ex.id,
                old_claimer=ex.claimed_by,
                stale_before=stale_before,
                claimer=claimer,
                now=self.clock(),
            )

    async def finish_execution(
        self,
        request_id: int,
        claimer: str,
        *,
        result: dict[str, Any],
        outcome: Literal["done", "failed", "refused", "unknown", "retry"],
        comment: str,
    ) -> dict[str, Any] | None:
        """End the executor's run of a request and record ``result`` on it: its rows affected,
        error (with SQLSTATE or errno) and statement id. ``outcome``: done (the target
        answered; the request is executed, or approved while uses are left), failed (the
        target answered with an error), refused (the gate refused it, or the session could not
        be opened: nothing reached the target), unknown (a node died while it ran: failed,
        never run again), retry (nothing reached the target; claimable again). Audited as
        ``approval.step`` "executed" (or "released" for a retry), and the requester is told.
        None when this caller's claim was lost."""
        now = self.clock()
        notices: list[ApprovalNotice] = []
        async with self.store.transaction() as s:
            row = await arepo.get_request(s, request_id)
            if row is None or row.state != "executing" or row.claimed_by != claimer:
                return None
            data = dict(row.outcome or {})
            sid = result.get("statement_id") or row.statement_id
            data.update({k: v for k, v in result.items() if v is not None or k in ("error",)})
            data["at"] = now.isoformat()
            changes: dict[str, Any] = {"outcome": data}
            if outcome == "retry":
                changes.update(state="approved", execution_state=None)
            elif outcome == "done":
                last = "review_pending" if row.urgent and row.review == "pending" else "executed"
                changes.update(state=last if row.uses_left < 1 else "approved", execution_state="done")
            else:
                changes.update(state="failed", execution_state="unknown" if outcome == "unknown" else outcome)
            if not await arepo.finish_execution(s, row.id, claimer=claimer, now=now, **changes):
                return None
            await arepo.add_action(s, row.id, actor="dbward", action="comment", comment=comment, via="system")
            row = await arepo.require_request(s, row.id)
            action = "released" if outcome == "retry" else "executed"
            await self._audit(row, action, actor=None, statement_id=sid, comment=comment)
            if outcome != "retry":
                notices.append(
                    await self._notify(
                        s,
                        row,
                        NoticeEvent.EXECUTED,
                        actor="dbward",
                        comment=comment,
                        to=[f"user:{row.requester}"],
                        details={"outcome": data, "statement_id": sid},
                    )
                )
                if row.state == "review_pending":
                    line = ApprovalLine.model_validate(row.line) if row.line else None
                    notices.append(
                        await self._notify(
                            s,
                            row,
                            NoticeEvent.REVIEW_REQUIRED,
                            actor="dbward",
                            comment="an urgent request ran before its approval; its review is mandatory",
                            to=_all_approvers(line) if line is not None else [],
                        )
                    )
            out = await self._view(s, row)
        await self._send(notices)
        return out


@dataclass(frozen=True, kw_only=True)
class Execution:
    """What the executor needs of a request it runs or recovers (a snapshot of the row)."""

    id: int
    requester: str
    connection: str | None
    database: str | None
    sql: str
    params: list[Any] | None
    dialect: str
    state: str
    execution_state: str | None
    claimed_by: str | None
    claimed_at: datetime | None
    attempt: int
    statement_id: str | None
    outcome: dict[str, Any]

    @classmethod
    def of(cls, row: ApprovalRequestRow) -> Execution:
        p = dict(row.payload or {})
        return cls(
            id=row.id,
            requester=row.requester,
            connection=row.connection,
            database=row.database,
            sql=str(p.get("sql") or ""),
            params=p.get("params"),
            dialect=str(p.get("dialect") or "postgres"),
            state=row.state,
            execution_state=row.execution_state,
            claimed_by=row.claimed_by,
            claimed_at=_aware(row.claimed_at),
            attempt=row.attempt,
            statement_id=row.statement_id,
            outcome=dict(row.outcome or {}),
        )

    def run_of(self, statement_id: str) -> dict[str, Any] | None:
        """The outcome the gate recorded for ``statement_id`` (``completed``), if it did."""
        for r in self.outcome.get("runs") or []:
            if isinstance(r, dict) and r.get("statement_id") == statement_id:
                return r
        return None


def _iso(d: datetime | None) -> str:
    a = _aware(d)
    return a.isoformat() if a is not None else "any time"


def _check_schedule(details: SqlRequest, dialect: str, now: datetime, valid_until: datetime | None) -> None:
    at = _aware(details.scheduled_at)
    assert at is not None
    if at <= now - timedelta(minutes=1):
        raise ValidationError(f"scheduled_at {at.isoformat()} has already passed")
    if valid_until is not None and at >= valid_until:
        raise ValidationError("scheduled_at must be before valid_until, or the approval ends before it runs")
    if details.uses != 1:
        raise ValidationError("a scheduled SQL request runs once: uses must be 1")
    if details.params and dialect == "mysql":
        raise ValidationError(
            "dbward's executor cannot send a MySQL statement with bound parameters as a prepared "
            "statement; schedule it with the values written in the statement"
        )


async def _transition(
    s: AsyncSession, row: ApprovalRequestRow, actor: str, doing: str, **changes: Any
) -> None:
    """Apply a workflow step's changes if nobody changed the request since it was read
    (optimistic concurrency on ``version``); otherwise refuse, saying so."""
    if not await arepo.transition(s, row.id, row.version, **changes):
        raise workflow.InvalidState(
            f"request #{row.id} changed while {actor} was {doing} it; look at it again"
        )


def request_view(row: ApprovalRequestRow, actions: Sequence[ApprovalActionRow]) -> dict[str, Any]:
    line = ApprovalLine.model_validate(row.line) if row.line else None
    req = request_from_row(row, actions)
    stages = []
    if line is not None:
        for i, st in enumerate(line.stages, start=1):
            stages.append(
                {
                    "stage": i,
                    "name": st.name,
                    "mode": st.mode.value,
                    "approvers": [f"{a.type.value}:{a.name}" for a in st.approvers],
                    "approved_by": [a for a, _ in workflow.stage_approvals(req, i)],
                    "missing": workflow.missing(req, i) if i >= row.stage else [],
                }
            )
    p = dict(row.payload or {})
    return {
        "id": row.id,
        "type": row.type,
        "state": row.state,
        "requester": row.requester,
        "created_by": row.created_by,
        "external_ref": row.external_ref,
        "connection": row.connection,
        "database": row.database,
        "title": row.title,
        "reason": row.reason,
        "sql": p.get("sql"),
        "params": p.get("params"),
        "statement_kind": row.statement_kind,
        "privileges": p.get("privileges"),
        "scope": p.get("scope"),
        "columns": p.get("columns"),
        "max_rows": p.get("max_rows"),
        "period_hours": p.get("period_hours"),
        "line": row.line_name,
        "stage": row.stage,
        "stages": stages,
        "urgent": row.urgent,
        "review_required": row.review == "pending",
        "uses_allowed": row.uses_allowed,
        "uses_left": row.uses_left,
        "valid_from": _aware(row.valid_from),
        "valid_until": _aware(row.valid_until),
        "expires_at": _aware(row.expires_at),
        "decided_at": _aware(row.decided_at),
        "decided_by": row.decided_by,
        "effect": row.effect_ref,
        "scheduled_at": _aware(row.scheduled_at),
        "execution_state": row.execution_state,
        "attempt": row.attempt,
        "claimed_by": row.claimed_by,
        "claimed_at": _aware(row.claimed_at),
        "statement_id": row.statement_id,
        "outcome": dict(row.outcome or {}),
        "executed_at": _aware(row.executed_at),
        "created_at": _aware(row.created_at),
        "actions": [
            {
                "actor": a.actor,
                "action": a.action,
                "stage": a.stage,
                "comment": a.comment,
                "via": a.via,
                "at": _aware(a.created_at),
            }
            for a in actions
        ],
    }


def _all_approvers(line: ApprovalLine) -> list[str]:
    return sorted({f"{a.type.value}:{a.name}" for st in line.stages for a in st.approvers})


def _db_ok(bound: str | None, actual: str | None) -> bool:
    return bound is None or bound == actual


def _in_window(r: ApprovalRequestRow, now: datetime) -> bool:
    vf, vu = _aware(r.valid_from), _aware(r.valid_until)
    return (vf is None or vf <= now) and (vu is None or vu > now)


def _article(kind: str | None) -> str:
    return "an" if (kind or "x")[:1].upper() in "AEIOU" else "a"


_COLUMN_KEYS = ("database", "schema", "table", "column")


def _column(c: dict[str, str]) -> dict[str, str]:
    extra = set(c) - set(_COLUMN_KEYS)
    if extra:
        raise ValidationError(
            f"an unmask column has database, schema, table and column; not {sorted(extra)[0]}"
        )
    if not c.get("table") or not c.get("column"):
        raise ValidationError("an unmask column names at least its table and its column")
    return {k: str(c.get(k) or "*") for k in _COLUMN_KEYS}


def _touches_ledger(analysis: Any, policy: dict[str, Any]) -> bool:
    pats = [glob(t) for t in policy.get("ledger_tables") or []]
    if not pats:
        return False
    for acc in analysis.accesses:
        if (
            (acc.kind in WRITE_KINDS or acc.kind in DDL_KINDS)
            and acc.obj.type is ObjectType.TABLE
            and any(p.match(acc.obj.qualified) or p.match(acc.obj.name) for p in pats)
        ):
            return True
    return (
        any(k in WRITE_KINDS or k in DDL_KINDS for k in analysis.opaque_kinds)
        and analysis.kind is not StatementKind.SELECT
    )


async def _drop_grant(s: AsyncSession, name: str) -> None:
    from dbward.store.models import Grant as GrantRow

    g = (await s.execute(select(GrantRow).where(GrantRow.name == name))).scalar_one_or_none()
    if g is not None:
        await s.delete(g)
        await s.flush()
        await repo.bump_policy_version(s)
