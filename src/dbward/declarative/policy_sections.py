"""Policy sections of a ``dbward apply`` file: ``privilege_types:`` and ``rules:``, and the
``policy:`` block of each connection (row limits, approvals, ledger tables, unknown statements).

The items validate against the policy model itself (``policy/model.py``), so a file that
applies is a policy that loads: a bad kind, trigger or regular expression is refused with
the line it is on, never discovered later by a node that then refuses everything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dbward.declarative.schema import ConnectionItem, GrantItem, Item, Name
from dbward.declarative.sections import (
    SECTIONS,
    Connections,
    Context,
    Grants,
    Path_,
    Reference,
    Section,
    register_section,
)
from dbward.policy.model import BUILTIN_PRIVILEGE_TYPES, ConnectionPolicy, PrivilegeType, QueryRule
from dbward.store import policy_repo, repo

BUILTIN_NAMES = frozenset(p.name for p in BUILTIN_PRIVILEGE_TYPES)


class PrivilegeTypeItem(Item):
    name: Name
    kinds: list[str] = Field(default_factory=list)
    includes: list[str] = Field(default_factory=list)
    description: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> PrivilegeTypeItem:
        if self.name in BUILTIN_NAMES:
            raise ValueError(f"{self.name} is a built-in privilege type; choose another name")
        pt = PrivilegeType.model_validate({"name": self.name, "kinds": self.kinds, "includes": self.includes})
        self.kinds = sorted(k.value for k in pt.kinds)
        return self


class RuleItem(Item):
    id: Name
    priority: int = 100
    match: Literal["exact", "regex", "fingerprint"]
    pattern: str
    action: Literal["allow", "deny", "require_approval"]
    connection: str | None = None
    subjects: list[str] = Field(default_factory=list)
    message: str | None = None
    enabled: bool = True
    description: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> RuleItem:
        QueryRule.model_validate(self.model_dump(exclude={"description"}))
        return self


class ConnectionPolicyItem(Item):
    """A connection's ``policy:`` block (see docs/configuration.md)."""

    max_rows: int | None = Field(default=None, ge=1)
    approval_required: list[str] = Field(default_factory=list)
    ledger_tables: list[str] = Field(default_factory=list)
    allow_unknown: bool = False
    allow_procedural: bool = False
    function_calls: Literal["call", "read"] = "call"

    @field_validator("approval_required")
    @classmethod
    def _triggers(cls, v: list[str]) -> list[str]:
        return list(
            ConnectionPolicy.model_validate({"connection": "x", "approval_required": v}).approval_required
        )


class PolicyConnectionItem(ConnectionItem):
    policy: ConnectionPolicyItem = Field(default_factory=ConnectionPolicyItem)


class PrivilegeTypes(Section):
    key = "privilege_types"
    kind = "privilege type"
    item = PrivilegeTypeItem

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {
            p.name: PrivilegeTypeItem(
                name=p.name,
                kinds=list(p.kinds or []),
                includes=list(p.includes or []),
                description=p.description,
            )
            for p in await policy_repo.list_privilege_types(ctx.session)
        }

    async def _put(self, ctx: Context, item: Item, create: bool) -> None:
        assert isinstance(item, PrivilegeTypeItem)
        await policy_repo.put_privilege_type(
            ctx.session,
            item.name,
            kinds=item.kinds,
            includes=item.includes,
            description=item.description,
            create=create,
        )

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        await self._put(ctx, item, True)

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        await self._put(ctx, item, False)

    async def delete(self, ctx: Context, name: str) -> None:
        await policy_repo.delete_privilege_type(ctx.session, name)

    def references(self, item: Item, path: Path_) -> list[Reference]:
        assert isinstance(item, PrivilegeTypeItem)
        return [
            Reference((*path, "includes", i), "privilege_types", name, "included privilege type")
            for i, name in enumerate(item.includes)
            if name not in BUILTIN_NAMES
        ]


class Rules(Section):
    key = "rules"
    kind = "query rule"
    item = RuleItem
    name_field = "id"

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {
            r.rule_id: RuleItem(
                id=r.rule_id,
                priority=r.priority,
                match=r.match,  # type: ignore[arg-type]
                pattern=r.pattern,
                action=r.action,  # type: ignore[arg-type]
                connection=r.connection,
                subjects=list(r.subjects or []),
                message=r.message,
                enabled=r.enabled,
                description=r.description,
            )
            for r in await policy_repo.list_rules(ctx.session)
        }

    async def _put(self, ctx: Context, item: Item, create: bool) -> None:
        assert isinstance(item, RuleItem)
        fields: dict[str, Any] = item.model_dump(exclude={"id"})
        await policy_repo.put_rule(ctx.session, item.id, create=create, **fields)

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        await self._put(ctx, item, True)

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        await self._put(ctx, item, False)

    async def delete(self, ctx: Context, name: str) -> None:
        await policy_repo.delete_rule(ctx.session, name)


class PolicyConnections(Connections):
    """Connections with their ``policy:`` block."""

    item = PolicyConnectionItem

    async def current(self, ctx: Context) -> dict[str, Item]:
        base = await super().current(ctx)
        policies = {c.name: dict(c.policy or {}) for c in await repo.list_connections(ctx.session)}
        return {
            name: PolicyConnectionItem(
                **item.model_dump(), policy=ConnectionPolicyItem(**policies.get(name, {}))
            )
            for name, item in base.items()
        }

    async def _set_policy(self, ctx: Context, item: Item) -> None:
        assert isinstance(item, PolicyConnectionItem)
        c = await repo.require_connection(ctx.session, item.name)
        c.policy = item.policy.model_dump(mode="json", exclude_defaults=True)
        await ctx.session.flush()
        await repo.bump_policy_version(ctx.session)

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        await super().create(ctx, item, secret)
        await self._set_policy(ctx, item)

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        await super().update(ctx, item, secret)
        await self._set_policy(ctx, item)

    def export(self, item: Item) -> dict[str, Any]:
        out = super().export(item)
        if not out.get("policy"):
            out.pop("policy", None)
        return out


class PolicyGrants(Grants):
    """Grants whose privilege types must exist (built in, or in ``privilege_types:``)."""

    def references(self, item: Item, path: Path_) -> list[Reference]:
        assert isinstance(item, GrantItem)
        refs = super().references(item, path)
        refs += [
            Reference((*path, "privileges", i), "privilege_types", name, "privilege type")
            for i, name in enumerate(item.privileges)
            if name not in BUILTIN_NAMES
        ]
        return refs


def register() -> None:
    """Replace the plain connection and grant handlers and add the policy sections, keeping
    the apply order: privilege types before grants, rules last."""
    if isinstance(SECTIONS.get("connections"), PolicyConnections):
        return
    order = list(SECTIONS)
    handlers = dict(SECTIONS)
    handlers["connections"] = PolicyConnections()
    handlers["grants"] = PolicyGrants()
    handlers["privilege_types"] = PrivilegeTypes()
    handlers["rules"] = Rules()
    order.insert(order.index("grants"), "privilege_types")
    order.append("rules")
    SECTIONS.clear()
    for key in order:
        register_section(handlers[key])


register()
