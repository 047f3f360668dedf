"""Repositories for the policy objects that are not grants: custom privilege types and query
rules. Every change bumps the policy version, so every node reloads its policy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dbward.errors import ConflictError, NotFoundError
from dbward.store.models import PrivilegeTypeRow, QueryRuleRow
from dbward.store.repo import bump_policy_version


async def list_privilege_types(s: AsyncSession) -> list[PrivilegeTypeRow]:
    return list((await s.execute(select(PrivilegeTypeRow).order_by(PrivilegeTypeRow.name))).scalars())


async def get_privilege_type(s: AsyncSession, name: str) -> PrivilegeTypeRow | None:
    return (
        await s.execute(select(PrivilegeTypeRow).where(PrivilegeTypeRow.name == name))
    ).scalar_one_or_none()


async def put_privilege_type(
    s: AsyncSession,
    name: str,
    *,
    kinds: list[str],
    includes: list[str],
    description: str | None,
    create: bool,
) -> PrivilegeTypeRow:
    row = await get_privilege_type(s, name)
    if create and row is not None:
        raise ConflictError(f"privilege type {name} already exists")
    if not create and row is None:
        raise NotFoundError(f"privilege type {name} does not exist")
    if row is None:
        row = PrivilegeTypeRow(name=name)
        s.add(row)
    row.kinds, row.includes, row.description = list(kinds), list(includes), description
    await s.flush()
    await bump_policy_version(s)
    return row


async def delete_privilege_type(s: AsyncSession, name: str) -> None:
    row = await get_privilege_type(s, name)
    if row is None:
        raise NotFoundError(f"privilege type {name} does not exist")
    await s.delete(row)
    await s.flush()
    await bump_policy_version(s)


async def list_rules(s: AsyncSession) -> list[QueryRuleRow]:
    return list(
        (
            await s.execute(select(QueryRuleRow).order_by(QueryRuleRow.priority, QueryRuleRow.rule_id))
        ).scalars()
    )


async def get_rule(s: AsyncSession, rule_id: str) -> QueryRuleRow | None:
    return (await s.execute(select(QueryRuleRow).where(QueryRuleRow.rule_id == rule_id))).scalar_one_or_none()


RULE_FIELDS = (
    "priority",
    "match",
    "pattern",
    "action",
    "connection",
    "subjects",
    "message",
    "enabled",
    "description",
)


async def put_rule(s: AsyncSession, rule_id: str, *, create: bool, **fields: Any) -> QueryRuleRow:
    row = await get_rule(s, rule_id)
    if create and row is not None:
        raise ConflictError(f"query rule {rule_id} already exists")
    if not create and row is None:
        raise NotFoundError(f"query rule {rule_id} does not exist")
    if row is None:
        row = QueryRuleRow(rule_id=rule_id)
        s.add(row)
    for k in RULE_FIELDS:
        if k in fields:
            setattr(row, k, fields[k])
    await s.flush()
    await bump_policy_version(s)
    return row


async def delete_rule(s: AsyncSession, rule_id: str) -> None:
    row = await get_rule(s, rule_id)
    if row is None:
        raise NotFoundError(f"query rule {rule_id} does not exist")
    await s.delete(row)
    await s.flush()
    await bump_policy_version(s)
