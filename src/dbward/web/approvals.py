"""The console's approval screens: file a request (SQL, access, unmask, export), "My requests",
the "To approve" inbox, a request's page (timeline, bound statement, outcome; approve, reject,
review, cancel) and, for administrators, the approval lines.

Every step goes through :class:`~dbward.approvals.service.ApprovalService`, the same service the
REST API (``api/routers/approvals.py``) and the proxy's gate use, so the workflow's rules (nobody
approves their own request, a person approves once, ...) hold here too and its refusals are shown
as they are. The sign-in, CSRF and page helpers come from the console (``web/console.py``), which
includes this router.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from dbward.api import service
from dbward.api.context import get_ctx
from dbward.approvals.model import ApprovalLine, RequestType
from dbward.approvals.service import (
    AccessRequest,
    ApprovalService,
    Details,
    ExportRequest,
    SqlRequest,
    UnmaskRequest,
)
from dbward.errors import DbwardError, NotFoundError, ValidationError
from dbward.policy.model import BUILTIN_PRIVILEGE_TYPES
from dbward.store import approvals_repo, policy_repo, repo
from dbward.web.security import Signed

#: request types in the order the "New request" page offers them, with their tab labels
TYPES: tuple[tuple[str, str], ...] = (
    ("sql", "Run a SQL statement"),
    ("access", "Access to a connection"),
    ("unmask", "See masked columns"),
    ("export", "Export more rows"),
)
STATE_FILTERS = (
    "open",
    "all",
    "pending",
    "approved",
    "executed",
    "failed",
    "rejected",
    "cancelled",
    "expired",
)
OPEN_STATES = ("pending", "approved", "executing", "review_pending")
STATEMENT_KINDS = ("INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "ALTER", "DROP", "TRUNCATE", "GRANT")
MAX_STAGES = 4


class Render(Protocol):
    def __call__(
        self, request: Request, template: str, signed: Signed | None, status: int = 200, **kw: Any
    ) -> HTMLResponse: ...


class SignedIn(Protocol):
    async def __call__(
        self, request: Request, *, admin: bool = False, stages: tuple[str, ...] = ("done",)
    ) -> Signed: ...


class Posted(Protocol):
    async def __call__(self, request: Request, signed: Signed) -> FormData: ...


class Back(Protocol):
    def __call__(self, to: str, *, ok: str | None = None, error: str | None = None) -> RedirectResponse: ...


@dataclass(frozen=True)
class Console:
    """The console's page helpers (``web/console.py`` ``console_router``)."""

    render: Render
    signed_in: SignedIn
    posted: Posted
    back: Back


def _svc(request: Request) -> ApprovalService:
    """The node's approval service (the gate shares it)."""
    from dbward.api.routers.approvals import approvals_of

    return approvals_of(get_ctx(request))


def _str(form: FormData, key: str) -> str:
    v = form.get(key, "")
    return v.strip() if isinstance(v, str) else ""


def _items(text: str) -> list[str]:
    return [x.strip() for x in text.replace(",", "\n").splitlines() if x.strip()]


def _when(form: FormData, key: str, label: str) -> datetime | None:
    """A ``datetime-local`` field, read as UTC (the console shows times in UTC)."""
    raw = _str(form, key)
    if not raw:
        return None
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(f"{label} must be a date and time such as 2026-01-31T09:00") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _number(form: FormData, key: str, label: str, *, integer: bool = False) -> float | None:
    raw = _str(form, key)
    if not raw:
        return None
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        raise ValidationError(f"{label} must be a {'whole ' if integer else ''}number, not {raw!r}") from None


def _column(text: str) -> dict[str, str]:
    """``table.column``, ``schema.table.column`` or ``database.schema.table.column``."""
    parts = [p.strip() for p in text.split(".")]
    if len(parts) < 2 or len(parts) > 4 or not all(parts):
        raise ValidationError(
            f"an unmask column is written table.column, schema.table.column or database.schema.table.column, "
            f"not {text!r}"
        )
    parts = ["*"] * (4 - len(parts)) + parts
    return dict(zip(("database", "schema", "table", "column"), parts, strict=True))


