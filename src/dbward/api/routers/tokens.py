"""API tokens (administrators) and proxy tokens (each user their own, under /me)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from dbward.api import service
from dbward.api.auth import need
from dbward.api.context import Actor, ApiContext, get_ctx
from dbward.api.schemas import ApiTokenCreate, ApiTokenCreated, ApiTokenOut, Limit, Page, paginate
from dbward.identity.apitokens import hash_token, new_api_token
from dbward.store import repo
from dbward.store.models import ApiToken

router = APIRouter(tags=["api-tokens"])


def token_out(t: ApiToken, username: str) -> dict[str, Any]:
    return {
        "name": t.name,
        "user": username,
        "prefix": t.prefix,
        "scopes": list(t.scopes or []),
        "allowed_ips": list(t.allowed_ips or []),
        "description": t.description,
        "created_by": t.created_by,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
        "last_used_at": t.last_used_at,
    }


def _audit_view(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in d.items() if k != "token"}


@router.get("/api-tokens", response_model=Page[ApiTokenOut])
async def list_api_tokens(
    ctx: ApiContext = Depends(get_ctx),
    _: Actor = Depends(need("tokens")),
    limit: Limit = 100,
    cursor: str | None = None,
    user: str | None = Query(default=None, description="only tokens acting as this user"),
) -> dict[str, Any]:
    async with ctx.store.session() as s:
        items = [token_out(t, u) for t, u in await repo.list_api_tokens(s)]
    return paginate([d for d in items if user is None or d["user"] == user], "name", limit, cursor)


async def create_token(ctx: ApiContext, actor: Actor, body: ApiTokenCreate) -> dict[str, Any]:
    token = new_api_token()
    async with ctx.store.transaction() as s:
        t = await repo.create_api_token(
            s,
            body.name,
            username=body.user,
            token_hash=hash_token(token),
            prefix=token[:12],
            scopes=sorted(set(body.scopes)),
            allowed_ips=body.allowed_ips,
            expires_at=body.expires_at,
            description=body.description,
            created_by=actor.username,
        )
        out = token_out(t, body.user)
        await service.record_change(ctx, actor, "api_token", body.name, "create", None, _audit_view(out))
    return {**out, "token": token}


@router.post("/api-tokens", response_model=ApiTokenCreated, status_code=201)
async def create_api_token(
    body: ApiTokenCreate,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("tokens", write=True)),
) -> dict[str, Any]:
    """Create a token; the response is the only time the token itself is shown."""
    return await create_token(ctx, actor, body)


@router.get("/api-tokens/{name}", response_model=ApiTokenOut)
async def get_api_token(
    name: str, ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need("tokens"))
) -> dict[str, Any]:
    async with ctx.store.session() as s:
        for t, u in await repo.list_api_tokens(s):
            if t.name == name:
                return token_out(t, u)
    from dbward.errors import NotFoundError

    raise NotFoundError(f"there is no API token named {name}")


async def revoke_token(ctx: ApiContext, actor: Actor, name: str) -> None:
    async with ctx.store.transaction() as s:
        t = await repo.revoke_api_token(s, name)
        await service.record_change(
            ctx,
            actor,
            "api_token",
            name,
            "delete",
            {"name": name, "revoked": False},
            {"name": t.name, "revoked": True},
        )


@router.delete("/api-tokens/{name}", status_code=204)
async def revoke_api_token(
    name: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("tokens", write=True))
) -> Response:
    """Revoke a token (it stays listed, revoked, for the record)."""
    await revoke_token(ctx, actor, name)
    return Response(status_code=204)
