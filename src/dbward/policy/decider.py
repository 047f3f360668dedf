"""The policy decision point as the gate sees it.

:class:`PolicyDecider` is the interface; :class:`~dbward.policy.evaluator.PolicyEvaluator`
implements it. :class:`GrantView` is a grant as the console's "my connections" page lists it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from dbward.domain import Principal, SessionInfo, Statement, Target
from dbward.policy.model import Decision


@dataclass(frozen=True, kw_only=True)
class GrantView:
    """A grant as listed for its holder (the console's connections page, StoreDirectory.grants_for)."""

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
