"""The Engine protocol, the dependencies every engine receives, and the shared session lifecycle.

Counterparts: ``proxy/server.py`` accepts sockets and hands a :class:`ClientConnection` to
the engine registered for the listener's protocol (``proxy/mysql.py``, ``proxy/postgres.py``).
Engines authenticate against :class:`Authenticator`, resolve targets with
:class:`TargetDirectory`, ask the :class:`~dbward.proxy.gate.Gate` about the connection and
every statement, and register live sessions in :class:`SessionRegistry` so that an
administrator can list and kill them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from dbward.config import Settings
from dbward.domain import ClientAddress, Principal, SessionInfo, Target
from dbward.errors import ConnectionDenied, DbwardError, SessionKilled
from dbward.identity.secrets import ScramVerifier, SecretVerifiers, scram_verifier, verify_scram_secret
from dbward.proxy.gate import Gate

log = logging.getLogger(__name__)

#: the id of the session a log line belongs to (set by the lifecycle; read by the log filter)
current_session_id: ContextVar[str] = ContextVar("dbward_session_id", default="-")


# --------------------------------------------------------------------------- identity
@dataclass(frozen=True, kw_only=True)
class StoredSecret:
    """One secret a user may present: their password or one of their proxy tokens."""

    method: str  # "password" | "proxy_token"
    name: str  # "password" or the token's name
    verifiers: SecretVerifiers


@dataclass(frozen=True, kw_only=True)
class UserCredentials:
    principal: Principal
    secrets: tuple[StoredSecret, ...]
    disabled: bool = False


class Authenticator(Protocol):
    async def lookup(self, username: str) -> UserCredentials | None:
        """The user's principal and secrets, or None if no such (enabled) user exists."""
        ...

    async def touch_token(self, username: str, token_name: str) -> None:
        """Record that a proxy token was used (last_used_at)."""
        ...


def verify_cleartext(creds: UserCredentials | None, password: str) -> StoredSecret | None:
    """Check a cleartext password (received over TLS) against every secret of the user, with
    the secrets' SCRAM verifiers (see ``identity.secrets.verify_scram_secret``: argon2 here
    cost ~200 ms of CPU per TLS login). An unknown user (``None``) costs the same work as a
    user with one secret, so the answer's timing does not reveal who exists."""
    if creds is None or not creds.secrets:
        verify_scram_secret(_decoy_scram(), password)
        return None
    for s in creds.secrets:
        if verify_scram_secret(s.verifiers.scram, password):
            return s
    return None


@functools.cache
def _decoy_scram() -> ScramVerifier:
    return scram_verifier(secrets.token_hex(16))


def verify_mysql_native(creds: UserCredentials, nonce: bytes, response: bytes) -> StoredSecret | None:
    """mysql_native_password: response = SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))."""
    if len(response) != 20:
        return None
    for s in creds.secrets:
        stored = s.verifiers.mysql_native
        mask = hashlib.sha1(nonce + stored).digest()
        candidate = bytes(a ^ b for a, b in zip(response, mask, strict=True))
        if hmac.compare_digest(hashlib.sha1(candidate).digest(), stored):
            return s
    return None


def verify_mysql_sha2_fast(creds: UserCredentials, nonce: bytes, response: bytes) -> StoredSecret | None:
    """caching_sha2_password fast path: response = SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)."""
    if len(response) != 32:
        return None
    for s in creds.secrets:
        stored = s.verifiers.mysql_sha2
        mask = hashlib.sha256(stored + nonce).digest()
        candidate = bytes(a ^ b for a, b in zip(response, mask, strict=True))
        if hmac.compare_digest(hashlib.sha256(candidate).digest(), stored):
            return s
    return None


# --------------------------------------------------------------------------- targets
class TargetDirectory(Protocol):
    async def by_listen_port(self, port: int) -> Target | None: ...

    async def by_name(self, name: str) -> Target | None: ...

    async def upstream_password(self, target: Target) -> str | None:
        """The vaulted credential dbward uses upstream; never shown to clients or logs."""
        ...


# --------------------------------------------------------------------------- sessions
@dataclass(kw_only=True)
class LiveSession:
    info: SessionInfo
    protocol: str
    kill: Callable[[str], Awaitable[None]]
    statements: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    busy: bool = False  # a statement is running or streaming
    end_reason: str | None = None  # set by the engine when it knows why the session ends

    def touch(self) -> None:
        self.last_activity = time.monotonic()


class SessionRegistry:
    """Live proxy sessions of this node, for listing and killing.

    ``version`` changes whenever a session comes or goes, so that ``proxy/cluster.py`` can
    tell cheaply whether the snapshot it shares with the other nodes is out of date; the
    sessions themselves never write to the store.
    """

    def __init__(self) -> None:
        self._live: dict[str, LiveSession] = {}
        self.version = 0

    def add(self, live: LiveSession) -> None:
        self._live[live.info.id] = live
        self.version += 1

    def remove(self, session_id: str) -> None:
        if self._live.pop(session_id, None) is not None:
            self.version += 1

    def list(self) -> list[LiveSession]:
        return list(self._live.values())

    def get(self, session_id: str) -> LiveSession | None:
        return self._live.get(session_id)

    async def kill(self, session_id: str, reason: str = "killed by an administrator") -> bool:
        live = self._live.get(session_id)
        if live is None:
            return False
        await live.kill(reason)
        return True

    def __len__(self) -> int:
        return len(self._live)


