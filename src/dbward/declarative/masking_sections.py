"""Masking sections of a ``dbward apply`` file: ``masking_patterns:`` and ``masking_rules:``.

Each item is validated with the masking models (``masking/rules.py``), so a bad regular
expression, an unknown algorithm or a rule with both a pattern and an algorithm is refused
with its line; a rule naming a pattern that exists neither built in nor in the file or the
store is refused as an unknown reference.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from dbward.declarative.schema import Item, Name
from dbward.declarative.sections import Context, Path_, Reference, Section, register_section
from dbward.masking.patterns import BUILTIN
from dbward.masking.rules import MaskingPatternDef, MaskingRule
from dbward.store import masking_repo


class MaskingPatternItem(Item):
    name: Name
    regex: str
    algorithm: str | dict[str, Any]
    description: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> MaskingPatternItem:
        MaskingPatternDef.model_validate(self.model_dump(exclude_none=True))
        return self


class MaskingRuleItem(Item):
    name: Name
    connection: str = "*"
    database: str = "*"
    schema_: str = Field("*", alias="schema")
    table: str = "*"
    column: str
    pattern: str | None = None
    algorithm: str | dict[str, Any] | None = None
    exempt: list[str] = Field(default_factory=list)
    exempt_client_ips: list[str] = Field(default_factory=list)
    priority: int = 100
    enabled: bool = True
    description: str | None = None

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    @model_validator(mode="after")
    def _valid(self) -> MaskingRuleItem:
        MaskingRule.model_validate(self.stored())
        return self

    def stored(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)

    def comparable(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class _DocSection(Section):
    doc_key: str

    async def _put(self, ctx: Context, item: Item, create: bool) -> None:
        data = item.stored() if isinstance(item, MaskingRuleItem) else item.model_dump(exclude_none=True)
        await masking_repo.put(ctx.session, self.doc_key, data, create=create)

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        await self._put(ctx, item, True)

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        await self._put(ctx, item, False)

    async def delete(self, ctx: Context, name: str) -> None:
        await masking_repo.delete(ctx.session, self.doc_key, name)


class MaskingPatterns(_DocSection):
    key = "masking_patterns"
    kind = "masking pattern"
    item = MaskingPatternItem
    doc_key = masking_repo.PATTERNS

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {
            d["name"]: MaskingPatternItem.model_validate(d)
            for d in await masking_repo.load(ctx.session, self.doc_key)
        }


class MaskingRules(_DocSection):
    key = "masking_rules"
    kind = "masking rule"
    item = MaskingRuleItem
    doc_key = masking_repo.RULES

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {
            d["name"]: MaskingRuleItem.model_validate(d)
            for d in await masking_repo.load(ctx.session, self.doc_key)
        }

    def references(self, item: Item, path: Path_) -> list[Reference]:
        assert isinstance(item, MaskingRuleItem)
        if item.pattern is None or item.pattern in BUILTIN:
            return []
        return [Reference((*path, "pattern"), "masking_patterns", item.pattern, "masking pattern")]

    def export(self, item: Item) -> dict[str, Any]:
        return item.model_dump(mode="json", by_alias=True, exclude_defaults=True)


register_section(MaskingPatterns())
register_section(MaskingRules())
