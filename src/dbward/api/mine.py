"""What one user may see of their own: connections they are granted, ready-to-copy client
settings, and their proxy tokens. Shared by ``/api/v1/me`` and the console's user pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import select

from dbward.api import service
from dbward.api.context import Actor, ApiContext
from dbward.domain import Principal
from dbward.errors import NotFoundError
from dbward.policy.decider import GrantView
from dbward.store import repo
from dbward.store.models import Connection, Grant
from dbward.store.models import ProxyToken as ProxyTokenRow


async def principal(ctx: ApiContext, username: str) -> Principal:
    from dbward.store.directory import StoreDirectory

    creds = await StoreDirectory(ctx.store).lookup(username)
    if creds is None:
        raise NotFoundError(f"user {username} does not exist or is disabled")
    return creds.principal


def client_settings(ctx: ApiContext, c: Connection, username: str) -> dict[str, Any]:
    """Host, port, database and command lines for psql, mysql, JDBC and DBeaver."""
    p = ctx.settings.proxy
    host = p.listen_host if p.listen_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    db = c.database or ""
    if c.listen_port:
        port, dbname = c.listen_port, db
    else:
        port = p.postgres_port if c.engine == "postgres" else p.mysql_port
        dbname = f"{c.name}/{db}" if db else c.name
    if c.engine == "postgres":
        cli = f"psql 'host={host} port={port} dbname={dbname} user={username}'"
        jdbc = f"jdbc:postgresql://{host}:{port}/{quote(dbname, safe='')}?user={quote(username)}"
        dbeaver = f"PostgreSQL driver, host {host}, port {port}, database {dbname}, user {username}"
    else:
        cli = f"mysql -h {host} -P {port} -u {username} -p {dbname}".rstrip()
        jdbc = f"jdbc:mariadb://{host}:{port}/{quote(dbname, safe='')}?user={quote(username)}"
        dbeaver = f"MySQL/MariaDB driver, server {host}, port {port}, database {dbname}, user {username}"
    return {
        "host": host,
        "port": str(port),
        "database": dbname,
        "user": username,
        "password": "your dbward password or a proxy token",
        "cli": cli,
        "jdbc": jdbc,
        "dbeaver": dbeaver,
    }


async def my_connections(ctx: ApiContext, username: str) -> list[dict[str, Any]]:
    p = await principal(ctx, username)
    async with ctx.store.session() as s:
        rows = (
            await s.execute(select(Grant, Connection).join(Connection, Grant.connection_id == Connection.id))
        ).all()
    by_conn: dict[str, dict[str, Any]] = {}
    for g, c in rows:
        view = GrantView(
            name=g.name,
            subject_type=g.subject_type,
            subject_name=g.subject_name,
            connection=c.name,
            privileges=tuple(g.privileges or ()),
            scope=dict(g.scope or {}),
        )
        if not view.applies_to(p):
            continue
        entry = by_conn.setdefault(
            c.name,
            {
                "name": c.name,
                "engine": c.engine,
                "database": c.database,
                "privileges": [],
                "grants": [],
                "settings": client_settings(ctx, c, username),
            },
        )
        entry["grants"].append(g.name)
        entry["privileges"] = sorted(set(entry["privileges"]) | set(g.privileges or []))
    out = []
    for e in sorted(by_conn.values(), key=lambda e: e["name"]):
        e["host"], e["port"] = e["settings"]["host"], int(e["settings"]["port"])
        out.append(e)
    return out


def proxy_token_out(t: ProxyTokenRow) -> dict[str, Any]:
    return {
        "name": t.name,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
        "last_used_at": t.last_used_at,
    }


async def list_proxy_tokens(ctx: ApiContext, username: str) -> list[dict[str, Any]]:
    async with ctx.store.session() as s:
        return [proxy_token_out(t) for t in await repo.list_proxy_tokens(s, username)]


async def create_proxy_token(
    ctx: ApiContext, actor: Actor, name: str, expires_at: datetime | None
) -> dict[str, Any]:
    """Create or rotate the user's proxy token ``name``; the secret is returned once."""
    async with ctx.store.transaction() as s:
        existed = await repo.get_proxy_token(s, actor.username, name) is not None
        secret = await repo.create_proxy_token(s, ctx.store.box, actor.username, name, expires_at=expires_at)
        t = await repo.get_proxy_token(s, actor.username, name)
        assert t is not None
        await service.record_change(
            ctx,
            actor,
            "proxy_token",
            f"{actor.username}/{name}",
            "update" if existed else "create",
            {"name": name, "secret": "(previous)"} if existed else None,
            {
                "name": name,
                "secret": "(new, shown once)",
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
        out = proxy_token_out(t)
    return {**out, "token": secret}


async def revoke_proxy_token(ctx: ApiContext, actor: Actor, name: str) -> None:
    async with ctx.store.transaction() as s:
        await repo.revoke_proxy_token(s, actor.username, name)
        await service.record_change(
            ctx,
            actor,
            "proxy_token",
            f"{actor.username}/{name}",
            "delete",
            {"name": name, "revoked": False},
            {"name": name, "revoked": True},
        )
