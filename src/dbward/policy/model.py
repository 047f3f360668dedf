"""Decisions are values: allow, deny or require approval, with the reasons and rule ids."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True, kw_only=True)
class MaskingPlan:
    """Which result columns to mask and how; filled in by the masking issue.

    ``columns`` maps a result column index to a masking rule id / algorithm spec.
    """

    columns: dict[int, Any]
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Decision:
    effect: Effect
    reasons: tuple[str, ...]
    rule_ids: tuple[str, ...] = ()
    masking: MaskingPlan | None = None
    row_limit: int | None = None
    approval_request_id: str | None = None

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def message(self) -> str:
        return " ".join(self.reasons)

    @classmethod
    def allow(cls, reason: str, *rule_ids: str, **kw: Any) -> Decision:
        return cls(effect=Effect.ALLOW, reasons=(reason,), rule_ids=tuple(rule_ids), **kw)

    @classmethod
    def deny(cls, reason: str, *rule_ids: str) -> Decision:
        return cls(effect=Effect.DENY, reasons=(reason,), rule_ids=tuple(rule_ids))
