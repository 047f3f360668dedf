"""Plain types shared by every part of dbward. No I/O and no imports of other dbward modules."""

from dbward.domain.types import (
    ClientAddress,
    EngineType,
    Principal,
    SessionInfo,
    Statement,
    StatementOrigin,
    StatementOutcome,
    Target,
    TlsMode,
)

__all__ = [
    "ClientAddress",
    "EngineType",
    "Principal",
    "SessionInfo",
    "Statement",
    "StatementOrigin",
    "StatementOutcome",
    "Target",
    "TlsMode",
]
