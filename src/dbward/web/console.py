"""The console's pages: sign-in, the user's pages (connections, proxy token, SQL editor) and the
administrator's pages (dashboard, users and groups, connections, grants, policies, sessions,
audit, API tokens). Every change goes through ``api/service.py`` like the REST API's.

Every POST carries the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``); the sign-in form carries a double-submit token from a pre-session cookie.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.datastructures import FormData

from dbward.api import mine, service
from dbward.api.app import WEB_DIR
from dbward.api.context import get_ctx
from dbward.api.errors import Forbidden
from dbward.api.routers.objects import run_connection_test
from dbward.api.routers.ops import export_audit, kill_session, live_sessions
from dbward.api.routers.tokens import create_token, revoke_token, token_out
from dbward.api.schemas import ApiTokenCreate
from dbward.audit.events import AuditExported
from dbward.audit.store import AuditQuery, search
from dbward.declarative.schema import UserItem
from dbward.declarative.sections import SECTIONS
from dbward.errors import ConflictError, DbwardError, ValidationError
from dbward.identity import totp
from dbward.store import repo
from dbward.web.approvals import Console, approvals_router
from dbward.web.dashboard import figures
from dbward.web.editor import PAGE_SIZE, EditorManager, Result, StatementFailed, browser_address
from dbward.web.security import COOKIE, PRE_COOKIE, Redirect, Signed, SignIn, signin_of

STAGE_PAGES = {"totp": "/login/totp", "enroll": "/login/enroll", "password": "/account/password"}


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(WEB_DIR / "templates"))
    t.env.globals["page_size"] = PAGE_SIZE
    return t


def _form_str(form: FormData, key: str, default: str = "") -> str:
    v = form.get(key, default)
    return v.strip() if isinstance(v, str) else default


def _lines(text: str) -> list[str]:
    return [x.strip() for x in text.replace(",", "\n").splitlines() if x.strip()]


def _browser(request: Request, signed: Signed) -> tuple[str, int]:
    """The browser's address as the console sees it (``api.trusted_proxies`` respected), for the
    PROXY header of the editor's proxy session."""
    peer = request.client
    port = peer.port if peer is not None and peer.host == signed.ip else 0
    return browser_address(signed.ip, port)


def _masking_patterns() -> list[str]:
    try:
        from dbward.masking.patterns import BUILTIN
    except ImportError:  # pragma: no cover - masking ships with the policy work
        return []
    return sorted(BUILTIN)


