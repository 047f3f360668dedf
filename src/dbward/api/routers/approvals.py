"""Approval requests and approval lines: file, list, decide, cancel; and the callback an
external approval system (ITSM, groupware) calls with its decision.

Who may do what:

- any API token of a user files requests for that user and sees its owner's own requests and
  those on whose approval line the owner approves; approving, rejecting, reviewing and
  cancelling act as the token's owner, under the workflow's rules (``approvals/workflow.py``);
- a token with the ``approvals:write`` scope (or ``admin``) also files requests on someone's
  behalf (with ``external_ref``), cancels them, and calls ``/approvals/callback``; such tokens
  are created by administrators for the ITSM's service account;
- administrators' tokens with ``approvals:read`` see every request; approval lines need
  ``approvals:write`` (``approvals:read`` to list them).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from dbward.api import service
from dbward.api.auth import api_actor, need
from dbward.api.context import Actor, ApiContext, get_ctx
from dbward.api.errors import Forbidden
from dbward.api.schemas import Limit, decode_cursor, encode_cursor
from dbward.api.schemas_approvals import (
    ApprovalLineItem,
    Callback,
    Decide,
    RequestCreate,
    RequestOut,
    RequestPage,
)
from dbward.approvals.executor import ScheduledExecutor
from dbward.approvals.model import ApprovalLine, RequestType
from dbward.approvals.service import (
    AccessRequest,
    ApprovalService,
    Details,
    ExportRequest,
    SqlRequest,
    UnmaskRequest,
)
from dbward.errors import NotFoundError, UnsupportedFeature, ValidationError
from dbward.identity.apitokens import scope_allows
from dbward.store import approvals_repo

router = APIRouter(prefix="/approvals", tags=["approvals"])


def approvals_of(ctx: ApiContext) -> ApprovalService:
    """The node's service (the gate shares it), or one over the context's store."""
    svc = getattr(ctx.node, "approvals", None)
    if isinstance(svc, ApprovalService):
        return svc
    cached = getattr(ctx, "_approvals", None)
    if isinstance(cached, ApprovalService):
        return cached
    svc = ApprovalService(ctx.store, ctx.journal, ctx.settings, node_name=ctx.node_name)
    ctx._approvals = svc  # type: ignore[attr-defined]
    return svc


def _integrator(actor: Actor) -> bool:
    """A token that may act for others on approvals (administrators' ITSM tokens)."""
    return scope_allows(actor.scopes, "approvals", True) and (
        "approvals:write" in actor.scopes or actor.is_admin
    )


def _sees_all(actor: Actor) -> bool:
    return actor.is_admin and scope_allows(actor.scopes, "approvals", False)


def _own(actor: Actor, write: bool) -> None:
    if "self" in actor.scopes or scope_allows(actor.scopes, "approvals", write):
        return
    what = "approvals:write" if write else "approvals:read"
    raise Forbidden(f"API token {actor.token_name} needs the scope self or {what} for approval requests")


def _details(body: RequestCreate) -> Details:
    match body.type:
        case "sql":
            if not body.sql:
                raise ValidationError("a sql request needs the statement in sql")
            return SqlRequest(
                sql=body.sql, params=body.params, uses=body.uses, scheduled_at=body.scheduled_at
            )
        case "access":
            return AccessRequest(privileges=tuple(body.privileges), scope=dict(body.scope))
        case "unmask":
            return UnmaskRequest(columns=tuple(c.model_dump(by_alias=True) for c in body.columns))
        case "export":
            if body.max_rows is None:
                raise ValidationError("an export request needs max_rows")
            return ExportRequest(max_rows=body.max_rows)
        case _:
            raise ValidationError(f"unknown request type {body.type}")


@router.post("/requests", response_model=RequestOut, status_code=201)
async def create_request(
    body: RequestCreate, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    """File a request for the token's owner, or (``requester``, with approvals:write) on a
    user's behalf."""
    requester = body.requester or actor.username
    if requester != actor.username and not _integrator(actor):
        raise Forbidden(
            f"filing a request on behalf of {requester} needs an API token with the scope approvals:write; "
            f"{actor.token_name} does not have it"
        )
    _own(actor, True)
    return await approvals_of(ctx).create(
        requester=requester,
        created_by=actor.username,
        type_=RequestType(body.type),
        connection=body.connection,
        reason=body.reason,
        details=_details(body),
        database=body.database,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        period_hours=body.period_hours,
        urgent=body.urgent,
        external_ref=body.external_ref,
        via="api",
        client_addr=actor.client_ip,
    )


@router.get("/requests", response_model=RequestPage)
async def list_requests(
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(api_actor),
    limit: Limit = 100,
    cursor: str | None = None,
    state: list[str] | None = Query(
        default=None, description="pending, approved, executed, ... (repeatable)"
    ),
    type: str | None = Query(default=None, description="access, sql, unmask or export"),
    connection: str | None = None,
    requester: str | None = None,
    external_ref: str | None = None,
    review_required: bool | None = Query(default=None, description="urgent requests awaiting their review"),
    to_act: bool = Query(default=False, description="only requests the caller can approve or review now"),
) -> dict[str, Any]:
    """Newest first. Administrators (approvals:read) see every request; others their own and
    those on whose approval line they approve."""
    viewer = None if _sees_all(actor) and not to_act else actor.username
    if viewer is not None:
        _own(actor, False)
    after = decode_cursor(cursor)
    before_id = int(after) if after and after.isdigit() else None
    items = await approvals_of(ctx).list_requests(
        viewer=viewer,
        requester=requester,
        state=state,
        type_=type,
        connection=connection,
        external_ref=external_ref,
        review_pending=review_required,
        to_act=to_act,
        before_id=before_id,
        limit=limit + 1,
    )
    page = items[:limit]
    nxt = encode_cursor(str(page[-1]["id"])) if len(items) > limit and page else None
    return {"items": page, "next_cursor": nxt}


@router.get("/requests/{request_id}", response_model=RequestOut)
async def get_request(
    request_id: int, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    if _sees_all(actor):
        return await approvals_of(ctx).get(request_id)
    _own(actor, False)
    return await approvals_of(ctx).get(request_id, viewer=actor.username)


@router.post("/requests/{request_id}/approve", response_model=RequestOut)
async def approve_request(
    request_id: int, body: Decide, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    """Approve the current stage as the token's owner."""
    _own(actor, True)
    return await approvals_of(ctx).approve(
        request_id, actor.username, body.comment, client_addr=actor.client_ip
    )


@router.post("/requests/{request_id}/reject", response_model=RequestOut)
async def reject_request(
    request_id: int, body: Decide, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    _own(actor, True)
    return await approvals_of(ctx).reject(
        request_id, actor.username, body.comment, client_addr=actor.client_ip
    )


@router.post("/requests/{request_id}/cancel", response_model=RequestOut)
async def cancel_request(
    request_id: int, body: Decide, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    """The requester withdraws a pending or approved request (an approved access request's
    grant goes with it); an approvals:write token may cancel any."""
    _own(actor, True)
    return await approvals_of(ctx).cancel(
        request_id, actor.username, body.comment, on_behalf=_integrator(actor), client_addr=actor.client_ip
    )


@router.post("/requests/{request_id}/review", response_model=RequestOut)
async def review_request(
    request_id: int, body: Decide, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    """The mandatory review of an urgent request, by an approver of its line."""
    _own(actor, True)
    return await approvals_of(ctx).review(
        request_id, actor.username, body.comment, client_addr=actor.client_ip
    )


@router.post("/requests/{request_id}/execute", response_model=RequestOut, status_code=202)
async def execute_request(
    request_id: int, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    """The requester has dbward run their approved SQL request now, through this node's own
    proxy as the requester (program ``dbward-scheduler``). Answers at once with the request
    claimed (``state`` executing); its outcome is recorded on the request when it ends. A
    scheduled request runs at its time, not before."""
    _own(actor, True)
    executor = getattr(ctx.node, "executor", None)
    if not isinstance(executor, ScheduledExecutor):
        raise UnsupportedFeature(
            "Executing an approved request needs a running dbward node (`dbward up`); this API runs without one."
        )
    return await executor.execute_now(request_id, actor.username)


@router.post("/callback", response_model=RequestOut)
async def callback(
    body: Callback, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(api_actor)
) -> dict[str, Any]:
    """An external approval system reports a decision made there (token scope approvals:write)."""
    if not _integrator(actor):
        raise Forbidden(
            f"the approvals callback needs an API token with the scope approvals:write; {actor.token_name} "
            "does not have it"
        )
    svc = approvals_of(ctx)
    rid = body.request_id
    if rid is None:
        if not body.external_ref:
            raise ValidationError("the callback names the request: request_id or external_ref")
        async with ctx.store.session() as s:
            rows = await approvals_repo.list_requests(s, external_ref=body.external_ref, limit=2)
        if not rows:
            raise NotFoundError(f"there is no approval request with external_ref {body.external_ref}")
        if len(rows) > 1:
            raise ValidationError(
                f"several requests have external_ref {body.external_ref}; name the request by request_id"
            )
        rid = rows[0].id
    comment = body.comment or f"decided in the external approval system (via {actor.token_name})"
    if body.decision == "approve":
        return await svc.approve(rid, body.approver, comment, via="callback", client_addr=actor.client_ip)
    return await svc.reject(rid, body.approver, comment, via="callback", client_addr=actor.client_ip)


# ----------------------------------------------------------------------------- approval lines
def _line_view(line: ApprovalLine) -> dict[str, Any]:
    return line.model_dump(mode="json")


@router.get("/lines", response_model=list[ApprovalLineItem])
async def list_lines(
    ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need("approvals"))
) -> list[dict[str, Any]]:
    return [_line_view(ln) for ln in await approvals_of(ctx).list_lines()]


@router.get("/lines/{name}", response_model=ApprovalLineItem)
async def get_line(
    name: str, ctx: ApiContext = Depends(get_ctx), _: Actor = Depends(need("approvals"))
) -> dict[str, Any]:
    for ln in await approvals_of(ctx).list_lines():
        if ln.name == name:
            return _line_view(ln)
    raise NotFoundError(f"approval line {name} does not exist")


@router.post("/lines", response_model=ApprovalLineItem, status_code=201)
async def create_line(
    body: ApprovalLineItem,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("approvals", write=True)),
) -> dict[str, Any]:
    await approvals_of(ctx).put_line(body, create=True)
    await service.record_change(ctx, actor, "approval_line", body.name, "create", None, _line_view(body))
    return _line_view(body)


@router.put("/lines/{name}", response_model=ApprovalLineItem)
async def replace_line(
    name: str,
    body: ApprovalLineItem,
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("approvals", write=True)),
) -> dict[str, Any]:
    if body.name != name:
        raise ValidationError(f"the body names line {body.name}, the path {name}; a line is not renamed")
    before = await get_line(name, ctx, actor)
    await approvals_of(ctx).put_line(body, create=False)
    await service.record_change(ctx, actor, "approval_line", name, "update", before, _line_view(body))
    return _line_view(body)


@router.delete("/lines/{name}", status_code=204)
async def delete_line(
    name: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("approvals", write=True))
) -> Response:
    """Requests already filed keep the stages they were filed with."""
    before = await get_line(name, ctx, actor)
    async with ctx.store.transaction() as s:
        await approvals_repo.delete_line(s, name)
    await service.record_change(ctx, actor, "approval_line", name, "delete", before, None)
    return Response(status_code=204)
