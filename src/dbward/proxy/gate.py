"""The per-statement gate: analyse -> decide -> audit -> forward | reject | hold.

Both engines (``proxy/mysql.py``, ``proxy/postgres.py``) and the web SQL editor call the
same :class:`Gate` for every connection and every statement. The gate writes the decision to
the audit journal before it returns, so nothing reaches a target undecided or unrecorded.
If the journal cannot be written and ``audit.fail_closed`` is on, the statement is refused.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dbward.approvals.model import ApprovalUse
from dbward.audit.events import (
    AuditEvent,
    MaskingApplied,
    SessionEnded,
    SessionRejected,
    SessionStarted,
    StatementCompleted,
    StatementDecided,
)
from dbward.audit.journal import AuditJournal, Writer
from dbward.domain import Principal, SessionInfo, Statement, StatementOutcome, Target
from dbward.errors import AuditUnavailable, DbwardError
from dbward.policy.decider import PolicyDecider
from dbward.policy.model import Decision, Effect

log = logging.getLogger(__name__)

#: statement kinds after which the target's schema may have changed (the masking catalog is
#: read again before the next statement that needs it)
SCHEMA_CHANGING_KINDS = frozenset(
    {"CREATE", "ALTER", "DROP", "RENAME", "CALL", "PROCEDURAL", "UNKNOWN", "ADMIN", "EXECUTE"}
)

#: statements besides its approved one that dbward's executor session may run when the
#: user's own policy allows them: session settings its driver sends on connect
EXECUTOR_SETUP_KINDS = frozenset({"SET"})


class CatalogInvalidator(Protocol):
    def invalidate(self, target: Target, database: str | None = None) -> None: ...


class ApprovalBroker(Protocol):
    """Approved SQL requests, as the gate sees them (``approvals/service.py`` implements it).

    Asked only about statements the policy refused as approvable or sent for approval, so
    allowed statements never pay a store round trip."""

    async def use_for(self, session: SessionInfo, statement: Statement, statement_id: str) -> ApprovalUse:
        """Take one use of an approved request matching ``statement`` exactly, atomically
        (and audit it as ``approval.step`` "used"); or say what the user should do."""
        ...

    async def completed(
        self, session: SessionInfo, request_id: int, statement_id: str, outcome: StatementOutcome
    ) -> None:
        """Record the outcome of a statement run under an approved request."""
        ...

    def executes(self, session: SessionInfo) -> bool:
        """Whether ``session`` is dbward's own executor running an approved request
        (``approvals/executor.py``): every statement of it must take that request's use."""
        ...


@dataclass(kw_only=True)
class Ticket:
    """What the engine holds between a statement's decision and its completion."""

    id: str
    statement: Statement
    decision: Decision
    started: float = field(default_factory=time.perf_counter)


def _base(session: SessionInfo) -> dict[str, Any]:
    return {
        "user": session.principal.username,
        "connection": session.target.name,
        "database": session.database,
        "session_id": session.id,
        "client_addr": session.client.host,
        "client_addr_source": session.client.source,
        "client_program": session.client_program,
    }


