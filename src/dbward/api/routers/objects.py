"""Users, groups, roles, connections and grants: list, read, create, change, delete.

The same objects ``dbward apply`` manages, through the same validation (``api/service.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from dbward.api import service
from dbward.api.auth import need
from dbward.api.context import Actor, ApiContext, get_ctx
from dbward.api.schemas import (
    CheckOut,
    ConnectionCreate,
    ConnectionOut,
    ConnectionPatch,
    GrantItem,
    GrantPatch,
    GroupItem,
    GroupPatch,
    Limit,
    Page,
    PasswordSet,
    PrivilegeTypeItem,
    PrivilegeTypePatch,
    RoleItem,
    RolePatch,
    RuleItem,
    RulePatch,
    UserCreate,
    UserOut,
    UserPatch,
    paginate,
    patch_model,
)
from dbward.declarative.schema import UserItem
from dbward.declarative.sections import SECTIONS
from dbward.store import repo
from dbward.store.directory import target_from_row

router = APIRouter()


def _match(d: dict[str, Any], q: str | None, key: str) -> bool:
    return q is None or q.lower() in str(d[key]).lower()


# ----------------------------------------------------------------------------- users
async def _user_out(ctx: ApiContext, name: str) -> dict[str, Any]:
    async with ctx.store.session() as s:
        base = service.view(await service.find(s, ctx, "users", name))
        return {**base, **await service.user_extras(s, name)}


@router.get("/users", response_model=Page[UserOut], tags=["users"])
async def list_users(
    ctx: ApiContext = Depends(get_ctx),
    _: Actor = Depends(need("users")),
    limit: Limit = 100,
    cursor: str | None = None,
    q: str | None = Query(default=None, description="part of the user name"),
    admin: bool | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    async with ctx.store.session() as s:
        items = [service.view(i) for i in (await service.current(s, ctx, "users")).values()]
        items = [
            d
            for d in items
            if _match(d, q, "username")
            and (admin is None or d["admin"] == admin)
            and (disabled is None or d["disabled"] == disabled)
        ]
        page = paginate(items, "username", limit, cursor)
        page["items"] = [{**d, **await service.user_extras(s, d["username"])} for d in page["items"]]
    return page


@router.post("/users", response_model=UserOut, status_code=201, tags=["users"])
async def create_user(
    body: UserCreate, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("users", write=True))
) -> dict[str, Any]:
    if body.password is not None:
        service.password_policy(ctx, body.password, body.username)
    item = UserItem(
        username=body.username,
        display_name=body.display_name,
        email=body.email,
        admin=body.admin,
        disabled=body.disabled,
    )
    await service.create(ctx, actor, "users", item, body.password)
    async with ctx.store.transaction() as s:
        user = await repo.require_user(s, body.username)
        user.must_change_password = body.password is not None and body.must_change_password
    if body.allowed_ips:
        await service.set_allowed_ips(ctx, actor, body.username, body.allowed_ips)
    return await _user_out(ctx, body.username)


@router.get("/users/{username}", response_model=UserOut, tags=["users"])
async def get_user(
    username: str, ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need("users"))
) -> dict[str, Any]:
    return await _user_out(ctx, username)


@router.patch("/users/{username}", response_model=UserOut, tags=["users"])
async def update_user(
    username: str,
    body: UserPatch,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("users", write=True)),
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True, exclude={"allowed_ips"})
    await service.update(ctx, actor, "users", username, changes)
    if body.allowed_ips is not None:
        await service.set_allowed_ips(ctx, actor, username, body.allowed_ips)
    return await _user_out(ctx, username)


@router.delete("/users/{username}", status_code=204, tags=["users"])
async def delete_user(
    username: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("users", write=True))
) -> Response:
    await service.delete(ctx, actor, "users", username)
    return Response(status_code=204)


@router.post("/users/{username}/password", status_code=204, tags=["users"])
async def set_user_password(
    username: str,
    body: PasswordSet,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("users", write=True)),
) -> Response:
    await service.set_password(ctx, actor, username, body.password, must_change=body.must_change_password)
    return Response(status_code=204)


@router.post("/users/{username}/unlock", status_code=204, tags=["users"])
async def unlock_user(
    username: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("users", write=True))
) -> Response:
    await service.unlock(ctx, actor, username)
    return Response(status_code=204)


@router.delete("/users/{username}/totp", status_code=204, tags=["users"])
async def reset_user_totp(
    username: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("users", write=True))
) -> Response:
    await service.reset_totp(ctx, actor, username)
    return Response(status_code=204)


# ----------------------------------------------------------------------------- groups and roles
def _simple(key: str, item_model: type[Any], patch_model: type[Any], tag: str, area: str, path: str) -> None:
    name_field = service.section(key).name_field

    async def list_(
        ctx: ApiContext = Depends(get_ctx),
        _: Actor = Depends(need(area)),
        limit: Limit = 100,
        cursor: str | None = None,
        q: str | None = Query(default=None, description="part of the name"),
    ) -> dict[str, Any]:
        async with ctx.store.session() as s:
            items = [service.view(i) for i in (await service.current(s, ctx, key)).values()]
        return paginate([d for d in items if _match(d, q, name_field)], name_field, limit, cursor)

    async def create(
        body: Any,
        ctx: ApiContext = Depends(get_ctx),
        actor: Actor = Depends(need(area, write=True)),
    ) -> dict[str, Any]:
        return await service.create(ctx, actor, key, body, None)

    async def get(
        name: str, ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need(area))
    ) -> dict[str, Any]:
        async with ctx.store.session() as s:
            return service.view(await service.find(s, ctx, key, name))

    async def patch(
        name: str,
        body: Any,
        ctx: ApiContext = Depends(get_ctx),
        actor: Actor = Depends(need(area, write=True)),
    ) -> dict[str, Any]:
        return await service.update(ctx, actor, key, name, body.model_dump(exclude_unset=True))

    async def delete(
        name: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need(area, write=True))
    ) -> Response:
        await service.delete(ctx, actor, key, name)
        return Response(status_code=204)

    # the body types are only known here, not to `from __future__ import annotations`
    create.__annotations__["body"] = item_model
    patch.__annotations__["body"] = patch_model
    router.add_api_route(
        f"/{path}",
        list_,
        methods=["GET"],
        response_model=Page[item_model],  # type: ignore[valid-type]
        tags=[tag],
        name=f"list_{key}",
    )
    router.add_api_route(
        f"/{path}",
        create,
        methods=["POST"],
        response_model=item_model,
        status_code=201,
        tags=[tag],
        name=f"create_{key}",
    )
    router.add_api_route(
        f"/{path}/{{name}}", get, methods=["GET"], response_model=item_model, tags=[tag], name=f"get_{key}"
    )
    router.add_api_route(
        f"/{path}/{{name}}",
        patch,
        methods=["PATCH"],
        response_model=item_model,
        tags=[tag],
        name=f"update_{key}",
    )
    router.add_api_route(
        f"/{path}/{{name}}", delete, methods=["DELETE"], status_code=204, tags=[tag], name=f"delete_{key}"
    )


_simple("groups", GroupItem, GroupPatch, "groups", "users", "groups")
_simple("roles", RoleItem, RolePatch, "roles", "users", "roles")
_simple("privilege_types", PrivilegeTypeItem, PrivilegeTypePatch, "policies", "policies", "privilege-types")
_simple("rules", RuleItem, RulePatch, "policies", "policies", "query-rules")
for _key, _path in (("masking_patterns", "masking-patterns"), ("masking_rules", "masking-rules")):
    if _key in SECTIONS:  # registered by declarative/masking_sections.py
        _sec = SECTIONS[_key]
        _simple(_key, _sec.item, patch_model(_sec.item, _sec.name_field), "masking", "policies", _path)


# ----------------------------------------------------------------------------- connections
@router.get("/connections", response_model=Page[ConnectionOut], tags=["connections"])
async def list_connections(
    ctx: ApiContext = Depends(get_ctx),
    _: Actor = Depends(need("connections")),
    limit: Limit = 100,
    cursor: str | None = None,
    q: str | None = Query(default=None, description="part of the name"),
    engine: str | None = Query(default=None, description="mysql or postgres"),
) -> dict[str, Any]:
    async with ctx.store.session() as s:
        items = [service.view(i) for i in (await service.current(s, ctx, "connections")).values()]
    items = [d for d in items if _match(d, q, "name") and (engine is None or d["engine"] == engine)]
    return paginate(items, "name", limit, cursor)


@router.post("/connections", response_model=ConnectionOut, status_code=201, tags=["connections"])
async def create_connection(
    body: ConnectionCreate,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("connections", write=True)),
) -> dict[str, Any]:
    item = service.section("connections").item.model_validate(body.model_dump(exclude={"password"}))
    return await service.create(ctx, actor, "connections", item, body.password)


@router.get("/connections/{name}", response_model=ConnectionOut, tags=["connections"])
async def get_connection(
    name: str, ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need("connections"))
) -> dict[str, Any]:
    async with ctx.store.session() as s:
        return service.view(await service.find(s, ctx, "connections", name))


@router.patch("/connections/{name}", response_model=ConnectionOut, tags=["connections"])
async def update_connection(
    name: str,
    body: ConnectionPatch,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("connections", write=True)),
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True, exclude={"password"})
    return await service.update(ctx, actor, "connections", name, changes, body.password)


@router.delete("/connections/{name}", status_code=204, tags=["connections"])
async def delete_connection(
    name: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("connections", write=True))
) -> Response:
    await service.delete(ctx, actor, "connections", name)
    return Response(status_code=204)


async def run_connection_test(ctx: ApiContext, name: str) -> list[dict[str, Any]]:
    from dbward.doctor import test_connection

    async with ctx.store.session() as s:
        c = await repo.require_connection(s, name)
        target, password = target_from_row(c), repo.connection_secret(c, ctx.store.box)
    return [
        {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix, "ms": round(c.ms, 1)}
        for c in await test_connection(target, password)
    ]


@router.post("/connections/{name}/test", response_model=list[CheckOut], tags=["connections"])
async def test_connection(
    name: str, ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need("connections"))
) -> list[dict[str, Any]]:
    """Reach the target, negotiate TLS and log in with the stored credential, step by step."""
    return await run_connection_test(ctx, name)


# ----------------------------------------------------------------------------- grants
@router.get("/grants", response_model=Page[GrantItem], tags=["grants"])
async def list_grants(
    ctx: ApiContext = Depends(get_ctx),
    _: Actor = Depends(need("grants")),
    limit: Limit = 100,
    cursor: str | None = None,
    connection: str | None = None,
    subject: str | None = Query(default=None, description="user:NAME, group:NAME or role:NAME"),
) -> dict[str, Any]:
    async with ctx.store.session() as s:
        items = [service.view(i) for i in (await service.current(s, ctx, "grants")).values()]
    items = [
        d
        for d in items
        if (connection is None or d["connection"] == connection)
        and (subject is None or d["subject"] == subject)
    ]
    return paginate(items, "name", limit, cursor)


@router.post("/grants", response_model=GrantItem, status_code=201, tags=["grants"])
async def create_grant(
    body: GrantItem, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("grants", write=True))
) -> dict[str, Any]:
    return await service.create(ctx, actor, "grants", body, None)


@router.get("/grants/{name}", response_model=GrantItem, tags=["grants"])
async def get_grant(
    name: str, ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need("grants"))
) -> dict[str, Any]:
    async with ctx.store.session() as s:
        return service.view(await service.find(s, ctx, "grants", name))


@router.patch("/grants/{name}", response_model=GrantItem, tags=["grants"])
async def update_grant(
    name: str,
    body: GrantPatch,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("grants", write=True)),
) -> dict[str, Any]:
    return await service.update(ctx, actor, "grants", name, body.model_dump(exclude_unset=True))


@router.delete("/grants/{name}", status_code=204, tags=["grants"])
async def delete_grant(
    name: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("grants", write=True))
) -> Response:
    await service.delete(ctx, actor, "grants", name)
    return Response(status_code=204)
