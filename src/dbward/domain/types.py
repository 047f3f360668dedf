"""The nouns of dbward: who (Principal), where (Target), which session, which statement.

These are values passed between the proxy, policy, audit and API layers; they carry no
behaviour that needs I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal


class EngineType(StrEnum):
    MYSQL = "mysql"
    POSTGRES = "postgres"


class TlsMode(StrEnum):
    """How dbward talks TLS to a target (names as libpq's sslmode)."""

    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


@dataclass(frozen=True, kw_only=True)
class Principal:
    """An authenticated dbward user with the groups and roles that decide what they may do."""

    user_id: int
    username: str
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    is_admin: bool = False
    auth_method: str = "password"  # password | proxy_token | api_token | sso


@dataclass(frozen=True, kw_only=True)
class Target:
    """A database connection registered in dbward (what users reach through a listener)."""

    id: int
    name: str
    engine: EngineType
    host: str
    port: int
    database: str | None = None
    username: str
    tls_mode: TlsMode = TlsMode.PREFER
    tls_ca: str | None = None
    listen_port: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # the credential never reaches a repr, log or traceback
        return f"Target(id={self.id}, name={self.name!r}, engine={self.engine.value})"


@dataclass(frozen=True, kw_only=True)
class ClientAddress:
    """Where a client connects from and how dbward learned it."""

    host: str
    port: int
    source: Literal["direct", "proxy-v1", "proxy-v2", "web"] = "direct"
    peer_host: str | None = None  # the load balancer's address when source is proxy-*


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(kw_only=True)
class SessionInfo:
    """A live client session. Mutable: the database changes with USE / COM_INIT_DB."""

    id: str = field(default_factory=new_session_id)
    principal: Principal
    target: Target
    client: ClientAddress
    database: str | None = None
    client_program: str | None = None
    protocol_user: str | None = None
    tls: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    attributes: dict[str, str] = field(default_factory=dict)


class StatementOrigin(StrEnum):
    """Which protocol operation carried a statement."""

    QUERY = "query"  # COM_QUERY, PostgreSQL simple Query
    PREPARE = "prepare"  # COM_STMT_PREPARE, Parse
    EXECUTE = "execute"  # COM_STMT_EXECUTE, Bind/Execute
    INIT_DB = "init_db"  # COM_INIT_DB
    COPY = "copy"
    FIELD_LIST = "field_list"
    WEB = "web"  # console SQL editor
    APPROVED = "approved"  # run by dbward for an approved request


@dataclass(frozen=True, kw_only=True)
class Statement:
    """One statement as the gate sees it: exactly the text the client sent."""

    sql: str
    origin: StatementOrigin = StatementOrigin.QUERY
    database: str | None = None
    params: tuple[Any, ...] | None = None
    statement_name: str | None = None  # prepared statement name / id
    index_in_batch: int = 0  # position in a multi-statement message
    batch_size: int = 1


@dataclass(frozen=True, kw_only=True)
class StatementOutcome:
    """What happened to an allowed statement, for the audit trail."""

    rows: int | None = None
    affected: int | None = None
    bytes_sent: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    error_code: str | None = None
    truncated: bool = False