# --------------------------------------------------------------------------- engines
@dataclass(kw_only=True)
class ClientConnection:
    """An accepted client socket, after any PROXY protocol header, before TLS."""

    sock: socket.socket
    client: ClientAddress
    listener_port: int
    target: Target | None  # fixed by a per-connection listener; None on a shared port
    initial_data: bytes = b""  # bytes read past the PROXY header, to be consumed first


@dataclass(kw_only=True)
class EngineDeps:
    settings: Settings
    auth: Authenticator
    directory: TargetDirectory
    gate: Gate
    sessions: SessionRegistry
    server_tls: ssl.SSLContext | None = None
    node: str = "node-1"
    #: the masking catalogs (``proxy/catalog.py``): the engines map wire column origins with
    #: them; None when the node has none (tests with a policy of their own)
    catalogs: TargetCatalogsView | None = None
    #: the key of masking's deterministic tokens (derived from the store's encryption key)
    masking_key: bytes = b""
    #: the node's other worker processes (``workers.py``); None when the node is one process
    workers: WorkerPeers | None = None


#: at most this many processes per node; numbers naming sessions carry ``index = n % WORKER_SLOTS``
WORKER_SLOTS = 64


class WorkerPeers(Protocol):
    """What an engine needs of its node's other worker processes (``workers.py``).

    A node with ``proxy.workers`` above 1 runs that many processes accepting on the same
    listeners, so a PostgreSQL CancelRequest or a MySQL ``KILL <id>`` may reach a process
    other than the one holding the session. Numbers that name a session (PostgreSQL's cancel
    process id, MySQL's connection id) carry the index of the process that issued them
    (:meth:`stamp`), and a request for another process's session is handed to it."""

    index: int

    def stamp(self, number: int) -> int:
        """``number`` changed so that :meth:`owner` of it is this process."""
        ...

    def owner(self, number: int) -> int:
        """The index of the process that issued ``number``."""
        ...

    async def cancel(self, owner: int, pid: int, secret: bytes) -> None:
        """Hand a PostgreSQL CancelRequest to process ``owner``."""
        ...

    async def kill(self, owner: int, connection_id: int, user: str, *, whole: bool) -> str | None:
        """Ask process ``owner`` to kill (``whole``) or cancel the statement of its MySQL session
        ``connection_id`` of ``user``; None when done, else why not (a sentence)."""
        ...


class TargetCatalogsView(Protocol):
    """What an engine needs of the masking catalogs (implemented by ``proxy/catalog.py``)."""

    def watching(self, session: SessionInfo) -> Any:
        """The catalog read for this session's masking (None: no masking rule applies)."""
        ...

    def suspect(self, session: SessionInfo, why: str) -> bool: ...

    def invalidate(self, target: Target, database: str | None = None) -> None: ...


class Engine(Protocol):
    protocol: ClassVar[str]

    async def serve(self, client: ClientConnection, deps: EngineDeps) -> None:
        """Run one client session to its end. Must not raise for client errors."""
        ...


@asynccontextmanager
async def session_lifecycle(
    deps: EngineDeps,
    session: SessionInfo,
    *,
    protocol: str,
    auth_method: str,
    kill: Callable[[str], Awaitable[None]],
) -> AsyncIterator[LiveSession]:
    """The part of a session every engine shares: connection decision, registry, start/end audit.

    Raises :class:`ConnectionDenied` when the policy refuses the connection (already audited).
    """
    decision = await deps.gate.open_session(session, protocol, auth_method)
    if not decision.allowed:
        raise ConnectionDenied(decision.message)
    live = LiveSession(info=session, protocol=protocol, kill=kill)
    deps.sessions.add(live)
    token = current_session_id.set(session.id)
    started = time.monotonic()
    reason = "client quit"
    try:
        yield live
    except SessionKilled as exc:
        reason = exc.message
        raise
    except DbwardError as exc:
        reason = exc.message
        raise
    except asyncio.CancelledError:
        reason = "dbward is shutting down"
        raise
    except (ConnectionError, OSError) as exc:
        reason = f"connection lost ({exc.__class__.__name__})"
        raise
    finally:
        deps.sessions.remove(session.id)
        current_session_id.reset(token)
        try:
            await deps.gate.close_session(
                session,
                live.end_reason or reason,
                live.statements,
                (time.monotonic() - started) * 1000,
            )
        except DbwardError:
            log.error("session end of %s could not be audited", session.id)


ENGINES: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    ENGINES[cls.protocol] = cls
    return cls
