"""Section handlers: how each kind of object in a ``dbward apply`` file is read and written.

One handler per top-level key (``users``, ``groups``, ``roles``, ``connections``,
``grants``), registered in :data:`SECTIONS` in the order they are applied (deletions run in
the reverse order). Later issues add ``policies`` and ``masking`` by registering a handler
with :func:`register_section`; the file model, plan, apply and export pick it up from here.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

from dbward.declarative.schema import (
    Conditions,
    ConnectionItem,
    GrantItem,
    GroupItem,
    Item,
    RoleItem,
    Scope,
    UserItem,
)
from dbward.identity.secrets import verify_argon2
from dbward.store import repo
from dbward.store.crypto import SecretBox

Path_ = tuple[str | int, ...]


@dataclass
class Context:
    """What a handler needs to read and write the store during one plan or apply."""

    session: AsyncSession
    box: SecretBox
    base_dir: Path = field(default_factory=Path.cwd)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """``item`` at ``path`` names object ``name`` of section ``section``."""

    path: Path_
    section: str
    name: str
    what: str  # "member", "subject", "connection": for the error message


class Section(ABC):
    key: ClassVar[str]  # the top-level key in the file, e.g. "users"
    kind: ClassVar[str]  # one object, for messages and audit events, e.g. "user"
    item: ClassVar[type[Item]]
    name_field: ClassVar[str] = "name"
    has_secret: ClassVar[bool] = False

    def name_of(self, item: Item) -> str:
        return str(getattr(item, self.name_field))

    @abstractmethod
    async def current(self, ctx: Context) -> dict[str, Item]:
        """Every stored object of this kind, as it would be written in a file (no secrets)."""

    async def secret_matches(self, ctx: Context, name: str, secret: str) -> bool:
        """Whether the stored secret of ``name`` equals ``secret`` (never reveals it)."""
        return True

    @abstractmethod
    async def create(self, ctx: Context, item: Item, secret: str | None) -> None: ...

    @abstractmethod
    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        """Make the stored object equal ``item``; ``secret`` None leaves the stored secret alone."""

    @abstractmethod
    async def delete(self, ctx: Context, name: str) -> None: ...

    def references(self, item: Item, path: Path_) -> list[Reference]:
        return []

    def export(self, item: Item) -> dict[str, Any]:
        return item.model_dump(mode="json", exclude_defaults=True)


SECTIONS: dict[str, Section] = {}


def register_section(section: Section) -> Section:
    SECTIONS[section.key] = section
    return section


def _aware(d: datetime | None) -> datetime | None:
    if d is None:
        return None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def secret_placeholder(connection: str) -> str:
    """The ``env:`` reference export writes in place of a connection's password."""
    return "env:DBWARD_CONN_" + re.sub(r"[^A-Z0-9]", "_", connection.upper()) + "_PASSWORD"


# ----------------------------------------------------------------------------- users
def _user_item(u: Any) -> UserItem:
    fields: dict[str, Any] = {
        "username": u.username,
        "display_name": u.display_name,
        "email": u.email,
        "admin": u.is_admin,
        "disabled": u.disabled,
    }
    try:
        return UserItem(**fields)
    except ValueError:
        # An address stored before e-mail addresses were checked (or by an identity provider)
        # is read as it is, so export and plans still work; applying it back is refused with
        # the file's line.
        return UserItem.model_construct(**fields, password=None)


class Users(Section):
    key = "users"
    kind = "user"
    item = UserItem
    name_field = "username"
    has_secret = True

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {u.username: _user_item(u) for u in await repo.list_users(ctx.session)}

    async def secret_matches(self, ctx: Context, name: str, secret: str) -> bool:
        user = await repo.require_user(ctx.session, name)
        return user.password_hash is not None and verify_argon2(user.password_hash, secret)

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, UserItem)
        await repo.create_user(
            ctx.session,
            ctx.box,
            item.username,
            password=secret,
            is_admin=item.admin,
            display_name=item.display_name,
            email=item.email,
        )
        if item.disabled:
            await repo.update_user(ctx.session, item.username, disabled=True)

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, UserItem)
        user = await repo.update_user(
            ctx.session,
            item.username,
            display_name=item.display_name,
            email=item.email,
            is_admin=item.admin,
            disabled=item.disabled,
            clear=("display_name", "email"),
        )
        if secret is not None:
            repo.set_password(user, ctx.box, secret)
            user.must_change_password = False
            await ctx.session.flush()

    async def delete(self, ctx: Context, name: str) -> None:
        await repo.delete_user(ctx.session, name)


# ----------------------------------------------------------------------------- groups
class Groups(Section):
    key = "groups"
    kind = "group"
    item = GroupItem

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {
            g.name: GroupItem(
                name=g.name, description=g.description, members=await repo.group_members(ctx.session, g.name)
            )
            for g in await repo.list_groups(ctx.session)
        }

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, GroupItem)
        await repo.create_group(ctx.session, item.name, item.description)
        await repo.set_group_members(ctx.session, item.name, item.members)
        await repo.bump_policy_version(ctx.session)

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, GroupItem)
        await repo.update_group(ctx.session, item.name, description=item.description)
        await repo.set_group_members(ctx.session, item.name, item.members)
        await repo.bump_policy_version(ctx.session)

    async def delete(self, ctx: Context, name: str) -> None:
        await repo.delete_group(ctx.session, name)

    def references(self, item: Item, path: Path_) -> list[Reference]:
        assert isinstance(item, GroupItem)
        return [Reference((*path, "members"), "users", m, "member") for m in item.members]


