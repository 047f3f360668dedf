"""Writing the store's state in the ``dbward apply`` format (counterpart of ``loader.py``).

Secrets never leave the store: a connection's password is written as an ``env:`` reference
(``env:DBWARD_CONN_<NAME>_PASSWORD``) to be set before the file is applied elsewhere, and
user passwords are not written at all.
"""

from __future__ import annotations

from typing import Any

import yaml

from dbward.declarative.sections import SECTIONS, Context
from dbward.store.db import Store

HEADER = """\
# dbward configuration, written by `dbward export`; apply it with `dbward apply -f FILE`.
# Secrets are never exported. Each connection's password is written as a reference to an
# environment variable (env:DBWARD_CONN_<NAME>_PASSWORD): set those variables, or change the
# references to file:PATH, before applying this file. User passwords are not exported:
# users keep the password they have, and new users get one with `dbward user set-password`.
"""


async def export_state(store: Store) -> dict[str, Any]:
    out: dict[str, Any] = {"version": 1}
    async with store.session() as s:
        ctx = Context(session=s, box=store.box)
        for key, section in SECTIONS.items():
            current = await section.current(ctx)
            out[key] = [section.export(current[name]) for name in sorted(current)]
    return out


def to_yaml(data: dict[str, Any]) -> str:
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return HEADER + body


async def export_yaml(store: Store) -> str:
    return to_yaml(await export_state(store))
