"""Generates docs/audit-events.md from the event classes (``make docs``); a test keeps it fresh."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing

from dbward.audit.events import CATALOGUE, AuditEvent

HEADER = """# Audit event catalogue

Generated from `src/dbward/audit/events.py` by `make docs`; do not edit by hand.

Every record in the journal, the store and the forwarders is one JSON object with the common
fields below, plus `chain` (the journal's id), `seq` (1, 2, 3... within the chain) and `prev`
(SHA-256 of the previous record's canonical JSON line). Codes are stable: a code is never
reused for another meaning.

"""


def _fields(cls: type[AuditEvent], skip: set[str]) -> list[tuple[str, str]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        t = hints.get(f.name, f.type)
        text = getattr(t, "__name__", None) or str(t).replace("typing.", "")
        out.append((f.name, text.replace("|", "\\|")))
    return out


def render() -> str:
    parts = [HEADER, "## Common fields\n\n| field | type |\n|---|---|\n"]
    common = {f.name for f in dataclasses.fields(AuditEvent)}
    for name, t in _fields(AuditEvent, set()):
        parts.append(f"| `{name}` | `{t}` |\n")
    parts.append("\n## Events\n\n| code | type | summary |\n|---|---|---|\n")
    for cls in CATALOGUE:
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        parts.append(f"| {cls.code} | `{cls.type}` | {summary} |\n")
    for cls in CATALOGUE:
        parts.append(f"\n### {cls.code} `{cls.type}`\n\n{inspect.getdoc(cls) or ''}\n")
        own = _fields(cls, common)
        if own:
            parts.append("\n| field | type |\n|---|---|\n")
            parts.extend(f"| `{n}` | `{t}` |\n" for n, t in own)
    return "".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
