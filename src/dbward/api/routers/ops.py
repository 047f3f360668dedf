"""Live proxy sessions (list, kill) and the audit trail (search, export, dashboard figures)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from dbward.api import service
from dbward.api.auth import need
from dbward.api.context import Actor, ApiContext, get_ctx
from dbward.api.schemas import AuditRecordOut, LiveSessionOut, Page, decode_cursor, encode_cursor
from dbward.audit.events import AuditExported
from dbward.audit.store import AuditQuery, iter_lines, search, to_csv_rows
from dbward.errors import NotFoundError, ValidationError
from dbward.proxy.cluster import session_view

router = APIRouter()

EXPORT_MAX = 100_000


async def live_sessions(ctx: ApiContext) -> list[dict[str, Any]]:
    """Live sessions of every node sharing the store (``proxy/cluster.py``), or of this node."""
    if ctx.cluster is not None:
        return await ctx.cluster.list_all()
    now = time.monotonic()
    return sorted((session_view(live, ctx.node_name, now) for live in ctx.sessions.list()), key=_started)


def _started(d: dict[str, Any]) -> Any:
    return d["started_at"]


#: how long a kill of another node's session is waited for before answering 202
REMOTE_KILL_WAIT = 5.0


async def kill_session(ctx: ApiContext, actor: Actor, session_id: str) -> bool:
    """End a session on whichever node holds it; False when another node has not done it yet."""
    live = ctx.sessions.get(session_id)
    if live is not None:
        before = {"user": live.info.principal.username, "connection": live.info.target.name, "live": True}
        await service.record_change(
            ctx, actor, "session", session_id, "delete", before, {**before, "live": False}
        )
        await ctx.sessions.kill(session_id, f"killed by administrator {actor.username}")
        return True
    found = await ctx.cluster.holder(session_id) if ctx.cluster is not None else None
    if ctx.cluster is None or found is None:
        others = " or any other node with a fresh heartbeat" if ctx.cluster is not None else ""
        raise NotFoundError(f"there is no live session {session_id} on node {ctx.node_name}{others}")
    instance, view = found
    # the node that holds the session ends it and records the change in its own journal
    request_id = await ctx.cluster.request_kill(
        instance,
        session_id,
        requested_by=actor.username,
        requested_from=actor.client_ip,
        surface=actor.surface,
    )
    outcome = await ctx.cluster.wait_done(request_id, REMOTE_KILL_WAIT)
    if outcome == "gone":
        raise NotFoundError(
            f"session {session_id} on node {view.get('node')} ended before it could be killed"
        )
    return outcome == "killed"


@router.get("/sessions", response_model=list[LiveSessionOut], tags=["sessions"])
async def list_sessions(
    ctx: ApiContext = Depends(get_ctx),
    _: Actor = Depends(need("sessions")),
    user: str | None = None,
    connection: str | None = None,
    node: str | None = Query(default=None, description="only the sessions of this node"),
) -> list[dict[str, Any]]:
    """Live proxy sessions of every node sharing the store (a node's list is at most a few
    seconds old; this node's own is current), each labelled with its node."""
    return [
        d
        for d in await live_sessions(ctx)
        if (node is None or d["node"] == node)
        and (user is None or d["user"] == user)
        and (connection is None or d["connection"] == connection)
    ]


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    tags=["sessions"],
    responses={
        202: {
            "description": "The node holding the session has been asked to end it and "
            "has not confirmed yet (it polls every second)."
        }
    },
)
async def kill(
    session_id: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("sessions", write=True))
) -> Response:
    """End a live session on whichever node holds it; its running statement is cancelled on the
    target. The node that ends it records the change in its audit journal."""
    done = await kill_session(ctx, actor, session_id)
    return Response(status_code=204 if done else 202)


def audit_query(
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | None = None,
    connection: str | None = None,
    type: str | None = Query(default=None, description="event type or its prefix, e.g. statement."),
    session_id: str | None = None,
    effect: str | None = Query(default=None, description="allow, deny or require_approval"),
    text: str | None = Query(default=None, description="text anywhere in the record (SQL, reason)"),
) -> AuditQuery:
    return AuditQuery(
        since=since,
        until=until,
        user=user,
        connection=connection,
        type=type,
        session_id=session_id,
        effect=effect,
        text=text,
    )


@router.get("/audit/events", response_model=Page[AuditRecordOut], tags=["audit"])
async def audit_events(
    ctx: ApiContext = Depends(get_ctx),
    _: Actor = Depends(need("audit")),
    query: AuditQuery = Depends(audit_query),
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = None,
) -> dict[str, Any]:
    """Stored audit records, oldest first; filters combine."""
    after = decode_cursor(cursor)
    try:
        after_id = int(after) if after is not None else 0
    except ValueError:
        raise ValidationError("cursor is not one this API returned; pass next_cursor unchanged") from None
    rows = await search(ctx.store, query, limit=limit + 1, after_id=after_id)
    page = rows[:limit]
    nxt = encode_cursor(str(page[-1][0])) if len(rows) > limit else None
    return {"items": [{"id": rid, **rec} for rid, rec in page], "next_cursor": nxt}


async def export_audit(ctx: ApiContext, actor: Actor, query: AuditQuery, fmt: str) -> tuple[str, int]:
    lines: list[str] = []
    async for line in iter_lines(ctx.store, query):
        lines.append(line)
        if len(lines) >= EXPORT_MAX:
            break
    filters = {
        k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(query).items() if v is not None
    }
    await service.record(
        ctx, actor, AuditExported(what="audit", format=fmt, filters=filters, rows=len(lines))
    )
    body = to_csv_rows(lines) if fmt == "csv" else "".join(line.rstrip("\n") + "\n" for line in lines)
    return body, len(lines)


@router.get(
    "/audit/export",
    tags=["audit"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
async def audit_export(
    ctx: ApiContext = Depends(get_ctx),
    actor: Actor = Depends(need("audit")),
    query: AuditQuery = Depends(audit_query),
    format: str = Query(default="csv", pattern="^(csv|jsonl)$"),
) -> Response:
    """Matching records as CSV or JSON lines (at most 100,000); the export itself is audited."""
    body, _ = await export_audit(ctx, actor, query, format)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return Response(
        body,
        media_type=media,
        headers={"content-disposition": f'attachment; filename="dbward-audit.{format}"'},
    )


def _json(line: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(line)
    return out
