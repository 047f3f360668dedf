"""Who is calling the REST API: API tokens, their scopes, and the address rules.

Counterpart of ``web/security.py`` (console sessions). Both end in an :class:`Actor`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from fastapi import Depends, Request

from dbward.api.context import Actor, ApiContext, client_ip, get_ctx
from dbward.api.errors import Forbidden, NotSignedIn, RateLimited
from dbward.api.service import record
from dbward.audit.events import SigninFailed
from dbward.errors import AuthenticationError
from dbward.identity.apitokens import hash_token, scope_allows
from dbward.identity.ipaccess import allowed
from dbward.store import repo

TOUCH_EVERY = timedelta(minutes=1)


def _throttled_message(ctx: ApiContext, ip: str) -> str:
    a = ctx.settings.api
    return (
        f"{ip} sent {a.token_failures} invalid API tokens within {a.token_failure_window_seconds:g} seconds, "
        f"so API tokens from it are refused until that window ends (api.token_failures, "
        f"api.token_failure_window_seconds)"
    )


def _aware(d: datetime | None) -> datetime | None:
    return None if d is None else (d if d.tzinfo else d.replace(tzinfo=UTC))


async def api_actor(request: Request) -> Actor:
    ctx = get_ctx(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotSignedIn(
            "this call needs an API token: send 'Authorization: Bearer dbwa_...' "
            "(an administrator creates tokens in the console under API tokens)"
        )
    ip = client_ip(request)
    now = datetime.now(UTC)
    throttle = ctx.token_throttle
    clock = time.monotonic()
    if throttle is not None:
        wait = throttle.retry_after(ip, clock)
        if wait is not None:
            # refused without looking at the token: guessing must cost the whole window
            raise RateLimited(_throttled_message(ctx, ip), wait)
    async with ctx.store.transaction() as s:
        found = await repo.api_token_by_hash(s, hash_token(token.strip()))
        reason = None
        ip_refused = False
        if found is None:
            reason = "unknown API token"
        else:
            tok, user = found
            exp = _aware(tok.expires_at)
            if tok.revoked_at is not None:
                reason = f"API token {tok.name} was revoked"
            elif exp is not None and exp <= now:
                reason = f"API token {tok.name} expired"
            elif user.disabled:
                reason = f"the owner of API token {tok.name} is disabled"
        if reason is None and found is not None:
            tok, user = found
            if not allowed(ip, tok.allowed_ips or []):
                reason = f"API token {tok.name} is not allowed from {ip}"
            elif not allowed(ip, ctx.settings.api.allowed_ips):
                reason = f"the API is not open to {ip} (api.allowed_ips)"
            elif not allowed(ip, await repo.user_ip_rules(s, user.id)):
                reason = f"user {user.username} may not use the API from {ip}"
            ip_refused = reason is not None
            last = _aware(tok.last_used_at)
            if reason is None and (last is None or now - last > TOUCH_EVERY):
                tok.last_used_at = now
    if reason is not None or found is None:
        reason = reason or "unknown API token"
        starts_refusing = throttle is not None and throttle.failed(ip, clock)
        if starts_refusing:
            reason += f"; {_throttled_message(ctx, ip)}"
        await record(
            ctx,
            None,
            SigninFailed(
                surface="api",
                method="api_token",
                reason=reason,
                client_addr=ip,
                user=found[1].username if found else None,
            ),
        )
        if ip_refused:
            raise Forbidden(f"this API token cannot be used from {ip}")
        raise AuthenticationError("the API token is not valid (unknown, revoked or expired)")
    tok, user = found
    return Actor(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        surface="api",
        client_ip=ip,
        scopes=frozenset(tok.scopes or []),
        token_name=tok.name,
        client_program=(request.headers.get("user-agent") or "")[:64] or None,
    )


def need(area: str, *, write: bool = False) -> Callable[..., Awaitable[Actor]]:
    """A dependency: an administrator's token whose scopes cover ``area`` (read or write)."""

    async def dep(request: Request, actor: Actor = Depends(api_actor)) -> Actor:
        what = f"{area}:{'write' if write else 'read'}"
        if not actor.is_admin:
            raise Forbidden(f"this needs an administrator ({what}); {actor.username} is not an administrator")
        if not scope_allows(actor.scopes, area, write):
            scopes = ", ".join(sorted(actor.scopes)) or "none"
            raise Forbidden(
                f"API token {actor.token_name} has the scopes {scopes}, which do not include {what}"
            )
        if not allowed(actor.client_ip, get_ctx(request).settings.api.admin_allowed_ips):
            raise Forbidden(f"administration is not open to {actor.client_ip} (api.admin_allowed_ips)")
        return actor

    return dep
