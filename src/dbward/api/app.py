"""The app factory: one ASGI app for the REST API (/api/v1), the console and its static files.

``create_app(node)`` takes everything from the running node (store, journal, sessions, the
editor's token registry); ``create_app_from(ctx)`` takes an :class:`ApiContext` directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dbward import __version__ as VERSION
from dbward.api.context import ApiContext
from dbward.api.errors import install_error_handlers
from dbward.api.routers import approvals, me, objects, ops, tokens
from dbward.identity.throttle import FailureThrottle

if TYPE_CHECKING:
    from dbward.node import Node

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

#: the console has no inline script or style, so the policy can be strict
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

DESCRIPTION = """Everything an administrator can do in the dbward console, for ERP, ITSM and HR systems.

Authenticate with an API token created by an administrator: `Authorization: Bearer dbwa_...`.
Errors are always `{"error": {"code": "...", "message": "..."}}`. Lists take `limit` and
`cursor` (pass back `next_cursor`). Every change is recorded in the audit trail as
`admin.change` with before and after values.
"""


class SecurityHeaders:
    """Security headers on every response. Plain ASGI (not BaseHTTPMiddleware), so that a
    request's ``is_disconnected`` still sees the client go away (the SQL editor relies on it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (
                    ("content-security-policy", CSP),
                    ("x-content-type-options", "nosniff"),
                    ("x-frame-options", "DENY"),
                    ("referrer-policy", "no-referrer"),
                    ("cross-origin-opener-policy", "same-origin"),
                    ("permissions-policy", "camera=(), microphone=(), geolocation=()"),
                ):
                    if name not in headers:
                        headers[name] = value
                if not path.startswith("/static/") and "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
                if https:
                    headers["strict-transport-security"] = "max-age=31536000; includeSubDomains"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def context_from_node(node: Node) -> ApiContext:
    return ApiContext(
        settings=node.settings,
        store=node.store,
        journal=node.journal,
        sessions=node.sessions,
        ephemeral=node.ephemeral,
        node_name=node.name,
        node=node,
        cluster=node.cluster,
    )


def create_app(node: Node) -> FastAPI:
    return create_app_from(context_from_node(node))


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Whether this node answers (no authentication)."""
        return {"status": "ok", "version": VERSION}

    router.include_router(me.router)
    router.include_router(objects.router)
    router.include_router(tokens.router)
    router.include_router(ops.router)
    router.include_router(approvals.router)
    return router


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    editor = getattr(app.state, "editor", None)
    if editor is not None:
        await editor.close_all()


def create_app_from(ctx: ApiContext, *, console: bool = True) -> FastAPI:
    a = ctx.settings.api
    ctx.trusted = [ipaddress.ip_network(n, strict=False) for n in a.trusted_proxies]
    ctx.token_throttle = FailureThrottle(
        limit=a.token_failures,
        window_seconds=a.token_failure_window_seconds,
        max_clients=a.token_failure_max_clients,
    )
    app = FastAPI(
        title="dbward API",
        version=VERSION,
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=_lifespan,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    app.include_router(api_router())
    if console:
        from dbward.web.console import console_router, install_console
        from dbward.web.editor import EditorManager

        app.state.editor = EditorManager(ctx)
        install_console(app, ctx)
        app.include_router(console_router())
        app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")

    app.add_middleware(SecurityHeaders)
    return app


def openapi_document(app: FastAPI | None = None) -> dict[str, Any]:
    """The OpenAPI document as checked into docs/openapi.json (no node needed)."""
    if app is None:
        app = FastAPI(
            title="dbward API",
            version=VERSION,
            description=DESCRIPTION,
            openapi_url="/api/v1/openapi.json",
        )
        app.include_router(api_router())
    return app.openapi()
