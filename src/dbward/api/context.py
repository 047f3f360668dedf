"""What the API and the console are given (the app factory's dependencies) and who is asking.

:class:`ApiContext` is built once from a node by ``create_app`` and reached through
``request.app.state.ctx``; :class:`Actor` is the signed-in person or API token of one request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from fastapi import Request

from dbward.audit.journal import AuditJournal
from dbward.config import Settings
from dbward.identity.apitokens import scope_allows
from dbward.identity.ephemeral import EphemeralTokens
from dbward.identity.throttle import FailureThrottle
from dbward.proxy.cluster import ClusterSessions
from dbward.proxy.engine import SessionRegistry
from dbward.store.db import Store

Surface = Literal["api", "console"]


@dataclass(kw_only=True)
class ApiContext:
    settings: Settings
    store: Store
    journal: AuditJournal
    sessions: SessionRegistry
    ephemeral: EphemeralTokens
    node_name: str
    #: the node itself, for the SQL editor's loopback listeners (None: no editor)
    node: object | None = None
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    #: the cluster-wide session list (None: this node's sessions only)
    cluster: ClusterSessions | None = None
    #: failed API token authentications per client address (set up by ``create_app_from``)
    token_throttle: FailureThrottle | None = None


@dataclass(frozen=True, kw_only=True)
class Actor:
    user_id: int
    username: str
    is_admin: bool
    surface: Surface
    client_ip: str
    scopes: frozenset[str] = frozenset({"admin", "self"})
    token_name: str | None = None
    client_program: str | None = None

    def may(self, area: str, *, write: bool) -> bool:
        return self.is_admin and scope_allows(self.scopes, area, write)


def get_ctx(request: Request) -> ApiContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


def client_ip(request: Request) -> str:
    """The client's address: the peer, or the last X-Forwarded-For hop a trusted proxy added."""
    peer = request.client.host if request.client else "0.0.0.0"
    ctx = get_ctx(request)
    if not ctx.trusted:
        return peer
    try:
        peer_ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(peer_ip in n for n in ctx.trusted if n.version == peer_ip.version):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not any(ip in n for n in ctx.trusted if n.version == ip.version):
            return str(ip)
    return hops[0] if hops else peer
