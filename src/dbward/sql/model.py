"""What SQL analysis returns: statement kinds, the objects a statement touches, and the
:class:`Analysis` value the policy reads. Produced by :mod:`dbward.sql.analysis`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class StatementKind(StrEnum):
    """What a statement does. Values are the words a DBA reads in a decision."""

    SELECT = "SELECT"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    MERGE = "MERGE"
    UPSERT = "UPSERT"  # INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE, REPLACE
    CREATE = "CREATE"
    ALTER = "ALTER"
    DROP = "DROP"
    TRUNCATE = "TRUNCATE"
    RENAME = "RENAME"
    MAINTENANCE = "MAINTENANCE"  # VACUUM, ANALYZE TABLE, OPTIMIZE, REINDEX, REFRESH MATERIALIZED VIEW
    GRANT = "GRANT"
    REVOKE = "REVOKE"
    TRANSACTION = "TRANSACTION"  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION, XA
    SET = "SET"  # session variables
    SET_ROLE = "SET ROLE"  # SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE
    SET_GLOBAL = "SET GLOBAL"  # SET GLOBAL/PERSIST, ALTER SYSTEM
    SESSION = "SESSION"  # DISCARD, RESET, LISTEN/UNLISTEN, cursor FETCH/MOVE/CLOSE
    SHOW = "SHOW"  # SHOW, DESCRIBE, HELP
    USE = "USE"
    EXPLAIN = "EXPLAIN"  # without ANALYZE: nothing runs
    CALL = "CALL"  # CALL proc(), and calls of functions that are not built in
    EXECUTE = "EXECUTE"  # PREPARE / EXECUTE / DEALLOCATE
    COPY_FROM = "COPY FROM"
    COPY_TO = "COPY TO"
    LOAD_DATA = "LOAD DATA"
    LOCK = "LOCK"  # LOCK TABLE, SELECT ... FOR UPDATE / FOR SHARE
    NOTIFY = "NOTIFY"
    FILE = "FILE"  # reads or writes files on the database server (INTO OUTFILE, COPY ... PROGRAM)
    PROCEDURAL = "PROCEDURAL"  # DO blocks: arbitrary code the analyser cannot see into
    ADMIN = "ADMIN"  # users and roles, KILL, FLUSH, replication, plugins, extensions
    UNKNOWN = "UNKNOWN"


WRITE_KINDS = frozenset(
    {
        StatementKind.INSERT,
        StatementKind.UPDATE,
        StatementKind.DELETE,
        StatementKind.MERGE,
        StatementKind.UPSERT,
        StatementKind.COPY_FROM,
        StatementKind.LOAD_DATA,
        StatementKind.TRUNCATE,
    }
)
DDL_KINDS = frozenset(
    {
        StatementKind.CREATE,
        StatementKind.ALTER,
        StatementKind.DROP,
        StatementKind.TRUNCATE,
        StatementKind.RENAME,
        StatementKind.MAINTENANCE,
    }
)


class ObjectType(StrEnum):
    TABLE = "table"  # a table or a view: the text does not tell them apart
    ROUTINE = "routine"
    DATABASE = "database"  # MySQL database, PostgreSQL schema for CREATE/DROP SCHEMA
    OTHER = "object"  # index, sequence, type, trigger...


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """A qualified object. ``database`` is the MySQL database or the PostgreSQL database the
    session is in; ``schema`` is the PostgreSQL schema (for MySQL it equals ``database``)."""

    type: ObjectType
    database: str | None
    schema: str | None
    name: str

    @property
    def qualified(self) -> str:
        if self.type is ObjectType.DATABASE:
            return self.schema or self.database or self.name
        prefix = self.schema or self.database
        return f"{prefix}.{self.name}" if prefix else self.name

    def __str__(self) -> str:
        return f"{self.type.value} {self.qualified}"


@dataclass(frozen=True, slots=True, order=True)
class Access:
    """One object touched in one way: ``kind`` on ``obj`` (a read is ``SELECT``)."""

    kind: StatementKind
    obj: ObjectRef


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """Everything the policy needs to know about one SQL text (one or more statements).

    ``kind`` is the first statement's kind (``UNKNOWN`` when any statement could not be
    analysed); ``kinds`` holds every kind found anywhere (other statements of a batch, CTEs,
    subqueries, the statement under ``EXPLAIN ANALYZE``). ``accesses`` pairs kinds with the
    objects they touch; a kind listed in ``opaque_kinds`` was found in a place whose objects
    could not be read, so a policy must require that kind on every object (fail closed).
    """

    sql: str
    dialect: str
    kind: StatementKind
    kinds: frozenset[StatementKind]
    accesses: tuple[Access, ...] = ()
    opaque_kinds: frozenset[StatementKind] = frozenset()
    unfiltered_write: bool = False  # UPDATE or DELETE without WHERE
    reads_files: bool = False
    writes_files: bool = False
    calls_routines: bool = False  # CALL, or a function that is not built in
    procedural: bool = False  # DO block
    locking: bool = False  # SELECT ... FOR UPDATE / FOR SHARE, LOCK TABLE
    fingerprint: str = ""
    fingerprint_hash: str = ""
    reasons: tuple[str, ...] = ()  # why a statement is UNKNOWN, or what was assumed
    statements: tuple[Analysis, ...] = ()  # one per statement when the text holds several
    new_database: str | None = None  # USE db
    new_search_path: tuple[str, ...] | None = None  # SET search_path
    # A hash of everything a policy decision can depend on except the text itself (kinds,
    # accesses, flags, fingerprint): two texts with equal signatures decide alike unless a
    # rule matches on text. In-process only (Python's hash is salted per process).
    signature: int = 0

    def with_signature(self) -> Analysis:
        sig = hash(
            (
                self.kind,
                self.kinds,
                self.accesses,
                self.opaque_kinds,
                self.unfiltered_write,
                self.reads_files,
                self.writes_files,
                self.calls_routines,
                self.procedural,
                self.locking,
                self.fingerprint,
            )
        )
        return replace(self, signature=sig)

    @property
    def unknown(self) -> bool:
        return StatementKind.UNKNOWN in self.kinds

    @property
    def statement_count(self) -> int:
        return len(self.statements) or 1

    @property
    def objects(self) -> tuple[ObjectRef, ...]:
        return tuple(sorted({a.obj for a in self.accesses}))

    @property
    def reads(self) -> tuple[ObjectRef, ...]:
        return tuple(
            sorted({a.obj for a in self.accesses if a.kind in (StatementKind.SELECT, StatementKind.COPY_TO)})
        )

    @property
    def writes(self) -> tuple[ObjectRef, ...]:
        return tuple(sorted({a.obj for a in self.accesses if a.kind in WRITE_KINDS or a.kind in DDL_KINDS}))

    @property
    def routines(self) -> tuple[ObjectRef, ...]:
        return tuple(sorted({a.obj for a in self.accesses if a.obj.type is ObjectType.ROUTINE}))

    def objects_for(self, kind: StatementKind) -> tuple[ObjectRef, ...]:
        return tuple(sorted({a.obj for a in self.accesses if a.kind is kind}))
