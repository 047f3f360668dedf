"""What an approval notification says: the one value ``approvals/service.py`` hands to the
notifiers of ``approvals/notify.py`` (webhooks in Slack or generic JSON format, e-mail).

Pure data, no I/O: the service builds a notice for every step of a request and the notifier
delivers it; a delivery failure never fails the step that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class NoticeEvent(StrEnum):
    REQUESTED = "requested"  # a request was filed (or created on someone's behalf by an ITSM)
    STAGE_APPROVED = "stage_approved"  # one stage is complete, the next stage's approvers are asked
    APPROVED = "approved"  # the last stage approved: the request can be used
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    EXECUTED = "executed"  # an approved SQL request ran (by the requester or by dbward); outcome in details
    REVIEW_REQUIRED = "review_required"  # an urgent request ran first and now needs its review


@dataclass(frozen=True, kw_only=True)
class ApprovalNotice:
    event: NoticeEvent
    request_id: str
    request_type: str  # access | sql | unmask | export
    title: str  # one line a person understands: "bob asks to run an UPDATE on maria (ledger)"
    requester: str
    occurred_at: datetime
    actor: str | None = None  # who did this step (approver, canceller); None for dbward itself
    connection: str | None = None
    comment: str | None = None
    stage: int | None = None  # 1-based stage the step belongs to
    urgent: bool = False
    url: str | None = None  # the request's page in the console
    #: e-mail addresses to tell (the next approvers, or the requester); webhooks go to every
    #: configured webhook whose event filter matches, whatever this says
    recipients: tuple[str, ...] = ()
    #: request-type specific facts: statement text, scope and period, outcome (rows, error)
    details: dict[str, Any] = field(default_factory=dict)


class Notifier(Protocol):
    async def notify(self, notice: ApprovalNotice) -> None:
        """Deliver (or queue) the notice. Never raises: failures are logged and retried."""
        ...


class NullNotifier:
    """Used when no notification channel is configured."""

    async def notify(self, notice: ApprovalNotice) -> None:
        return None
