"""Administrative operations shared by the REST API and the console, each audited.

Objects that ``dbward apply`` manages (users, groups, roles, connections, grants) are read and
written through the same section handlers (``declarative/sections.py``), so the API, the
console and the YAML files validate alike and export alike. Every change is recorded as an
``admin.change`` event with before and after values (secrets never included), appended to the
node's journal inside the store transaction: if the journal cannot take it, nothing changes.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dbward.api.context import Actor, ApiContext
from dbward.audit.events import AdminChange, AuditEvent
from dbward.declarative.schema import Item
from dbward.declarative.sections import SECTIONS, Context, Section
from dbward.errors import ConflictError, NotFoundError, ValidationError
from dbward.identity.passwords import check_password
from dbward.store import repo
from dbward.store.models import User


def _aware(d: datetime | None) -> datetime | None:
    if d is None:
        return None
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


async def record(ctx: ApiContext, actor: Actor | None, event: AuditEvent) -> None:
    """Append ``event`` to the node's journal with who did it and from where."""
    if actor is not None:
        event.user = event.user or actor.username
        event.client_addr = event.client_addr or actor.client_ip
        event.client_program = event.client_program or actor.client_program or f"dbward-{actor.surface}"
    event.node = event.node or ctx.node_name or socket.gethostname()
    await ctx.journal.append(event)


