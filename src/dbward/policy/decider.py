"""The policy decision point as the gate sees it.

:class:`PolicyDecider` is the interface; :class:`GrantDecider` is the foundation's decider:
a connection is allowed when the user holds an unexpired grant on it (directly, through a
group or through a role); every statement on an allowed connection is allowed and recorded.
The access-policy issue replaces the statement half with grants' privilege types and rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from dbward.domain import Principal, SessionInfo, Statement, Target
from dbward.policy.model import Decision


@dataclass(frozen=True, kw_only=True)
class GrantView:
    """A grant as the decider reads it (loaded from the store by the proxy's shell)."""

    name: str
    subject_type: str  # user | group | role
    subject_name: str
    connection: str
    privileges: tuple[str, ...] = ()
    scope: dict[str, object] = field(default_factory=dict)
    expires_at: datetime | None = None

    def applies_to(self, p: Principal) -> bool:
        match self.subject_type:
            case "user":
                return self.subject_name == p.username
            case "group":
                return self.subject_name in p.groups
            case "role":
                return self.subject_name in p.roles
            case _:
                return False


class PolicyDecider(Protocol):
    async def decide_connection(self, principal: Principal, target: Target, client_host: str) -> Decision: ...

    async def decide_statement(self, session: SessionInfo, statement: Statement) -> Decision: ...


class GrantSource(Protocol):
    async def grants_for(self, principal: Principal, target: Target) -> list[GrantView]: ...


class GrantDecider:
    def __init__(self, grants: GrantSource) -> None:
        self._grants = grants

    async def decide_connection(self, principal: Principal, target: Target, client_host: str) -> Decision:
        now = datetime.now(UTC)
        grants = [g for g in await self._grants.grants_for(principal, target) if g.applies_to(principal)]
        live = [g for g in grants if g.expires_at is None or _aware(g.expires_at) > now]
        if live:
            return Decision.allow(
                f"user {principal.username} holds grant {live[0].name} on connection {target.name}",
                *(f"grant:{g.name}" for g in live),
            )
        if grants:
            return Decision.deny(
                f"denied: every grant of user {principal.username} on connection {target.name} "
                f"has expired (grant {grants[0].name})",
                *(f"grant:{g.name}" for g in grants),
            )
        return Decision.deny(
            f"denied: user {principal.username} has no grant on connection {target.name}; "
            "ask an administrator for access",
            "default:deny",
        )

    async def decide_statement(self, session: SessionInfo, statement: Statement) -> Decision:
        return Decision.allow(
            "allowed: statement rules are not configured (default allow and record)",
            "default:allow",
        )


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)