class Gate:
    def __init__(
        self,
        policy: PolicyDecider,
        journal: AuditJournal,
        *,
        fail_closed: bool = True,
        catalogs: CatalogInvalidator | None = None,
        approvals: ApprovalBroker | None = None,
    ) -> None:
        self.policy = policy
        self.journal = journal
        self.fail_closed = fail_closed
        self.catalogs = catalogs
        self.approvals = approvals
        # Statement ids: a random prefix per gate (process) and a counter; unique across
        # nodes and restarts like a uuid4, at a fraction of its cost on the hot path.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)

    async def _record(self, event: AuditEvent) -> None:
        try:
            await self.journal.append(event)
        except AuditUnavailable:
            if self.fail_closed:
                raise
            log.warning("audit event %s lost: journal unavailable and audit.fail_closed is off", event.type)

    def _record_soon(self, event: AuditEvent) -> None:
        """Events nothing waits on (what a statement returned): written with the next decision
        or at the end of this loop iteration; a failure there fails the next decision closed."""
        self.journal.append_soon(event)

    async def open_session(self, session: SessionInfo, protocol: str, auth_method: str) -> Decision:
        """Decide whether the authenticated session may use the target; audit either way."""
        try:
            decision = await self.policy.decide_connection(
                session.principal, session.target, session.client.host
            )
        except DbwardError as exc:
            decision = Decision.deny(f"denied: {exc.message}", "error:policy")
        except Exception:
            log.exception("policy evaluation failed for a connection")
            decision = Decision.deny(
                "denied: the policy could not be evaluated for this connection (internal error); dbward fails closed",
                "error:policy",
            )
        if decision.effect is Effect.ALLOW:
            await self._record(
                SessionStarted(**_base(session), protocol=protocol, tls=session.tls, auth_method=auth_method)
            )
        else:
            await self.reject_session(
                protocol=protocol,
                reason=decision.message,
                error_code="connection_denied",
                session=session,
            )
        return decision

    async def reject_session(
        self,
        *,
        protocol: str,
        reason: str,
        error_code: str,
        session: SessionInfo | None = None,
        user: str | None = None,
        target: Target | None = None,
        client_host: str | None = None,
        client_source: str | None = None,
        client_program: str | None = None,
    ) -> None:
        if session is not None:
            base = _base(session)
        else:
            base = {
                "user": user,
                "connection": target.name if target else None,
                "client_addr": client_host,
                "client_addr_source": client_source,
                "client_program": client_program,
            }
        await self._record(SessionRejected(**base, protocol=protocol, reason=reason, error_code=error_code))

    def check_cached(
        self, session: SessionInfo, statement: Statement, *, queued: bool = False
    ) -> Ticket | None:
        """The synchronous fast path of :meth:`check`, for engines on their hot path.

        Returns the ticket of a statement whose decision the policy already holds in its cache,
        with the decision recorded in the journal before returning (exactly the record
        :meth:`check` writes), or None when the caller must ``await check(...)`` instead: a
        cache miss, anything involving approvals, a journal that cannot write synchronously, or
        any doubt. It never raises for a policy problem (None sends the caller to the full
        path, which fails closed and says why); it raises :class:`AuditUnavailable` like
        :meth:`check` when the decision cannot be recorded.

        With ``queued`` the record may instead join the journal's write at the end of this
        loop iteration (one write for every statement the loop decided in it); the caller
        then sends the statement only through :meth:`forward`, which holds it until that
        write returned."""
        approvals = self.approvals
        if approvals is not None and approvals.executes(session):
            return None  # every statement of dbward's executor takes its request's use
        decide_cached = getattr(self.policy, "decide_cached", None)
        append_now = getattr(self.journal, "append_now", None)
        if decide_cached is None or append_now is None:
            return None
        try:
            decision: Decision | None = decide_cached(session, statement)
        except Exception:  # the full path decides again, fails closed and says why
            return None
        if decision is None or (approvals is not None and decision.approvable and not decision.allowed):
            return None  # not cached, or an approved request could lift the refusal
        ticket = Ticket(id=f"{self._id_prefix}{next(self._ids):016x}", statement=statement, decision=decision)
        event = self._decided(session, statement, ticket.id, decision)
        try:
            if queued:
                append_queued = getattr(self.journal, "append_queued", None)
                if append_queued is not None and append_queued(event):
                    return ticket
            receipt = append_now(event)
        except AuditUnavailable:
            if self.fail_closed:
                raise
            log.warning("audit event %s lost: journal unavailable and audit.fail_closed is off", event.type)
            return ticket
        return ticket if receipt is not None else None

    def forward(
        self, writer: Writer, data: bytes | bytearray, fail: Callable[[AuditUnavailable], None]
    ) -> None:
        """Send ``data`` (statements decided with ``check_cached(..., queued=True)``, and any
        other bytes for the same target after them) to ``writer`` once the decisions recorded
        so far are written to the journal: at once, or at the end of this loop iteration. If
        that write fails, ``fail(error)`` runs instead and ``data`` is never sent (fail
        closed: the engine ends the session with the error)."""
        forward = getattr(self.journal, "forward", None)
        if forward is None:
            writer.write(data)
        else:
            forward(writer, data, fail)

    def flush(self) -> None:
        """Write the queued decisions now, before bytes that bypass :meth:`forward`."""
        flush = getattr(self.journal, "flush", None)
        if flush is not None:
            flush()

    def complete_soon(self, session: SessionInfo, ticket: Ticket, outcome: StatementOutcome) -> bool:
        """The synchronous fast path of :meth:`complete`: records the completion and returns
        True, or returns False (having done nothing) when the caller must ``await complete``."""
        decision = ticket.decision
        if decision.approval_request_id is not None or decision.kind in SCHEMA_CHANGING_KINDS:
            return False  # the request's outcome is recorded in the store; catalogs to re-read
        duration = outcome.duration_ms or (time.perf_counter() - ticket.started) * 1000
        self._record_soon(self._completed(session, ticket, outcome, duration))
        return True

    @staticmethod
    def _decided(
        session: SessionInfo, statement: Statement, statement_id: str, decision: Decision
    ) -> StatementDecided:
        return StatementDecided(
            **_base(session),
            statement_id=statement_id,
            sql=statement.sql,
            origin=statement.origin.value,
            params=list(statement.params) if statement.params is not None else None,
            effect=decision.effect.value,
            reasons=list(decision.reasons),
            rule_ids=list(decision.rule_ids),
            kind=decision.kind,
            fingerprint=decision.fingerprint,
        )

    @staticmethod
    def _completed(
        session: SessionInfo, ticket: Ticket, outcome: StatementOutcome, duration: float
    ) -> StatementCompleted:
        return StatementCompleted(
            **_base(session),
            statement_id=ticket.id,
            rows=outcome.rows,
            affected=outcome.affected,
            bytes_sent=outcome.bytes_sent,
            duration_ms=round(duration, 3),
            error=outcome.error,
            error_code=outcome.error_code,
            truncated=outcome.truncated,
        )

    async def check(
        self, session: SessionInfo, statement: Statement, *, refuse: Decision | None = None
    ) -> Ticket:
        """Decide one statement and record the decision before returning it.

        ``refuse`` is a denial the engine already reached from a proxy setting (for example
        ``COPY ... PROGRAM`` while ``proxy.allow_copy_program`` is off); it is recorded in
        place of the policy's decision, so the audit trail shows why the statement was refused.
        Raises :class:`AuditUnavailable` (fail closed) when the decision cannot be recorded.
        """
        try:
            decision = refuse or await self.policy.decide_statement(session, statement)
        except DbwardError as exc:
            decision = Decision.deny(f"denied: {exc.message}", "error:policy")
        except Exception:  # fail closed on any policy bug, and say so
            log.exception("policy evaluation failed")
            decision = Decision.deny(
                "denied: the policy could not be evaluated for this statement (internal error); "
                "dbward fails closed",
                "error:policy",
            )
        ticket = Ticket(id=f"{self._id_prefix}{next(self._ids):016x}", statement=statement, decision=decision)
        if refuse is None and self.approvals is not None:
            if self.approvals.executes(session):
                ticket.decision = decision = await self._executor(session, statement, decision, ticket.id)
            elif decision.approvable and not decision.allowed:
                ticket.decision = decision = await self._approval(session, statement, decision, ticket.id)
        await self._record(self._decided(session, statement, ticket.id, decision))
        return ticket

    async def _approval(
        self, session: SessionInfo, statement: Statement, decision: Decision, statement_id: str
    ) -> Decision:
        """The decision with an approved request applied: allowed by it (the user's masking
        plan and row limit still apply), or the refusal ending with what to do."""
        assert self.approvals is not None
        try:
            use = await self.approvals.use_for(session, statement, statement_id)
        except AuditUnavailable:
            raise
        except Exception:  # fail closed: the refusal stands, and says why
            log.exception("approved requests could not be checked")
            return replace(
                decision,
                reasons=(
                    *decision.reasons,
                    "dbward could not check for an approved request (the store did not answer); try again",
                ),
            )
        if use.request_id is None:
            return replace(decision, reasons=(*decision.reasons, use.hint) if use.hint else decision.reasons)
        rid = use.request_id
        if use.consumed:
            left = f"; {use.uses_left} uses left" if use.uses_left else ""
            urgent = " (urgent: its review is mandatory)" if use.urgent else ""
            reason = f"allowed by approved request #{rid}{urgent}{left}"
        else:
            reason = (
                f"allowed to prepare: approved request #{rid} covers this statement; each execution uses it"
            )
        return Decision(
            effect=Effect.ALLOW,
            # the user's masking still applies: its sentences stay in the audit record
            reasons=(reason, *(decision.masking.reasons if decision.masking is not None else ())),
            rule_ids=(
                f"approval:{rid}",
                *(decision.masking.rule_ids if decision.masking is not None else ()),
            ),
            masking=decision.masking,
            row_limit=decision.row_limit,
            approval_request_id=str(rid) if use.consumed else None,
            kind=decision.kind,
            fingerprint=decision.fingerprint,
        )

    async def _executor(
        self, session: SessionInfo, statement: Statement, decision: Decision, statement_id: str
    ) -> Decision:
        """dbward's executor runs one approved request per session: its statement takes the
        request's use even where the user's grants would allow it (so the store knows it was
        decided and it never runs twice), and anything else is refused but the session
        settings its driver sends (``EXECUTOR_SETUP_KINDS``). An explicit deny stays final."""
        assert self.approvals is not None
        if not decision.allowed and not decision.approvable:
            return decision
        try:
            use = await self.approvals.use_for(session, statement, statement_id)
        except AuditUnavailable:
            raise
        except Exception:  # fail closed: without the use taken, the executor runs nothing
            log.exception("dbward's executor could not take the use of its approved request")
            return Decision.deny(
                "denied: dbward's executor could not take the use of its approved request (the store "
                "did not answer), so the statement was not run",
                "error:approval",
            )
        if use.request_id is None:
            if decision.allowed and decision.kind in EXECUTOR_SETUP_KINDS:
                return decision  # the driver's session setup (PyMySQL's SET NAMES), as allowed
            return Decision.deny(f"denied: {use.hint}", "error:approval")
        rid = use.request_id
        if use.consumed:
            reason = f"allowed by approved request #{rid}, run by dbward's executor"
        else:
            reason = (
                f"allowed to prepare: approved request #{rid} covers this statement; its execution uses it"
            )
        own = decision.allowed  # the user's own decision (masking, row limit) stays, plus the use
        return replace(
            decision,
            effect=Effect.ALLOW,
            reasons=(reason, *(decision.reasons if own else ())),
            rule_ids=(f"approval:{rid}", *(decision.rule_ids if own else ())),
            approval_request_id=str(rid) if use.consumed else None,
            approvable=False,
        )

    async def masked(self, session: SessionInfo, ticket: Ticket, columns: list[dict[str, Any]]) -> None:
        """Record which output columns of a statement were masked, how and by which rules
        (one entry per column, see ``proxy.masking.ResultMasks.audit_columns``), and the
        inference flag when the plan carries one. Written before the statement's completion."""
        plan = ticket.decision.masking
        inference = list(plan.inference) if plan is not None else []
        self._record_soon(
            MaskingApplied(
                **_base(session),
                statement_id=ticket.id,
                columns=columns,
                inference=inference,
            )
        )

    async def complete(self, session: SessionInfo, ticket: Ticket, outcome: StatementOutcome) -> None:
        if (
            self.catalogs is not None
            and outcome.error is None
            and ticket.decision.kind in SCHEMA_CHANGING_KINDS
        ):
            self.catalogs.invalidate(session.target, session.database)
        duration = outcome.duration_ms or (time.perf_counter() - ticket.started) * 1000
        rid = ticket.decision.approval_request_id
        if rid is not None and self.approvals is not None:
            try:
                await self.approvals.completed(session, int(rid), ticket.id, outcome)
            except AuditUnavailable:
                raise
            except Exception:  # the statement has run; its outcome on the request is lost, say so
                log.exception("the outcome of approved request %s could not be recorded", rid)
        self._record_soon(self._completed(session, ticket, outcome, duration))

    async def close_session(
        self, session: SessionInfo, reason: str, statements: int, duration_ms: float
    ) -> None:
        await self._record(
            SessionEnded(
                **_base(session),
                reason=reason,
                statements=statements,
                duration_ms=round(duration_ms, 3),
            )
        )


__all__ = ["ApprovalBroker", "Gate", "Principal", "Ticket"]