def console_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    templates = _templates()

    def render(
        request: Request, template: str, signed: Signed | None, status: int = 200, **kw: Any
    ) -> HTMLResponse:
        kw.setdefault("error", request.query_params.get("error"))
        kw.setdefault("ok", request.query_params.get("ok"))
        return templates.TemplateResponse(
            request,
            template,
            {
                "me": signed.user if signed else None,
                "csrf": signed.session.csrf_token if signed else "",
                "path": request.url.path,
                **kw,
            },
            status_code=status,
        )

    def back(to: str, *, ok: str | None = None, error: str | None = None) -> RedirectResponse:
        sep = "&" if "?" in to else "?"
        if ok:
            to += f"{sep}ok={quote(ok)}"
        elif error:
            to += f"{sep}error={quote(error)}"
        return RedirectResponse(to, status_code=303)

    async def signed_in(
        request: Request, *, admin: bool = False, stages: tuple[str, ...] = ("done",)
    ) -> Signed:
        si = signin_of(request)
        signed = await si.load(request)
        if signed is None:
            raise Redirect("/login")
        if signed.session.stage not in stages:
            raise Redirect(STAGE_PAGES.get(signed.session.stage, "/login"))
        if admin:
            if not signed.user.is_admin:
                raise Forbidden("This page is for administrators.")
            si.check_ip(signed.ip, admin=True)
        return signed

    async def posted(request: Request, signed: Signed) -> FormData:
        form = await request.form()
        submitted = request.headers.get("x-csrf-token") or _form_str(form, "csrf_token")
        SignIn.check_csrf(signed, submitted)
        return form

    # ================================================================== sign-in
    @router.get("/login")
    async def login_page(request: Request) -> HTMLResponse:
        pre = secrets.token_urlsafe(24)
        resp = render(request, "login.html", None, pre=pre)
        signin_of(request).set_cookie(request, resp, PRE_COOKIE, pre, 3600)
        return resp

    @router.post("/login")
    async def login(request: Request) -> Response:
        si = signin_of(request)
        form = await request.form()
        SignIn.check_csrf(None, _form_str(form, "csrf_token"), request.cookies.get(PRE_COOKIE))
        try:
            token, stage = await si.password(
                request, _form_str(form, "username"), str(form.get("password", ""))
            )
        except DbwardError as exc:
            pre = secrets.token_urlsafe(24)
            page = render(
                request,
                "login.html",
                None,
                status=exc.http_status,
                pre=pre,
                error=exc.message,
                username=_form_str(form, "username"),
            )
            si.set_cookie(request, page, PRE_COOKIE, pre, 3600)
            return page
        resp = RedirectResponse(STAGE_PAGES.get(stage, "/"), status_code=303)
        si.set_cookie(request, resp, COOKIE, token, si.settings.session_max_hours * 3600)
        resp.delete_cookie(PRE_COOKIE, path="/")
        return resp

    @router.get("/login/totp")
    async def totp_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, stages=("totp",))
        return render(request, "totp.html", signed)

    @router.post("/login/totp")
    async def totp_submit(request: Request) -> Response:
        signed = await signed_in(request, stages=("totp",))
        form = await posted(request, signed)
        try:
            stage = await signin_of(request).second_factor(signed, _form_str(form, "code"))
        except DbwardError as exc:
            return render(request, "totp.html", signed, status=exc.http_status, error=exc.message)
        return RedirectResponse(STAGE_PAGES.get(stage, "/"), status_code=303)

    async def _enroll_page(
        request: Request, signed: Signed, template_error: str | None = None, status: int = 200
    ) -> HTMLResponse:
        si = signin_of(request)
        secret = await si.pending_secret(signed) or await si.start_enrollment(signed)
        uri = totp.provisioning_uri(secret, signed.user.username)
        return render(
            request,
            "enroll.html",
            signed,
            status=status,
            secret=secret,
            uri=uri,
            qr=Markup(totp.provisioning_qr_svg(uri)),  # generated here from the URI, not user text
            error=template_error,
        )

    @router.get("/login/enroll")
    async def enroll_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, stages=("enroll",))
        return await _enroll_page(request, signed)

    @router.get("/account/totp")
    async def account_totp(request: Request) -> HTMLResponse:
        signed = await signed_in(request)
        async with get_ctx(request).store.session() as s:
            row = await repo.get_totp(s, signed.user.id)
            left = await repo.unused_recovery_codes(s, signed.user.id)
        if row is not None and row.confirmed_at is not None:
            return render(request, "totp_status.html", signed, recovery_left=left)
        return await _enroll_page(request, signed)

    @router.post("/login/enroll")
    @router.post("/account/totp")
    async def enroll_confirm(request: Request) -> Response:
        signed = await signed_in(request, stages=("enroll", "done"))
        form = await posted(request, signed)
        try:
            codes = await signin_of(request).confirm_enrollment(signed, _form_str(form, "code"))
        except DbwardError as exc:
            return await _enroll_page(request, signed, exc.message, exc.http_status)
        nxt = STAGE_PAGES.get(signed.session.stage, "/")
        return render(request, "recovery.html", signed, codes=codes, next=nxt)

    @router.get("/account/password")
    async def password_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, stages=("password", "done"))
        a = get_ctx(request).settings.api
        return render(
            request,
            "password.html",
            signed,
            forced=signed.session.stage == "password",
            min_length=a.password_min_length,
            min_classes=a.password_min_classes,
        )

    @router.post("/account/password")
    async def password_submit(request: Request) -> Response:
        signed = await signed_in(request, stages=("password", "done"))
        form = await posted(request, signed)
        try:
            await signin_of(request).change_password(
                signed, str(form.get("current", "")), str(form.get("new", "")), str(form.get("repeat", ""))
            )
        except DbwardError as exc:
            a = get_ctx(request).settings.api
            return render(
                request,
                "password.html",
                signed,
                status=exc.http_status,
                error=exc.message,
                forced=signed.session.stage == "password",
                min_length=a.password_min_length,
                min_classes=a.password_min_classes,
            )
        return back("/", ok="Your password was changed.")

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        si = signin_of(request)
        signed = await si.load(request)
        if signed is not None:
            await posted(request, signed)
            await si.end(signed.session.id)
            editor: EditorManager = request.app.state.editor
            await editor.close_owner(signed.session.id)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # ================================================================== user pages
    @router.get("/")
    async def home(request: Request) -> Response:
        signed = await signed_in(request)
        return RedirectResponse("/admin" if signed.user.is_admin else "/connections", status_code=303)

    @router.get("/connections")
    async def my_connections(request: Request) -> HTMLResponse:
        signed = await signed_in(request)
        conns = await mine.my_connections(get_ctx(request), signed.user.username)
        return render(request, "connections.html", signed, conns=conns)

    @router.get("/tokens")
    async def my_tokens(request: Request) -> HTMLResponse:
        signed = await signed_in(request)
        tokens = await mine.list_proxy_tokens(get_ctx(request), signed.user.username)
        return render(request, "tokens.html", signed, tokens=tokens, new=None)

    @router.post("/tokens")
    async def my_token_create(request: Request) -> Response:
        signed = await signed_in(request)
        form = await posted(request, signed)
        name = _form_str(form, "name") or "default"
        try:
            created = await mine.create_proxy_token(get_ctx(request), signed.actor, name, None)
        except DbwardError as exc:
            return back("/tokens", error=exc.message)
        tokens = await mine.list_proxy_tokens(get_ctx(request), signed.user.username)
        return render(request, "tokens.html", signed, tokens=tokens, new=created)

    @router.post("/tokens/{name}/revoke")
    async def my_token_revoke(request: Request, name: str) -> Response:
        signed = await signed_in(request)
        await posted(request, signed)
        try:
            await mine.revoke_proxy_token(get_ctx(request), signed.actor, name)
        except DbwardError as exc:
            return back("/tokens", error=exc.message)
        return back("/tokens", ok=f"Proxy token {name} was revoked.")

    # ================================================================== SQL editor
    @router.get("/editor")
    async def editor_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request)
        conns = await mine.my_connections(get_ctx(request), signed.user.username)
        chosen = request.query_params.get("connection") or (conns[0]["name"] if conns else "")
        return render(request, "editor.html", signed, conns=conns, chosen=chosen)

    def _result_html(request: Request, signed: Signed, res: Result, page: int) -> HTMLResponse:
        return render(request, "_result.html", signed, res=res, page=page, rows=res.page(page))

    @router.post("/editor/run")
    async def editor_run(request: Request) -> HTMLResponse:
        signed = await signed_in(request)
        form = await posted(request, signed)
        editor: EditorManager = request.app.state.editor
        try:
            res = await editor.run(
                signed.session.id,
                signed.user.username,
                _form_str(form, "connection"),
                _form_str(form, "database") or None,
                str(form.get("sql", "")),
                gone=request.is_disconnected,
                client=_browser(request, signed),
            )
        except DbwardError as exc:
            return render(
                request,
                "_error.html",
                signed,
                message=exc.message,
                code=exc.state if isinstance(exc, StatementFailed) else "",
            )
        return _result_html(request, signed, res, 0)

    @router.post("/editor/cancel")
    async def editor_cancel(request: Request) -> HTMLResponse:
        signed = await signed_in(request)
        form = await posted(request, signed)
        editor: EditorManager = request.app.state.editor
        done = await editor.cancel(signed.session.id, _form_str(form, "connection"))
        return HTMLResponse("Cancel sent." if done else "Nothing is running.")

    @router.get("/editor/result/{rid}")
    async def editor_page_of(request: Request, rid: str, page: int = 0) -> HTMLResponse:
        signed = await signed_in(request)
        editor: EditorManager = request.app.state.editor
        try:
            res, shown = await editor.page(signed.session.id, rid, page)
        except StatementFailed as exc:
            return render(request, "_error.html", signed, message=exc.message, code=exc.state)
        return _result_html(request, signed, res, shown)

    @router.get("/editor/export/{rid}")
    async def editor_export(request: Request, rid: str) -> Response:
        signed = await signed_in(request)
        ctx = get_ctx(request)
        editor: EditorManager = request.app.state.editor
        res = editor.result(signed.session.id, rid)
        async with ctx.store.session() as s:
            c = await repo.require_connection(s, res.connection)
        limit = int((c.options or {}).get("export_max_rows") or ctx.settings.api.export_max_rows)
        from dbward.api.routers.approvals import approvals_of  # an approved export request raises it

        limit = max(
            limit, await approvals_of(ctx).export_limit_for(signed.actor.username, res.connection) or 0
        )
        if res.conn is not None and res.conn.lock.locked():
            return back(
                "/editor", error="A statement is still running on this connection; cancel it or wait."
            )
        streamed = not res.complete
        # audited before a byte leaves (fail closed); a result still being read from its cursor
        # is recorded with the limit as the most rows the file can hold
        await service.record(
            ctx,
            signed.actor,
            AuditExported(
                what="result",
                format="csv",
                rows=limit if streamed else min(limit, len(res.rows)),
                connection=res.connection,
                filters={
                    "sql": res.sql,
                    "limit": limit,
                    "streamed": streamed,
                    "cut": res.truncated or (res.complete and len(res.rows) > limit),
                },
            ),
        )
        rows = editor.export(signed.session.id, rid, limit)

        async def body() -> AsyncIterator[str]:
            # streamed: rows are read on from the statement's cursor while the file goes out
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(res.columns)
            try:
                async for r in rows:
                    w.writerow(["" if v is None else v for v in r])
                    if buf.tell() >= 64 * 1024:
                        yield buf.getvalue()
                        buf.seek(0)
                        buf.truncate()
            finally:
                await rows.aclose()
            yield buf.getvalue()

        return StreamingResponse(
            body(),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{res.connection}-result.csv"'},
        )

    @router.get("/editor/schema")
    async def editor_schema(request: Request, connection: str, database: str | None = None) -> HTMLResponse:
        signed = await signed_in(request)
        editor: EditorManager = request.app.state.editor
        try:
            tree = await editor.schema(
                signed.session.id,
                signed.user.username,
                connection,
                database or None,
                client=_browser(request, signed),
            )
        except DbwardError as exc:
            return render(request, "_error.html", signed, message=exc.message, code="")
        return render(request, "_schema.html", signed, tree=tree)

    # ================================================================== administration
    @router.get("/admin")
    async def dashboard(request: Request) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        ctx = get_ctx(request)
        return render(
            request,
            "admin/dashboard.html",
            signed,
            f=await figures(ctx.store),
            sessions=len(await live_sessions(ctx)),  # every node's, like the sessions page
        )

    # ------------------------------------------------------------------ users and groups
    async def _users_view(
        request: Request, signed: Signed, status: int = 200, error: str | None = None
    ) -> HTMLResponse:
        ctx = get_ctx(request)
        async with ctx.store.session() as s:
            users = [
                {**service.view(u), **await service.user_extras(s, name)}
                for name, u in (await service.current(s, ctx, "users")).items()
            ]
            groups = [service.view(g) for g in (await service.current(s, ctx, "groups")).values()]
        extra: dict[str, Any] = {"error": error} if error else {}
        return render(
            request, "admin/users.html", signed, status=status, users=users, groups=groups, temp=None, **extra
        )

    @router.get("/admin/users")
    async def users_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        return await _users_view(request, signed)

    @router.post("/admin/users")
    async def user_create(request: Request) -> Response:
        signed = await signed_in(request, admin=True)
        form = await posted(request, signed)
        ctx = get_ctx(request)
        username = _form_str(form, "username")
        password = str(form.get("password", "")) or None
        try:
            if password:
                service.password_policy(ctx, password, username)
            item = UserItem(
                username=username,
                display_name=_form_str(form, "display_name") or None,
                email=_form_str(form, "email") or None,
                admin=form.get("admin") == "on",
            )
            await service.create(ctx, signed.actor, "users", item, password)
            async with ctx.store.transaction() as s:
                (await repo.require_user(s, username)).must_change_password = password is not None
        except DbwardError as exc:
            return back("/admin/users", error=exc.message)
        except ValueError as exc:
            return back("/admin/users", error=service._pydantic_message(exc))
        return back(
            "/admin/users",
            ok=f"User {username} was created"
            + (" (they must change the password at first sign-in)." if password else "."),
        )

    @router.post("/admin/users/{username}/{action}")
    async def user_action(request: Request, username: str, action: str) -> Response:
        signed = await signed_in(request, admin=True)
        form = await posted(request, signed)
        ctx = get_ctx(request)
        try:
            if action in ("disable", "enable"):
                await service.update(ctx, signed.actor, "users", username, {"disabled": action == "disable"})
                if action == "disable":
                    async with ctx.store.transaction() as s:
                        await repo.delete_console_sessions(
                            s, user_id=(await repo.require_user(s, username)).id
                        )
            elif action == "unlock":
                await service.unlock(ctx, signed.actor, username)
            elif action == "reset-totp":
                await service.reset_totp(ctx, signed.actor, username)
            elif action == "password":
                await service.set_password(
                    ctx, signed.actor, username, str(form.get("password", "")), must_change=True
                )
            elif action == "ips":
                await service.set_allowed_ips(
                    ctx, signed.actor, username, _lines(_form_str(form, "allowed_ips"))
                )
            elif action in ("make-admin", "revoke-admin"):
                await service.update(ctx, signed.actor, "users", username, {"admin": action == "make-admin"})
            elif action == "delete":
                await service.delete(ctx, signed.actor, "users", username)
            else:
                raise ValidationError(f"unknown action {action}")
        except ConflictError as exc:
            # the administrator lock-out guard (api/service.py guard_admins) and other conflicts:
            # answered in place with 409, so the refusal is visible and machine-checkable
            return await _users_view(request, signed, status=exc.http_status, error=exc.message)
        except DbwardError as exc:
            return back("/admin/users", error=exc.message)
        return back("/admin/users", ok=f"User {username}: {action} done.")

    @router.post("/admin/groups")
    async def group_save(request: Request) -> Response:
        signed = await signed_in(request, admin=True)
        form = await posted(request, signed)
        ctx = get_ctx(request)
        name = _form_str(form, "name")
        members = sorted(set(_lines(_form_str(form, "members"))))
        try:
            async with ctx.store.session() as s:
                exists = name in await service.current(s, ctx, "groups")
            if exists:
                await service.update(
                    ctx,
                    signed.actor,
                    "groups",
                    name,
                    {"members": members, "description": _form_str(form, "description") or None},
                )
            else:
                item = service.section("groups").item.model_validate(
                    {"name": name, "members": members, "description": _form_str(form, "description") or None}
                )
                await service.create(ctx, signed.actor, "groups", item, None)
        except DbwardError as exc:
            return back("/admin/users", error=exc.message)
        except ValueError as exc:
            return back("/admin/users", error=service._pydantic_message(exc))
        return back("/admin/users", ok=f"Group {name} was saved.")

    @router.post("/admin/groups/{name}/delete")
    async def group_delete(request: Request, name: str) -> Response:
        signed = await signed_in(request, admin=True)
        await posted(request, signed)
        try:
            await service.delete(get_ctx(request), signed.actor, "groups", name)
        except DbwardError as exc:
            return back("/admin/users", error=exc.message)
        return back("/admin/users", ok=f"Group {name} was deleted.")

    # ------------------------------------------------------------------ connections
    @router.get("/admin/connections")
    async def connections_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        ctx = get_ctx(request)
        async with ctx.store.session() as s:
            conns = [service.view(c) for c in (await service.current(s, ctx, "connections")).values()]
        return render(request, "admin/connections.html", signed, conns=conns)

    @router.post("/admin/connections")
    async def connection_create(request: Request) -> Response:
        signed = await signed_in(request, admin=True)
        form = await posted(request, signed)
        ctx = get_ctx(request)
        data: dict[str, Any] = {
            k: _form_str(form, k) or None
            for k in (
                "name",
                "engine",
                "host",
                "port",
                "database",
                "username",
                "tls_mode",
                "listen_port",
                "description",
            )
        }
        data = {k: v for k, v in data.items() if v is not None}
        max_rows = _form_str(form, "max_rows")
        if max_rows:
            data["policy"] = {"max_rows": max_rows}
        export_rows = _form_str(form, "export_max_rows")
        if export_rows:
            data["options"] = {"export_max_rows": int(export_rows) if export_rows.isdigit() else export_rows}
        password = str(form.get("password", "")) or None
        try:
            item = service.section("connections").item.model_validate(data)
            await service.create(ctx, signed.actor, "connections", item, password)
        except DbwardError as exc:
            return back("/admin/connections", error=exc.message)
        except ValueError as exc:
            return back("/admin/connections", error=service._pydantic_message(exc))
        return back("/admin/connections", ok=f"Connection {data.get('name')} was added.")

    @router.post("/admin/connections/{name}/test")
    async def connection_test(request: Request, name: str) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        await posted(request, signed)
        try:
            steps = await run_connection_test(get_ctx(request), name)
        except DbwardError as exc:
            return render(request, "_error.html", signed, message=exc.message, code="")
        return render(request, "admin/_test.html", signed, steps=steps, name=name)

    @router.post("/admin/connections/{name}/delete")
    async def connection_delete(request: Request, name: str) -> Response:
        signed = await signed_in(request, admin=True)
        await posted(request, signed)
        try:
            await service.delete(get_ctx(request), signed.actor, "connections", name)
        except DbwardError as exc:
            return back("/admin/connections", error=exc.message)
        return back("/admin/connections", ok=f"Connection {name} was deleted.")

    # ------------------------------------------------------------------ grants and policies
    @router.get("/admin/grants")
    async def grants_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        ctx = get_ctx(request)
        async with ctx.store.session() as s:
            grants = [service.view(g) for g in (await service.current(s, ctx, "grants")).values()]
            conns = sorted((await service.current(s, ctx, "connections")).keys())
            users = sorted((await service.current(s, ctx, "users")).keys())
            groups = sorted((await service.current(s, ctx, "groups")).keys())
            ptypes = [service.view(p) for p in (await service.current(s, ctx, "privilege_types")).values()]
            rules = [service.view(r) for r in (await service.current(s, ctx, "rules")).values()]
            masking = (
                [service.view(m) for m in (await service.current(s, ctx, "masking_rules")).values()]
                if "masking_rules" in SECTIONS
                else None
            )
        from dbward.policy.model import BUILTIN_PRIVILEGE_TYPES

        privileges = [p.name for p in BUILTIN_PRIVILEGE_TYPES] + [p["name"] for p in ptypes]
        return render(
            request,
            "admin/grants.html",
            signed,
            grants=grants,
            conns=conns,
            users=users,
            groups=groups,
            privileges=privileges,
            ptypes=ptypes,
            rules=rules,
            masking=masking,
            patterns=_masking_patterns(),
        )

    @router.post("/admin/grants")
    async def grant_create(request: Request) -> Response:
        signed = await signed_in(request, admin=True)
        form = await posted(request, signed)
        ctx = get_ctx(request)
        data: dict[str, Any] = {
            "name": _form_str(form, "name"),
            "subject": _form_str(form, "subject"),
            "connection": _form_str(form, "connection"),
            "privileges": [str(p) for p in form.getlist("privileges")]
            or _lines(_form_str(form, "privileges_text")),
        }
        tables = _lines(_form_str(form, "tables"))
        if tables:
            data["scope"] = {"tables": tables}
        expires = _form_str(form, "expires_at")
        if expires:
            data["expires_at"] = expires
        try:
            item = service.section("grants").item.model_validate(data)
            await service.create(ctx, signed.actor, "grants", item, None)
        except DbwardError as exc:
            return back("/admin/grants", error=exc.message)
        except ValueError as exc:
            return back("/admin/grants", error=service._pydantic_message(exc))
        return back("/admin/grants", ok=f"Grant {data['name']} was created.")

    @router.post("/admin/grants/{name}/delete")
    async def grant_delete(request: Request, name: str) -> Response:
        signed = await signed_in(request, admin=True)
        await posted(request, signed)
        try:
            await service.delete(get_ctx(request), signed.actor, "grants", name)
        except DbwardError as exc:
            return back("/admin/grants", error=exc.message)
        return back("/admin/grants", ok=f"Grant {name} was deleted.")

    @router.post("/admin/masking-rules")
    async def masking_create(request: Request) -> Response:
        signed = await signed_in(request, admin=True)
        form = await posted(request, signed)
        ctx = get_ctx(request)
        data: dict[str, Any] = {
            "name": _form_str(form, "name"),
            "connection": _form_str(form, "connection") or "*",
            "table": _form_str(form, "table") or "*",
            "column": _form_str(form, "column"),
            "pattern": _form_str(form, "pattern") or None,
            "exempt": _lines(_form_str(form, "exempt")),
        }
        try:
            if "masking_rules" not in SECTIONS:
                raise ValidationError("Masking rules are not part of this build yet.")
            item = service.section("masking_rules").item.model_validate(data)
            await service.create(ctx, signed.actor, "masking_rules", item, None)
        except DbwardError as exc:
            return back("/admin/grants", error=exc.message)
        except ValueError as exc:
            return back("/admin/grants", error=service._pydantic_message(exc))
        return back("/admin/grants", ok=f"Masking rule {data['name']} was created.")

    @router.post("/admin/masking-rules/{name}/delete")
    async def masking_delete(request: Request, name: str) -> Response:
        signed = await signed_in(request, admin=True)
        await posted(request, signed)
        try:
            await service.delete(get_ctx(request), signed.actor, "masking_rules", name)
        except DbwardError as exc:
            return back("/admin/grants", error=exc.message)
        return back("/admin/grants", ok=f"Masking rule {name} was deleted.")

    # ------------------------------------------------------------------ sessions
    @router.get("/admin/sessions")
    async def sessions_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        return render(request, "admin/sessions.html", signed, sessions=await live_sessions(get_ctx(request)))

    @router.post("/admin/sessions/{sid}/kill")
    async def session_kill(request: Request, sid: str) -> Response:
        signed = await signed_in(request, admin=True)
        await posted(request, signed)
        try:
            done = await kill_session(get_ctx(request), signed.actor, sid)
        except DbwardError as exc:
            return back("/admin/sessions", error=exc.message)
        if not done:
            return back(
                "/admin/sessions",
                ok="The node that holds the session was asked to end it; it has not confirmed yet.",
            )
        return back("/admin/sessions", ok="The session was ended.")

    # ------------------------------------------------------------------ audit
    def _audit_query(request: Request) -> tuple[AuditQuery, dict[str, str]]:
        p = {
            k: v.strip()
            for k, v in request.query_params.items()
            if v.strip() and k not in ("after", "ok", "error")
        }

        def when(key: str) -> datetime | None:
            if key not in p:
                return None
            try:
                t = datetime.fromisoformat(p[key])
            except ValueError:
                raise ValidationError(f"{key} must be a date and time such as 2026-01-31T09:00") from None
            return t if t.tzinfo else t.replace(tzinfo=UTC)

        q = AuditQuery(
            since=when("since"),
            until=when("until"),
            user=p.get("user"),
            connection=p.get("connection"),
            type=p.get("type"),
            effect=p.get("effect"),
            session_id=p.get("session_id"),
            text=p.get("text"),
        )
        return q, p

    @router.get("/admin/audit")
    async def audit_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        try:
            q, params = _audit_query(request)
        except DbwardError as exc:
            return render(
                request,
                "admin/audit.html",
                signed,
                rows=[],
                params={},
                error=exc.message,
                next_after=None,
                export="",
            )
        after = int(request.query_params.get("after", "0") or 0)
        rows = await search(get_ctx(request).store, q, limit=101, after_id=after)
        nxt = rows[99][0] if len(rows) > 100 else None
        from urllib.parse import urlencode

        return render(
            request,
            "admin/audit.html",
            signed,
            rows=[{"id": rid, **rec} for rid, rec in rows[:100]],
            params=params,
            next_after=nxt,
            qs=urlencode(params),
        )

    @router.get("/admin/audit/export")
    async def audit_export(request: Request) -> Response:
        signed = await signed_in(request, admin=True)
        q, _ = _audit_query(request)
        fmt = request.query_params.get("format", "csv")
        fmt = fmt if fmt in ("csv", "jsonl") else "csv"
        body, _n = await export_audit(get_ctx(request), signed.actor, q, fmt)
        return Response(
            body,
            media_type="text/csv" if fmt == "csv" else "application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="dbward-audit.{fmt}"'},
        )

    # ------------------------------------------------------------------ API tokens
    @router.get("/admin/api-tokens")
    async def api_tokens_page(request: Request) -> HTMLResponse:
        signed = await signed_in(request, admin=True)
        ctx = get_ctx(request)
        async with ctx.store.session() as s:
            tokens = [token_out(t, u) for t, u in await repo.list_api_tokens(s)]
            users = sorted((await service.current(s, ctx, "users")).keys())
        from dbward.identity.apitokens import SCOPES

        return render(
            request, "admin/api_tokens.html", signed, tokens=tokens, users=users, scopes=SCOPES, new=None
        )

    @router.post("/admin/api-tokens")
    async def api_token_create(request: Request) -> Response:
        signed = await signed_in(request, admin=True)
        form = await posted(request, signed)
        ctx = get_ctx(request)
        try:
            body = ApiTokenCreate.model_validate(
                {
                    "name": _form_str(form, "name"),
                    "user": _form_str(form, "user"),
                    "scopes": [str(x) for x in form.getlist("scopes")],
                    "allowed_ips": _lines(_form_str(form, "allowed_ips")),
                    "expires_at": _form_str(form, "expires_at") or None,
                    "description": _form_str(form, "description") or None,
                }
            )
            created = await create_token(ctx, signed.actor, body)
        except DbwardError as exc:
            return back("/admin/api-tokens", error=exc.message)
        except ValueError as exc:
            return back("/admin/api-tokens", error=service._pydantic_message(exc))
        async with ctx.store.session() as s:
            tokens = [token_out(t, u) for t, u in await repo.list_api_tokens(s)]
            users = sorted((await service.current(s, ctx, "users")).keys())
        from dbward.identity.apitokens import SCOPES

        return render(
            request, "admin/api_tokens.html", signed, tokens=tokens, users=users, scopes=SCOPES, new=created
        )

    @router.post("/admin/api-tokens/{name}/revoke")
    async def api_token_revoke(request: Request, name: str) -> Response:
        signed = await signed_in(request, admin=True)
        await posted(request, signed)
        try:
            await revoke_token(get_ctx(request), signed.actor, name)
        except DbwardError as exc:
            return back("/admin/api-tokens", error=exc.message)
        return back("/admin/api-tokens", ok=f"API token {name} was revoked.")

    router.include_router(approvals_router(Console(render, signed_in, posted, back)))
    return router


def install_console(app: Any, ctx: Any) -> None:
    """Sign-in service, editor, HTML error pages and redirects for the console."""
    from dbward.web.security import SignIn as _SignIn

    app.state.signin = _SignIn(ctx)
    templates = _templates()

    async def redirect(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Redirect)
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": exc.to})
        return RedirectResponse(exc.to, status_code=303)

    def render_error(request: Request, status: int, message: str) -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            "error.html",
            {"message": message, "me": None, "csrf": "", "path": request.url.path},
            status_code=status,
        )

    app.add_exception_handler(Redirect, redirect)
    app.state.render_error = render_error