def _details(type_: str, form: FormData) -> Details:
    match type_:
        case "sql":
            sql = str(form.get("sql", "")).strip()
            if not sql:
                raise ValidationError("a SQL request needs the statement: paste it into Statement")
            uses = _number(form, "uses", "Uses", integer=True)
            return SqlRequest(
                sql=sql,
                uses=int(uses) if uses is not None else 1,
                scheduled_at=_when(form, "scheduled_at", "Run at"),
            )
        case "access":
            scope = {
                k: _items(_str(form, k)) for k in ("databases", "schemas", "tables") if _items(_str(form, k))
            }
            privileges = tuple(str(p) for p in form.getlist("privileges"))
            return AccessRequest(privileges=privileges, scope=scope)
        case "unmask":
            cols = tuple(_column(c) for c in _items(_str(form, "columns")))
            return UnmaskRequest(columns=cols)
        case "export":
            rows = _number(form, "max_rows", "Rows", integer=True)
            if rows is None:
                raise ValidationError("an export request says how many rows the export may hold (Rows)")
            return ExportRequest(max_rows=int(rows))
        case _:
            raise ValidationError(f"there is no request type {type_!r}; choose SQL, access, unmask or export")


def _line_from_form(form: FormData) -> ApprovalLine:
    """An approval line from the line form; pydantic's errors become one sentence."""
    stages: list[dict[str, Any]] = []
    for i in range(1, MAX_STAGES + 1):
        approvers = _items(_str(form, f"stage{i}_approvers"))
        if not approvers:
            continue
        stages.append(
            {
                "name": _str(form, f"stage{i}_name") or f"stage {len(stages) + 1}",
                "mode": _str(form, f"stage{i}_mode") or "any",
                "approvers": approvers,
            }
        )
    if not stages:
        raise ValidationError(
            "an approval line needs at least one stage with approvers (user:erin, group:dba)"
        )
    ledger = _str(form, "ledger")
    priority = _number(form, "priority", "Priority", integer=True)
    data: dict[str, Any] = {
        "name": _str(form, "name"),
        "priority": int(priority) if priority is not None else 100,
        "enabled": form.get("enabled") == "on",
        "allow_urgent": form.get("allow_urgent") == "on",
        "description": _str(form, "description"),
        "match": {
            "connections": _items(_str(form, "connections")),
            "request_types": [str(t) for t in form.getlist("request_types")],
            "statement_kinds": [str(k) for k in form.getlist("statement_kinds")]
            + _items(_str(form, "statement_kinds_other")),
            "ledger": {"yes": True, "no": False}.get(ledger),
        },
        "stages": stages,
    }
    try:
        return ApprovalLine.model_validate(data)
    except ValueError as exc:
        raise ValidationError(f"the approval line is not valid: {service._pydantic_message(exc)}") from None


def _line_values(line: ApprovalLine | None) -> dict[str, Any]:
    """The line form's fields for ``line`` (None: a new line)."""
    stages: list[dict[str, str]] = []
    if line is not None:
        stages = [
            {"name": st.name, "mode": st.mode.value, "approvers": ", ".join(str(a) for a in st.approvers)}
            for st in line.stages
        ]
    stages += [{"name": "", "mode": "any", "approvers": ""}] * (MAX_STAGES - len(stages))
    if line is None:
        return {
            "original": "",
            "name": "",
            "priority": "100",
            "description": "",
            "enabled": True,
            "allow_urgent": False,
            "connections": "",
            "request_types": [],
            "statement_kinds": [],
            "statement_kinds_other": "",
            "ledger": "",
            "stages": stages,
        }
    m = line.match
    return {
        "original": line.name,
        "name": line.name,
        "priority": str(line.priority),
        "description": line.description,
        "enabled": line.enabled,
        "allow_urgent": line.allow_urgent,
        "connections": ", ".join(m.connections),
        "request_types": [t.value for t in m.request_types],
        "statement_kinds": [k for k in m.statement_kinds if k in STATEMENT_KINDS],
        "statement_kinds_other": ", ".join(k for k in m.statement_kinds if k not in STATEMENT_KINDS),
        "ledger": "" if m.ledger is None else "yes" if m.ledger else "no",
        "stages": stages,
    }