# ----------------------------------------------------------------------------- roles
def _split(ref: str) -> tuple[str, str]:
    t, _, n = ref.partition(":")
    return t, n


class Roles(Section):
    key = "roles"
    kind = "role"
    item = RoleItem

    async def current(self, ctx: Context) -> dict[str, Item]:
        out: dict[str, Item] = {}
        for r in await repo.list_roles(ctx.session):
            members = [f"{t}:{n}" for t, n in await repo.role_members(ctx.session, r.name)]
            out[r.name] = RoleItem(name=r.name, description=r.description, members=members)
        return out

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, RoleItem)
        await repo.create_role(ctx.session, item.name, item.description)
        await repo.set_role_members(ctx.session, item.name, [_split(m) for m in item.members])

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, RoleItem)
        await repo.update_role(ctx.session, item.name, description=item.description)
        await repo.set_role_members(ctx.session, item.name, [_split(m) for m in item.members])

    async def delete(self, ctx: Context, name: str) -> None:
        await repo.delete_role(ctx.session, name)

    def references(self, item: Item, path: Path_) -> list[Reference]:
        assert isinstance(item, RoleItem)
        refs = []
        for m in item.members:
            t, n = _split(m)
            refs.append(Reference((*path, "members"), "users" if t == "user" else "groups", n, "member"))
        return refs


# ----------------------------------------------------------------------------- connections
class Connections(Section):
    key = "connections"
    kind = "connection"
    item = ConnectionItem
    has_secret = True

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {
            c.name: ConnectionItem(
                name=c.name,
                engine=c.engine,  # type: ignore[arg-type]
                host=c.host,
                port=c.port,
                database=c.database,
                username=c.username,
                password=secret_placeholder(c.name) if c.secret is not None else None,
                tls_mode=c.tls_mode,  # type: ignore[arg-type]
                tls_ca=c.tls_ca,
                listen_port=c.listen_port,
                description=c.description,
                options=dict(c.options or {}),
            )
            for c in await repo.list_connections(ctx.session)
        }

    async def secret_matches(self, ctx: Context, name: str, secret: str) -> bool:
        c = await repo.require_connection(ctx.session, name)
        return repo.connection_secret(c, ctx.box) == secret

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, ConnectionItem)
        await repo.create_connection(
            ctx.session,
            ctx.box,
            item.name,
            engine=item.engine,
            host=item.host,
            port=item.port,
            username=item.username,
            password=secret,
            database=item.database,
            tls_mode=item.tls_mode,
            tls_ca=item.tls_ca,
            listen_port=item.listen_port,
            description=item.description,
            options=item.options,
        )
        await repo.bump_policy_version(ctx.session)

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, ConnectionItem)
        kwargs: dict[str, Any] = {"password": secret} if secret is not None else {}
        await repo.update_connection(
            ctx.session,
            ctx.box,
            item.name,
            engine=item.engine,
            host=item.host,
            port=item.port,
            username=item.username,
            database=item.database,
            tls_mode=item.tls_mode,
            tls_ca=item.tls_ca,
            listen_port=item.listen_port,
            description=item.description,
            options=item.options,
            **kwargs,
        )

    async def delete(self, ctx: Context, name: str) -> None:
        await repo.delete_connection(ctx.session, name)


# ----------------------------------------------------------------------------- grants
class Grants(Section):
    key = "grants"
    kind = "grant"
    item = GrantItem

    async def current(self, ctx: Context) -> dict[str, Item]:
        return {
            g.name: GrantItem(
                name=g.name,
                subject=f"{g.subject_type}:{g.subject_name}",
                connection=cname,
                scope=Scope(**(g.scope or {})),
                privileges=list(g.privileges or []),
                conditions=Conditions(**(g.conditions or {})),
                expires_at=_aware(g.expires_at),
                description=g.description,
            )
            for g, cname in await repo.list_grants(ctx.session)
        }

    @staticmethod
    def _fields(item: GrantItem) -> dict[str, Any]:
        return {
            "subject_type": item.subject_type,
            "subject_name": item.subject_name,
            "connection": item.connection,
            "privileges": list(item.privileges),
            "scope": item.scope.model_dump(mode="json", exclude_defaults=True),
            "conditions": item.conditions.model_dump(mode="json", exclude_defaults=True),
            "expires_at": item.expires_at,
            "description": item.description,
        }

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, GrantItem)
        await repo.create_grant(ctx.session, item.name, **self._fields(item))

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, GrantItem)
        await repo.update_grant(ctx.session, item.name, **self._fields(item))

    async def delete(self, ctx: Context, name: str) -> None:
        await repo.delete_grant(ctx.session, name)

    def references(self, item: Item, path: Path_) -> list[Reference]:
        assert isinstance(item, GrantItem)
        section = {"user": "users", "group": "groups", "role": "roles"}[item.subject_type]
        return [
            Reference((*path, "subject"), section, item.subject_name, "subject"),
            Reference((*path, "connection"), "connections", item.connection, "connection"),
        ]


for _section in (Users(), Groups(), Roles(), Connections(), Grants()):
    register_section(_section)
