"""The one HTTP error mapping of the API: every error body is ``{"error": {"code", "message"}}``.

Counterpart of the PostgreSQL and MySQL error mappings in ``proxy/``: a :class:`DbwardError`
keeps its ``http_status`` and ``code``; request validation problems become 422
``invalid_request`` with a sentence naming the field; unknown routes and methods keep their
status with a stable code.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from dbward.errors import DbwardError

log = logging.getLogger(__name__)


class Forbidden(DbwardError):
    """Signed in, but not allowed to do this (scope, role, address range)."""

    sqlstate = "42501"
    http_status = 403
    code = "forbidden"


class NotSignedIn(DbwardError):
    http_status = 401
    code = "authentication_required"


class TooManyAttempts(DbwardError):
    http_status = 429
    code = "locked_out"


class RateLimited(DbwardError):
    """Too many failed attempts from this client address; answered with ``Retry-After``."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "the request"


def validation_message(exc: RequestValidationError) -> str:
    msgs = []
    for err in exc.errors()[:5]:
        where = _field(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "is not valid"))
        if err.get("type") == "missing":
            msg = "is required"
        elif err.get("type") == "extra_forbidden":
            msg = "is not a known field"
        msgs.append(f"{where}: {msg}")
    return "; ".join(msgs) or "the request is not valid"


_STATUS_CODES = {
    400: "bad_request",
    401: "authentication_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "locked_out",
}


def _html(request: Request, status: int, message: str) -> Response | None:
    """The console's error page for console paths (set up by ``web/console.py``), else None."""
    render = getattr(request.app.state, "render_error", None)
    if render is None or request.url.path.startswith("/api/"):
        return None
    response: Response = render(request, status, message)
    return response


def install_error_handlers(app: FastAPI) -> None:
    async def dbward_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DbwardError)
        if exc.http_status >= 500:
            log.error("request %s %s failed: %s", request.method, request.url.path, exc.code)
        headers = {"retry-after": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return _html(request, exc.http_status, exc.message) or JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.http_status, headers=headers
        )

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(error_body("invalid_request", validation_message(exc)), status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else "the request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"there is nothing at {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        page = _html(request, exc.status_code, detail)
        if page is not None:
            return page
        return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(
                "internal_error", "dbward failed to handle this request; the node log has the details"
            ),
            status_code=500,
        )

    app.add_exception_handler(DbwardError, dbward_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
