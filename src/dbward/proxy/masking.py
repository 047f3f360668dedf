"""Applying a masking plan to results as they stream past, the parts both engines share:
the masks of one result (the plan's columns plus the wire cross-check), how a masked column
is announced to the client, and the audit record of what was masked.

Counterparts: ``masking/plan.py`` builds the plan at decision time; ``proxy/postgres_masking.py``
(and the MySQL engine's counterpart) decode, mask and re-encode rows with what this module
decides. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.plan import WireOrigin, wire_mask_columns
from dbward.policy.model import ColumnMask, MaskingPlan

#: masks every column of a result whose wire origin dbward's catalog does not know
STALE_CATALOG_MASK = ColumnMask(
    spec=MaskSpec(algorithm=Algorithm.REDACT), rule_ids=("masking:stale-catalog",)
)


def always_null(mask: ColumnMask) -> bool:
    """Whether every value the mask produces is NULL (the column keeps its announced type)."""
    return mask.pattern is None and mask.spec is not None and mask.spec.algorithm is Algorithm.NULL


@dataclass(frozen=True, slots=True)
class ResultMasks:
    """The masks of one result: column index -> mask, and which of them only the wire's column
    origins found (lineage missed them)."""

    masks: dict[int, ColumnMask]
    wire_only: frozenset[int] = frozenset()

    def audit_columns(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """The ``columns`` of a MaskingApplied event: per masked column its name (``column``),
        the masking rule(s) (``rule``, comma-separated; ``rules`` as a list), ``algorithm``,
        its 1-based ``position``, the ``sources`` it derives from, and ``wire_origin`` when
        only the wire's column origin found it (lineage did not)."""
        out: list[dict[str, Any]] = []
        for i, m in sorted(self.masks.items()):
            out.append(
                {
                    "column": names[i] if i < len(names) else f"column {i + 1}",
                    "rule": ", ".join(m.rule_ids),
                    "algorithm": m.how,
                    "position": i + 1,
                    "rules": list(m.rule_ids),
                    "sources": list(m.sources),
                    "wire_origin": i in self.wire_only,
                }
            )
        return out


def result_masks(plan: MaskingPlan | None, origins: Sequence[WireOrigin | None]) -> ResultMasks:
    """The masks of a result with these wire column origins (see ``wire_mask_columns``)."""
    if plan is None:
        return ResultMasks({})
    masks = wire_mask_columns(plan, origins)
    masks = {i: m for i, m in masks.items() if i < len(origins)}
    wire_only = frozenset(i for i in masks if not plan.mask_all and i not in plan.columns)
    return ResultMasks(masks, wire_only)


def stale_masks(count: int) -> ResultMasks:
    """Every column masked: the result comes from a table dbward's catalog does not know."""
    return ResultMasks(dict.fromkeys(range(count), STALE_CATALOG_MASK))


def error_sentence(plan: MaskingPlan) -> str:
    """What the client reads in place of a server error of a statement reading masked values."""
    rules = sorted({r for m in plan.columns.values() for r in m.rule_ids} | set(plan.rule_ids))
    names = ", ".join(r.removeprefix("masking:") for r in rules) or "of this connection"
    return (
        f"the statement failed on the target; dbward hides the server's error text because the "
        f"statement reads columns masked by masking rule {names}, and an error can quote a masked value"
    )


def cut_notice(limit: int, connection: str) -> str:
    return (
        f"dbward cut the result at {limit} rows (connection policy max_rows of connection {connection}); "
        "the remaining rows were not sent"
    )
