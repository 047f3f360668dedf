"""REST API tokens: format, hashing and scopes.

A token is ``dbwa_`` followed by 32 random bytes (256 bits, URL-safe base64). Only its
SHA-256 is stored: with that much entropy a slow hash (argon2) adds nothing against guessing
and would cost tens of milliseconds on every API call, while a fast hash still makes a stolen
table useless. The first 12 characters are kept in clear to recognise a token in lists.

Scopes: ``admin`` (everything), ``read`` (read everything), ``<area>:read`` and
``<area>:write`` per area, and ``self`` (the owner's own data only). A token never does more
than its owner may: an admin scope on a non-administrator's token reaches no admin endpoint.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "dbwa_"
AREAS = ("users", "connections", "grants", "policies", "sessions", "audit", "tokens", "approvals")
SCOPES = ("admin", "read", "self", *(f"{a}:{m}" for a in AREAS for m in ("read", "write")))


def new_api_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scope_allows(scopes: frozenset[str] | set[str], area: str, write: bool) -> bool:
    if "admin" in scopes or f"{area}:write" in scopes:
        return True
    if write:
        return False
    return "read" in scopes or f"{area}:read" in scopes