def _posted_line_values(form: FormData) -> dict[str, Any]:
    """The line form's fields as posted, to show them again with the reason they were refused."""
    return {
        "original": _str(form, "original"),
        "name": _str(form, "name"),
        "priority": _str(form, "priority"),
        "description": _str(form, "description"),
        "enabled": form.get("enabled") == "on",
        "allow_urgent": form.get("allow_urgent") == "on",
        "connections": _str(form, "connections"),
        "request_types": [str(t) for t in form.getlist("request_types")],
        "statement_kinds": [str(k) for k in form.getlist("statement_kinds")],
        "statement_kinds_other": _str(form, "statement_kinds_other"),
        "ledger": _str(form, "ledger"),
        "stages": [
            {
                "name": _str(form, f"stage{i}_name"),
                "mode": _str(form, f"stage{i}_mode") or "any",
                "approvers": _str(form, f"stage{i}_approvers"),
            }
            for i in range(1, MAX_STAGES + 1)
        ],
    }


def _sentence(prefix: str, message: str) -> str:
    """``prefix: message.`` with exactly one full stop at the end."""
    return f"{prefix}: {message.rstrip().rstrip('.')}."


def approvals_router(ui: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    # ------------------------------------------------------------------ new request
    async def _new_form(
        request: Request,
        signed: Signed,
        values: dict[str, Any],
        *,
        status: int = 200,
        error: str | None = None,
    ) -> HTMLResponse:
        ctx = get_ctx(request)
        async with ctx.store.session() as s:
            conns = [{"name": c.name, "engine": c.engine} for c in await repo.list_connections(s)]
            custom = [p.name for p in await policy_repo.list_privilege_types(s)]
        a = ctx.settings.approvals
        extra: dict[str, Any] = {"error": error} if error else {}
        return ui.render(
            request,
            "requests/new.html",
            signed,
            status=status,
            types=TYPES,
            v=values,
            conns=conns,
            privileges=[p.name for p in BUILTIN_PRIVILEGE_TYPES] + custom,
            urgent_allowed=a.urgent_allowed,
            max_uses=a.max_uses,
            default_period=a.default_period_hours,
            max_period=a.max_period_hours,
            window_hours=a.sql_window_hours,
            **extra,
        )

    @router.get("/console/requests/new")
    async def new_request(request: Request) -> HTMLResponse:
        signed = await ui.signed_in(request)
        q = request.query_params
        type_ = q.get("type", "sql")
        values = {
            "type": type_ if type_ in dict(TYPES) else "sql",
            "connection": q.get("connection", ""),
            "database": q.get("database", ""),
            "sql": q.get("sql", ""),
            "privileges": ["read-write"],
        }
        return await _new_form(request, signed, values)

    @router.post("/console/requests/new")
    async def file_request(request: Request) -> Response:
        signed = await ui.signed_in(request)
        form = await ui.posted(request, signed)
        type_ = _str(form, "type") or "sql"
        values: dict[str, Any] = {k: _str(form, k) for k in form if k not in ("csrf_token", "sql")}
        values["sql"] = str(form.get("sql", ""))
        values["type"] = type_ if type_ in dict(TYPES) else "sql"
        values["privileges"] = [str(p) for p in form.getlist("privileges")]
        values["urgent"] = form.get("urgent") == "on"
        try:
            details = _details(type_, form)
            period = _number(form, "period_hours", "Period (hours)")
            created = await _svc(request).create(
                requester=signed.user.username,
                created_by=signed.user.username,
                type_=RequestType(type_),
                connection=_str(form, "connection") or None,
                reason=_str(form, "reason"),
                details=details,
                database=_str(form, "database") or None,
                valid_from=_when(form, "valid_from", "Valid from"),
                valid_until=_when(form, "valid_until", "Valid until"),
                period_hours=period,
                urgent=values["urgent"] and type_ == "sql",
                via="console",
                client_addr=signed.ip,
            )
        except DbwardError as exc:
            return await _new_form(
                request,
                signed,
                values,
                status=exc.http_status,
                error=_sentence("The request was not filed", exc.message),
            )
        rid = created["id"]
        what = (
            "It is approved for urgent use; an approver must review it after it runs."
            if created["urgent"]
            else "It waits for its approvers."
        )
        return ui.back(f"/console/requests/{rid}", ok=f"Request #{rid} was filed. {what}")

    # ------------------------------------------------------------------ lists
    def _state_filter(request: Request) -> tuple[str, list[str] | None]:
        chosen = request.query_params.get("state", "open")
        if chosen not in STATE_FILTERS:
            chosen = "open"
        states = list(OPEN_STATES) if chosen == "open" else None if chosen == "all" else [chosen]
        return chosen, states

    @router.get("/console/requests")
    async def my_requests(request: Request) -> HTMLResponse:
        signed = await ui.signed_in(request)
        chosen, states = _state_filter(request)
        me = signed.user.username
        items = await _svc(request).list_requests(viewer=me, requester=me, state=states, limit=200)
        return ui.render(
            request,
            "requests/list.html",
            signed,
            items=items,
            inbox=False,
            chosen=chosen,
            filters=STATE_FILTERS,
        )

    @router.get("/console/approvals")
    async def inbox(request: Request) -> HTMLResponse:
        signed = await ui.signed_in(request)
        items = await _svc(request).list_requests(viewer=signed.user.username, to_act=True, limit=200)
        return ui.render(
            request, "requests/list.html", signed, items=items, inbox=True, chosen="", filters=()
        )

    # ------------------------------------------------------------------ one request
    async def _view(request: Request, signed: Signed, request_id: int) -> dict[str, Any]:
        svc = _svc(request)
        try:
            return await svc.get(request_id, viewer=signed.user.username)
        except NotFoundError:
            if not signed.user.is_admin:
                raise
        view = await svc.get(request_id)  # administrators see every request, acting on none
        view["can_act"] = False
        return view

    async def _page(
        request: Request, signed: Signed, request_id: int, *, status: int = 200, error: str | None = None
    ) -> HTMLResponse:
        try:
            r = await _view(request, signed, request_id)
        except NotFoundError as exc:
            return ui.render(request, "error.html", signed, status=404, message=exc.message)
        extra: dict[str, Any] = {"error": error} if error else {}
        mine = r["requester"] == signed.user.username
        return ui.render(
            request,
            "requests/detail.html",
            signed,
            status=status,
            r=r,
            mine=mine,
            can_cancel=mine and r["state"] in ("pending", "approved"),
            pending=r["state"] == "pending",
            **extra,
        )

    @router.get("/console/requests/{request_id}")
    async def request_page(request: Request, request_id: int) -> HTMLResponse:
        signed = await ui.signed_in(request)
        return await _page(request, signed, request_id)

    @router.post("/console/requests/{request_id}/{action}")
    async def request_action(request: Request, request_id: int, action: str) -> Response:
        signed = await ui.signed_in(request)
        form = await ui.posted(request, signed)
        svc = _svc(request)
        me = signed.user.username
        comment = _str(form, "comment") or None
        done = {
            "approve": "approved",
            "reject": "rejected",
            "cancel": "cancelled",
            "review": "reviewed",
        }
        try:
            match action:
                case "approve":
                    out = await svc.approve(request_id, me, comment, via="console", client_addr=signed.ip)
                case "reject":
                    if comment is None:
                        raise ValidationError("say why in the comment when you reject a request")
                    out = await svc.reject(request_id, me, comment, via="console", client_addr=signed.ip)
                case "cancel":
                    out = await svc.cancel(request_id, me, comment, via="console", client_addr=signed.ip)
                case "review":
                    out = await svc.review(request_id, me, comment, via="console", client_addr=signed.ip)
                case _:
                    raise NotFoundError(f"there is no request action {action!r}")
        except DbwardError as exc:
            # answered in place with the service's status, so the refusal is visible as it is
            return await _page(
                request,
                signed,
                request_id,
                status=exc.http_status,
                error=_sentence(f"Request #{request_id} was not {done.get(action, 'changed')}", exc.message),
            )
        return ui.back(
            f"/console/requests/{request_id}",
            ok=f"Request #{request_id} was {done[action]} by {me}; it is now {out['state'].replace('_', ' ')}.",
        )

    # ------------------------------------------------------------------ approval lines (admin)
    async def _lines_page(
        request: Request,
        signed: Signed,
        *,
        f: dict[str, Any] | None = None,
        status: int = 200,
        error: str | None = None,
    ) -> HTMLResponse:
        ctx = get_ctx(request)
        lines = await _svc(request).list_lines()
        async with ctx.store.session() as s:
            users = sorted(u.username for u in await repo.list_users(s))
            groups = sorted(g.name for g in await repo.list_groups(s))
        if f is None:
            name = request.query_params.get("edit")
            found = next((ln for ln in lines if ln.name == name), None)
            f = _line_values(found)
        extra: dict[str, Any] = {"error": error} if error else {}
        return ui.render(
            request,
            "admin/approval_lines.html",
            signed,
            status=status,
            lines=[ln.model_dump(mode="json") for ln in lines],
            f=f,
            users=users,
            groups=groups,
            types=[t for t, _ in TYPES],
            kinds=STATEMENT_KINDS,
            **extra,
        )

    @router.get("/admin/approval-lines")
    async def lines_page(request: Request) -> HTMLResponse:
        signed = await ui.signed_in(request, admin=True)
        return await _lines_page(request, signed)

    @router.post("/admin/approval-lines")
    async def line_save(request: Request) -> Response:
        signed = await ui.signed_in(request, admin=True)
        form = await ui.posted(request, signed)
        ctx = get_ctx(request)
        svc = _svc(request)
        editing = _str(form, "original")
        try:
            line = _line_from_form(form)
            if editing and editing != line.name:
                raise ValidationError(
                    f"an approval line is not renamed ({editing} to {line.name}); create a new line and "
                    f"delete {editing}"
                )
            before = next((ln for ln in await svc.list_lines() if ln.name == line.name), None)
            await svc.put_line(line, create=not editing)
            await service.record_change(
                ctx,
                signed.actor,
                "approval_line",
                line.name,
                "update" if editing else "create",
                before.model_dump(mode="json") if before is not None else None,
                line.model_dump(mode="json"),
            )
        except DbwardError as exc:
            return await _lines_page(
                request,
                signed,
                f=_posted_line_values(form),
                status=exc.http_status,
                error=_sentence("The approval line was not saved", exc.message),
            )
        return ui.back(
            "/admin/approval-lines",
            ok=f"Approval line {line.name} was {'saved' if editing else 'created'}.",
        )

    @router.post("/admin/approval-lines/{name}/{action}")
    async def line_action(request: Request, name: str, action: str) -> Response:
        signed = await ui.signed_in(request, admin=True)
        await ui.posted(request, signed)
        ctx = get_ctx(request)
        svc = _svc(request)
        try:
            line = next((ln for ln in await svc.list_lines() if ln.name == name), None)
            if line is None:
                raise NotFoundError(f"approval line {name} does not exist")
            before = line.model_dump(mode="json")
            if action in ("enable", "disable"):
                changed = line.model_copy(update={"enabled": action == "enable"})
                await svc.put_line(changed, create=False)
                after: dict[str, Any] | None = changed.model_dump(mode="json")
            elif action == "delete":
                async with ctx.store.transaction() as s:
                    await approvals_repo.delete_line(s, name)
                after = None
            else:
                raise NotFoundError(f"there is no approval line action {action!r}")
            await service.record_change(
                ctx,
                signed.actor,
                "approval_line",
                name,
                "delete" if after is None else "update",
                before,
                after,
            )
        except DbwardError as exc:
            return ui.back("/admin/approval-lines", error=_sentence(f"Approval line {name}", exc.message))
        past = {"enable": "enabled", "disable": "disabled", "delete": "deleted"}[action]
        return ui.back("/admin/approval-lines", ok=f"Approval line {name} was {past}.")

    return router
