"""Validate a ``dbward apply`` document, compare it with the store, and apply the difference.

:func:`validate` turns a :class:`~dbward.declarative.loader.Document` into typed items (errors
name the line); :func:`build_plan` compares them with the store and returns the changes;
:func:`apply_plan` makes them in one transaction and records each as an ``admin.change``
audit event. Objects that are in the store but not in the file are left alone unless
``prune`` is set, and then only in the sections the file contains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic import ValidationError as PydanticValidationError

from dbward.audit.events import AdminChange
from dbward.audit.journal import AuditJournal
from dbward.declarative.loader import Document, FileError, Path_
from dbward.declarative.schema import Item
from dbward.declarative.sections import SECTIONS, Context, Section
from dbward.errors import ValidationError
from dbward.store.db import Store

MAX_ERRORS = 20
REDACTED = "(secret)"
Action = Literal["create", "update", "delete"]


# ----------------------------------------------------------------------------- validation
def file_model() -> type[BaseModel]:
    """The model of a whole file, built from the registered sections."""
    fields: dict[str, Any] = {"version": (Literal[1], 1)}
    for key, section in SECTIONS.items():
        fields[key] = (list[section.item], Field(default_factory=list))  # type: ignore[name-defined]
    return create_model("ApplyFile", __config__=ConfigDict(extra="forbid"), **fields)


def _dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(err: Mapping[str, Any]) -> str:
    loc: Path_ = tuple(err["loc"])
    parent = _dotted(loc[:-1]) if len(loc) > 1 else "the file"
    match err["type"]:
        case "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            return f"unknown key {loc[-1]!r} in {parent}{hint}"
        case "missing":
            return f"{parent} is missing the required key {loc[-1]!r}"
        case _:
            got = "" if "password" in loc else f" (got {err.get('input')!r})"
            return f"{_dotted(loc)}: {err['msg']}{got}"


def _allowed_keys(loc: Path_) -> list[str]:
    if not loc:
        return ["version", *SECTIONS]
    section = SECTIONS.get(str(loc[0]))
    if section is None:
        return []
    model: type[BaseModel] = section.item
    for part in loc[2:]:
        if isinstance(part, int):
            continue
        if str(part) not in model.model_fields:
            return []
        annotation = model.model_fields[str(part)].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


@dataclass
class Validated:
    doc: Document
    items: dict[str, list[Item]]  # section key -> items, in file order
    present: set[str]  # section keys written in the file
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)  # (section, name) -> secret
    warnings: list[str] = field(default_factory=list)

    def path_of(self, section: str, index: int) -> Path_:
        return (section, index)


def _resolve_secret(
    doc: Document, path: Path_, what: str, ref: str, env: Mapping[str, str]
) -> tuple[str, str | None]:
    """The secret and, for a literal, a warning."""
    where = doc.where(path)
    if ref.startswith("env:"):
        name = ref[4:]
        if name not in env:
            raise FileError(f"{where}: {what} refers to the environment variable {name}, which is not set")
        return env[name], None
    if ref.startswith("file:"):
        p = Path(ref[5:]).expanduser()
        if not p.is_absolute():
            p = doc.base_dir / p
        try:
            return p.read_text(encoding="utf-8").rstrip("\r\n"), None
        except OSError as exc:
            raise FileError(
                f"{where}: {what} refers to the file {p}, which cannot be read ({exc.strerror})"
            ) from exc
    return ref, (
        f"{where}: {what} is written in the file itself; use env:NAME or file:PATH so that it stays out of "
        "version control"
    )


def validate(doc: Document, env: Mapping[str, str] | None = None) -> Validated:
    env = os.environ if env is None else env
    try:
        parsed = file_model().model_validate(doc.data)
    except PydanticValidationError as exc:
        errors = exc.errors()
        lines = [f"{doc.where(tuple(e['loc']))}: {_describe(e)}" for e in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            lines.append(f"... and {len(errors) - MAX_ERRORS} more errors")
        raise FileError("\n".join(lines)) from None
    items: dict[str, list[Item]] = {key: list(getattr(parsed, key)) for key in SECTIONS}
    v = Validated(doc=doc, items=items, present={k for k in doc.data if k in SECTIONS})
    problems: list[str] = []
    for key, section in SECTIONS.items():
        seen: dict[str, int] = {}
        for i, item in enumerate(items[key]):
            name = section.name_of(item)
            if name in seen:
                problems.append(
                    f"{doc.where((key, i))}: {section.kind} {name} is defined twice "
                    f"(first at line {doc.line_of((key, seen[name]))})"
                )
            seen[name] = i
            ref = getattr(item, "password", None) if section.has_secret else None
            if ref is not None:
                try:
                    secret, warning = _resolve_secret(
                        doc, (key, i, "password"), f"the password of {section.kind} {name}", ref, env
                    )
                except FileError as exc:
                    problems.append(exc.message)
                    continue
                if warning:
                    v.warnings.append(warning)
                if section.key == "users" and len(secret) < 8:
                    problems.append(
                        f"{doc.where((key, i, 'password'))}: the password of user {name} must have at least 8 characters"
                    )
                v.secrets[(key, name)] = secret
    ports: dict[int, str] = {}
    for i, item in enumerate(items.get("connections", [])):
        port = getattr(item, "listen_port", None)
        if port is not None:
            name = SECTIONS["connections"].name_of(item)
            if port in ports:
                problems.append(
                    f"{doc.where(('connections', i, 'listen_port'))}: listen_port {port} of connection {name} "
                    f"is already used by connection {ports[port]}"
                )
            ports[port] = name
    if problems:
        raise FileError("\n".join(problems[:MAX_ERRORS]))
    return v


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass
class Change:
    action: Action
    section: Section
    name: str
    item: Item | None = None  # the desired object (None for delete)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    fields: list[FieldChange] = field(default_factory=list)
    secret: str | None = None  # the secret to set (None: leave as is); never printed
    secret_changed: bool = False

    def summary(self) -> str:
        if self.action == "create":
            return "new" + (" (with password)" if self.secret is not None else "")
        if self.action == "delete":
            if self.section.key in ("users", "groups", "roles"):
                return "absent from the file (--prune); its direct grants go too"
            if self.section.key == "connections":
                return "absent from the file (--prune); the grants on it go too"
            return "absent from the file (--prune)"
        parts = [f"{f.field}: {_short(f.before)} -> {_short(f.after)}" for f in self.fields]
        if self.secret_changed:
            parts.append("password: changed")
        return "; ".join(parts)


def _short(v: Any) -> str:
    text = (
        "-"
        if v is None or v == [] or v == {}
        else (", ".join(map(str, v)) if isinstance(v, list) else str(v))
    )
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Plan:
    changes: list[Change]
    warnings: list[str]

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "delete": 0}
        for c in self.changes:
            out[c.action] += 1
        return out


def _redacted(item: Item, section: Section, secret_note: str | None) -> dict[str, Any]:
    d = item.comparable()
    if section.has_secret and secret_note is not None:
        d["password"] = secret_note
    return d


async def build_plan(ctx: Context, v: Validated, *, prune: bool = False) -> Plan:
    changes: list[Change] = []
    current: dict[str, dict[str, Item]] = {key: await s.current(ctx) for key, s in SECTIONS.items()}
    deleted: dict[str, set[str]] = {key: set() for key in SECTIONS}
    desired_names = {key: {SECTIONS[key].name_of(i) for i in v.items[key]} for key in SECTIONS}
    if prune:
        for key in v.present:
            deleted[key] = set(current[key]) - desired_names[key]

    # References must resolve to something in the file or left in the store.
    problems: list[str] = []
    for key, section in SECTIONS.items():
        for i, item in enumerate(v.items[key]):
            for ref in section.references(item, (key, i)):
                known = desired_names[ref.section] | (set(current[ref.section]) - deleted[ref.section])
                if ref.name not in known:
                    target = SECTIONS[ref.section]
                    problems.append(
                        f"{v.doc.where(ref.path)}: {section.kind} {section.name_of(item)} names the {ref.what} "
                        f"{target.kind} {ref.name}, which is neither in the file nor in dbward"
                    )
    ports = {
        getattr(c, "listen_port", None): name
        for name, c in current["connections"].items()
        if name not in desired_names["connections"] and name not in deleted["connections"]
    }
    for i, item in enumerate(v.items["connections"]):
        port = getattr(item, "listen_port", None)
        if port is not None and port in ports:
            problems.append(
                f"{v.doc.where(('connections', i, 'listen_port'))}: listen_port {port} is already used by "
                f"connection {ports[port]}"
            )
    if problems:
        raise FileError("\n".join(problems[:MAX_ERRORS]))

    def enabled_admin(u: Item) -> bool:
        return bool(getattr(u, "admin", False)) and not getattr(u, "disabled", False)

    admins_before = [n for n, u in current["users"].items() if enabled_admin(u)]
    admins_after = [
        n
        for n, u in current["users"].items()
        if n not in deleted["users"] and n not in desired_names["users"] and enabled_admin(u)
    ] + [SECTIONS["users"].name_of(u) for u in v.items["users"] if enabled_admin(u)]
    if admins_before and not admins_after:
        raise ValidationError(
            "refusing to apply: the file would leave dbward without an enabled administrator "
            f"({', '.join(admins_before)} would lose admin rights or be disabled or deleted); "
            "keep at least one user with admin: true"
        )

    for key in reversed(list(SECTIONS)):
        section = SECTIONS[key]
        for name in sorted(deleted[key]):
            changes.append(
                Change("delete", section, name, before=_redacted(current[key][name], section, None))
            )
    for key, section in SECTIONS.items():
        for item in v.items[key]:
            name = section.name_of(item)
            secret = v.secrets.get((key, name))
            existing = current[key].get(name)
            if existing is None:
                changes.append(
                    Change(
                        "create",
                        section,
                        name,
                        item=item,
                        after=_redacted(item, section, REDACTED if secret is not None else None),
                        secret=secret,
                        secret_changed=secret is not None,
                    )
                )
                continue
            before, after = existing.comparable(), item.comparable()
            diffs = [
                FieldChange(f, before.get(f), after.get(f)) for f in after if before.get(f) != after.get(f)
            ]
            secret_changed = secret is not None and not await section.secret_matches(ctx, name, secret)
            if diffs or secret_changed:
                changes.append(
                    Change(
                        "update",
                        section,
                        name,
                        item=item,
                        before=before,
                        after=_redacted(item, section, "(changed)" if secret_changed else None),
                        fields=diffs,
                        secret=secret if secret_changed else None,
                        secret_changed=secret_changed,
                    )
                )
    return Plan(changes=changes, warnings=list(v.warnings))


# ----------------------------------------------------------------------------- apply
async def apply_plan(
    store: Store,
    plan: Plan,
    journal: AuditJournal,
    *,
    base_dir: Path | None = None,
    source: str = "apply",
    node: str | None = None,
) -> None:
    """Make every change of ``plan`` in one transaction; audit each before committing.

    If any change fails, or the audit journal cannot be written, nothing is changed.
    """
    if plan.empty:
        return
    async with store.transaction() as s:
        ctx = Context(session=s, box=store.box, base_dir=base_dir or Path.cwd())
        for c in plan.changes:
            match c.action:
                case "delete":
                    await c.section.delete(ctx, c.name)
                case "create":
                    assert c.item is not None
                    await c.section.create(ctx, c.item, c.secret)
                case "update":
                    assert c.item is not None
                    await c.section.update(ctx, c.item, c.secret)
        for c in plan.changes:
            await journal.append(
                AdminChange(
                    object_type=c.section.kind,
                    object_name=c.name,
                    action=c.action,
                    before=c.before,
                    after=c.after,
                    source=source,
                    node=node,
                    client_program="dbward",
                )
            )


async def plan_document(
    store: Store, doc: Document, *, prune: bool = False, env: Mapping[str, str] | None = None
) -> Plan:
    v = validate(doc, env)
    async with store.session() as s:
        return await build_plan(Context(session=s, box=store.box, base_dir=doc.base_dir), v, prune=prune)
