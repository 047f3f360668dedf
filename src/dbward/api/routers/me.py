"""The caller's own data: profile, connections with client settings, proxy tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from dbward.api import mine
from dbward.api.auth import api_actor
from dbward.api.context import Actor, ApiContext, get_ctx
from dbward.api.errors import Forbidden
from dbward.api.schemas import Me, MyConnection, ProxyTokenCreate, ProxyTokenCreated, ProxyTokenOut
from dbward.store import repo

router = APIRouter(tags=["me"])


def _writes_self(actor: Actor) -> None:
    if not ({"self", "admin"} & actor.scopes):
        raise Forbidden(
            f"API token {actor.token_name} needs the scope self to change its owner's proxy tokens"
        )


@router.get("/me", response_model=Me)
async def me(ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)) -> dict[str, Any]:
    p = await mine.principal(ctx, actor.username)
    async with ctx.store.session() as s:
        user = await repo.require_user(s, actor.username)
    return {
        "username": user.username,
        "display_name": user.display_name,
        "email": user.email,
        "admin": user.is_admin,
        "groups": sorted(p.groups),
        "roles": sorted(p.roles),
        "scopes": sorted(actor.scopes),
    }


@router.get("/me/connections", response_model=list[MyConnection])
async def my_connections(
    ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> list[dict[str, Any]]:
    """The connections granted to the caller, with ready-to-copy client settings."""
    return await mine.my_connections(ctx, actor.username)


@router.get("/me/proxy-tokens", response_model=list[ProxyTokenOut])
async def my_proxy_tokens(
    ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> list[dict[str, Any]]:
    return await mine.list_proxy_tokens(ctx, actor.username)


@router.post("/me/proxy-tokens", response_model=ProxyTokenCreated, status_code=201)
async def create_my_proxy_token(
    body: ProxyTokenCreate, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    """Create (or rotate, when the name exists) a proxy token; shown once."""
    _writes_self(actor)
    return await mine.create_proxy_token(ctx, actor, body.name, body.expires_at)


@router.delete("/me/proxy-tokens/{name}", status_code=204)
async def revoke_my_proxy_token(
    name: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> Response:
    _writes_self(actor)
    await mine.revoke_proxy_token(ctx, actor, name)
    return Response(status_code=204)