async def record_change(
    ctx: ApiContext,
    actor: Actor,
    object_type: str,
    name: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    await record(
        ctx,
        actor,
        AdminChange(
            object_type=object_type,
            object_name=name,
            action=action,
            before=before,
            after=after,
            source=actor.surface,
        ),
    )


def section(key: str) -> Section:
    return SECTIONS[key]


def view(item: Item) -> dict[str, Any]:
    """What may be shown of an object: everything but secrets, which become ``has_password``."""
    d = item.model_dump(mode="json", by_alias=True)
    if "password" in d:
        d["has_password"] = d.pop("password") is not None
    return d


async def current(s: AsyncSession, ctx: ApiContext, key: str) -> dict[str, Item]:
    return await section(key).current(Context(session=s, box=ctx.store.box))


async def find(s: AsyncSession, ctx: ApiContext, key: str, name: str) -> Item:
    item = (await current(s, ctx, key)).get(name)
    if item is None:
        raise NotFoundError(f"{section(key).kind} {name} does not exist")
    return item


async def _check_unique(s: AsyncSession, ctx: ApiContext, key: str, item: Item) -> None:
    """Unique values other than the name, checked first so the answer names the other object."""
    port = getattr(item, "listen_port", None)
    if key != "connections" or port is None:
        return
    for other in await repo.list_connections(s):
        if other.listen_port == port and other.name != getattr(item, "name", None):
            raise ConflictError(f"listen port {port} is already used by connection {other.name}")


async def _check_references(s: AsyncSession, ctx: ApiContext, key: str, item: Item) -> None:
    await _check_unique(s, ctx, key, item)
    cache: dict[str, set[str]] = {}
    for ref in section(key).references(item, ()):
        if ref.section not in cache:
            cache[ref.section] = set((await current(s, ctx, ref.section)).keys())
        if ref.name not in cache[ref.section]:
            raise NotFoundError(f"{section(ref.section).kind} {ref.name} (the {ref.what}) does not exist")


@contextlib.asynccontextmanager
async def _unique_errors(kind: str, name: str) -> AsyncIterator[None]:
    try:
        yield
    except IntegrityError:
        raise ConflictError(
            f"{kind} {name} conflicts with another object (a name or port that must be unique is taken)"
        ) from None


async def create(ctx: ApiContext, actor: Actor, key: str, item: Item, secret: str | None) -> dict[str, Any]:
    sec = section(key)
    async with _unique_errors(sec.kind, sec.name_of(item)):
        return await _create(ctx, actor, key, item, secret)


async def _create(ctx: ApiContext, actor: Actor, key: str, item: Item, secret: str | None) -> dict[str, Any]:
    sec = section(key)
    name = sec.name_of(item)
    async with ctx.store.transaction() as s:
        if name in await current(s, ctx, key):
            raise ConflictError(f"{sec.kind} {name} already exists")
        await _check_references(s, ctx, key, item)
        await sec.create(Context(session=s, box=ctx.store.box), item, secret)
        after = view(await find(s, ctx, key, name))
        await record_change(ctx, actor, sec.kind, name, "create", None, _with_secret_note(after, secret))
    return after


async def update(
    ctx: ApiContext, actor: Actor, key: str, name: str, changes: dict[str, Any], secret: str | None = None
) -> dict[str, Any]:
    """Apply ``changes`` (field -> new value) to object ``name``; ``secret`` None keeps the secret."""
    async with _unique_errors(section(key).kind, name):
        return await _update(ctx, actor, key, name, changes, secret)


async def _update(
    ctx: ApiContext, actor: Actor, key: str, name: str, changes: dict[str, Any], secret: str | None
) -> dict[str, Any]:
    sec = section(key)
    async with ctx.store.transaction() as s:
        old = await find(s, ctx, key, name)
        before = view(old)
        data = old.model_dump(exclude={"password"})
        data.update(changes)
        data[sec.name_field] = name
        try:
            new = sec.item.model_validate(data)
        except Exception as exc:  # pydantic's ValidationError: say which field
            raise ValidationError(_pydantic_message(exc)) from None
        await _check_references(s, ctx, key, new)
        if key == "users":
            await guard_admins(
                s,
                actor,
                name,
                admin=bool(getattr(new, "admin", False)),
                active=not getattr(new, "disabled", False),
            )
        await sec.update(Context(session=s, box=ctx.store.box), new, secret)
        after = view(await find(s, ctx, key, name))
        await record_change(ctx, actor, sec.kind, name, "update", before, _with_secret_note(after, secret))
    return after


async def delete(ctx: ApiContext, actor: Actor, key: str, name: str) -> None:
    sec = section(key)
    async with ctx.store.transaction() as s:
        before = view(await find(s, ctx, key, name))
        if key == "users":
            await guard_admins(s, actor, name, admin=False, active=False, deleting=True)
        await sec.delete(Context(session=s, box=ctx.store.box), name)
        await record_change(ctx, actor, sec.kind, name, "delete", before, None)


async def guard_admins(
    s: AsyncSession, actor: Actor, username: str, *, admin: bool, active: bool, deleting: bool = False
) -> None:
    """Refuse a change that would lock administrators out (409): nobody removes their own
    administrator rights, disables or deletes their own account, or takes away the rights of
    the last active administrator, whatever surface the change comes from."""
    if admin and active:
        return
    what = "delete" if deleting else ("disable" if not active else "remove the administrator rights of")
    if username == actor.username:
        raise ConflictError(
            f"You cannot {what} your own account ({username}): that would lock you out of administration. "
            "Another administrator must make this change."
        )
    user = await repo.get_user(s, username)
    if user is None or not user.is_admin or user.disabled:
        return  # not an active administrator now: nothing to protect
    # FOR UPDATE (PostgreSQL): two administrators demoting each other at once must not both pass
    admins = select(User).where(User.is_admin.is_(True), User.disabled.is_(False)).with_for_update()
    others = [u for u in (await s.execute(admins)).scalars() if u.username != username]
    if not others:
        raise ConflictError(
            f"You cannot {what} {username}: they are the last active administrator, and nobody could "
            "administer dbward afterwards. Make another user an administrator first."
        )


def _with_secret_note(after: dict[str, Any], secret: str | None) -> dict[str, Any]:
    if secret is None:
        return after
    return {**after, "password": "(changed)"}


def _pydantic_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{loc}: {err.get('msg', 'is not valid')}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- users: extras
async def user_extras(s: AsyncSession, username: str) -> dict[str, Any]:
    """Console and sign-in facts about a user that ``dbward apply`` does not manage."""
    user = await repo.require_user(s, username)
    totp = await repo.get_totp(s, user.id)
    lock = await repo.get_lockout(s, username)
    locked_until = _aware(lock.locked_until) if lock else None
    if locked_until is not None and locked_until <= datetime.now(UTC):
        locked_until = None
    return {
        "has_password": user.password_hash is not None,
        "must_change_password": user.must_change_password,
        "totp_enabled": bool(totp and totp.confirmed_at),
        "locked_until": locked_until.isoformat() if locked_until else None,
        "allowed_ips": await repo.user_ip_rules(s, user.id),
    }


def password_policy(ctx: ApiContext, password: str, username: str) -> None:
    a = ctx.settings.api
    check_password(
        password, username=username, min_length=a.password_min_length, min_classes=a.password_min_classes
    )


async def set_password(
    ctx: ApiContext, actor: Actor, username: str, password: str, *, must_change: bool
) -> None:
    password_policy(ctx, password, username)
    async with ctx.store.transaction() as s:
        user = await repo.require_user(s, username)
        repo.set_password(user, ctx.store.box, password)
        user.must_change_password = must_change
        await s.flush()
        await record_change(
            ctx,
            actor,
            "user",
            username,
            "update",
            None,
            {"password": "(changed)", "must_change_password": must_change},
        )


async def set_allowed_ips(ctx: ApiContext, actor: Actor, username: str, cidrs: list[str]) -> None:
    from dbward.identity.ipaccess import valid_cidr

    try:
        norm = [valid_cidr(c) for c in cidrs]
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    async with ctx.store.transaction() as s:
        user = await repo.require_user(s, username)
        before = await repo.user_ip_rules(s, user.id)
        await repo.set_user_ip_rules(s, user.id, norm)
        await record_change(
            ctx,
            actor,
            "user",
            username,
            "update",
            {"allowed_ips": before},
            {"allowed_ips": sorted(set(norm))},
        )


async def unlock(ctx: ApiContext, actor: Actor, username: str) -> None:
    async with ctx.store.transaction() as s:
        await repo.require_user(s, username)
        await repo.clear_lockout(s, username)
        await record_change(ctx, actor, "user", username, "update", {"locked": True}, {"locked": False})


async def reset_totp(ctx: ApiContext, actor: Actor, username: str) -> None:
    async with ctx.store.transaction() as s:
        user = await repo.require_user(s, username)
        await repo.delete_totp(s, user.id)
        await record_change(
            ctx, actor, "user", username, "update", {"totp": "(enrolled)"}, {"totp": "(reset)"}
        )
