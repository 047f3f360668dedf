"""Short-lived, single-purpose secrets with which the console's SQL editor logs in to the proxy.

The editor does not run SQL itself: it opens a real proxy session to this node's own listener
over loopback, as the signed-in user, so every statement takes exactly the gate, policy,
masking and audit path of any other client. The password it presents is one of these tokens,
issued for one login and revoked right after it (or when it expires, whichever comes first).
Counterpart: ``store/directory.py`` adds a user's live tokens to their proxy secrets, with the
method ``web_session`` so the audit trail shows how the session authenticated.

Kept in memory on purpose: a token is only ever used by the node that issued it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from dbward.identity.secrets import make_verifiers
from dbward.proxy.engine import StoredSecret

METHOD = "web_session"


@dataclass(frozen=True)
class _Entry:
    username: str
    secret: StoredSecret
    expires: float


class EphemeralTokens:
    def __init__(self, ttl_seconds: float = 60.0) -> None:
        self.ttl = ttl_seconds
        self._tokens: dict[str, _Entry] = {}

    def issue(self, username: str) -> tuple[str, str]:
        """A new token for ``username``: returns (name, secret); the secret is never stored."""
        self._expire()
        name = "web-" + secrets.token_hex(6)
        value = "dbws_" + secrets.token_urlsafe(32)
        stored = StoredSecret(method=METHOD, name=name, verifiers=make_verifiers(value))
        self._tokens[name] = _Entry(username, stored, time.monotonic() + self.ttl)
        return name, value

    def revoke(self, name: str) -> None:
        self._tokens.pop(name, None)

    def secrets_for(self, username: str) -> list[StoredSecret]:
        self._expire()
        return [e.secret for e in self._tokens.values() if e.username == username]

    def _expire(self) -> None:
        now = time.monotonic()
        for name in [n for n, e in self._tokens.items() if e.expires <= now]:
            del self._tokens[name]

    def __len__(self) -> int:
        self._expire()
        return len(self._tokens)
