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

router = APIRouter()

EXPORT_MAX = 100_000


def live_sessions(ctx: ApiContext) -> list[dict[str, Any]]:
    now = time.monotonic()
    out = []
    for live in ctx.sessions.list():
        info = live.info
        out.append(
            {
                "id": info.id,
                "node": ctx.node_name,
                "user": info.principal.username,
                "connection": info.target.name,
                "database": info.database,
                "protocol": live.protocol,
                "client_addr": f"{info.client.host}:{info.client.port}",
                "client_program": info.client_program,
                "started_at": info.started_at,
                "statements": live.statements,
                "busy": live.busy,
                "idle_seconds": round(now - live.last_activity, 1),
            }
        )
    return sorted(out, key=lambda d: d["started_at"])


async def kill_session(ctx: ApiContext, actor: Actor, session_id: str) -> None:
    live = ctx.sessions.get(session_id)
    if live is None:
        raise NotFoundError(f"no live session {session_id} on node {ctx.node_name}")
    before = {"user": live.info.principal.username, "connection": live.info.target.name, "live": True}
    await service.record_change(
        ctx, actor, "session", session_id, "delete", before, {**before, "live": False}
    )
    await ctx.sessions.kill(session_id, f"killed by administrator {actor.username}")


@router.get("/sessions", response_model=list[LiveSessionOut], tags=["sessions"])
async def list_sessions(
    ctx: ApiContext = Depends(get_ctx),
    _: Actor = Depends(need("sessions")),
    user: str | None = None,
    connection: str | None = None,
) -> list[dict[str, Any]]:
    """Live proxy sessions on this node (each node of a cluster answers for its own)."""
    return [
        d
        for d in live_sessions(ctx)
        if (user is None or d["user"] == user) and (connection is None or d["connection"] == connection)
    ]


@router.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
async def kill(
    session_id: str, ctx: ApiContext = Depends(get_ctx), actor: Actor = Depends(need("sessions", write=True))
) -> Response:
    """End a live session; its running statement is cancelled on the target."""
    await kill_session(ctx, actor, session_id)
    return Response(status_code=204)


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
