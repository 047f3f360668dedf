"""The masking configuration in the store: custom patterns and masking rules.

Kept as two small JSON documents in ``store_meta`` (keys ``masking_patterns`` and
``masking_rules``, each a list of objects in the ``dbward apply`` shape, ordered by name), so
that they change in the same transaction as the rest of the policy and bump its version. The
models in ``masking/rules.py`` validate every item before it is stored.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from dbward.errors import ConflictError, NotFoundError
from dbward.store.models import StoreMeta
from dbward.store.repo import bump_policy_version

PATTERNS = "masking_patterns"
RULES = "masking_rules"
_KIND = {PATTERNS: "masking pattern", RULES: "masking rule"}


async def load(s: AsyncSession, key: str) -> list[dict[str, Any]]:
    row = await s.get(StoreMeta, key)
    if row is None or not row.value:
        return []
    data = json.loads(row.value)
    return list(data) if isinstance(data, list) else []


async def _save(s: AsyncSession, key: str, items: list[dict[str, Any]]) -> None:
    row = await s.get(StoreMeta, key)
    text = json.dumps(sorted(items, key=lambda i: str(i.get("name"))), sort_keys=True)
    if row is None:
        s.add(StoreMeta(key=key, value=text))
    else:
        row.value = text
    await s.flush()
    await bump_policy_version(s)


async def put(s: AsyncSession, key: str, item: dict[str, Any], *, create: bool) -> None:
    items = await load(s, key)
    name = item["name"]
    existing = [i for i in items if i.get("name") == name]
    if create and existing:
        raise ConflictError(f"{_KIND[key]} {name} already exists")
    if not create and not existing:
        raise NotFoundError(f"{_KIND[key]} {name} does not exist")
    await _save(s, key, [i for i in items if i.get("name") != name] + [item])


async def delete(s: AsyncSession, key: str, name: str) -> None:
    items = await load(s, key)
    if not any(i.get("name") == name for i in items):
        raise NotFoundError(f"{_KIND[key]} {name} does not exist")
    await _save(s, key, [i for i in items if i.get("name") != name])
