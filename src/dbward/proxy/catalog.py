"""The target catalogs masking's lineage reads: tables and views with their ordered columns,
view definitions, and (PostgreSQL) relation OIDs for the wire cross-check.

:class:`TargetCatalogs` implements :class:`~dbward.policy.evaluator.CatalogProvider` for both
engines. It reads a target's catalog over its own upstream connection with the vaulted
credential (PostgreSQL through ``proxy/postgres_upstream.py``, MySQL/MariaDB through PyMySQL in
a thread), keeps one per (connection, database), and gives each a ``version`` that is a hash of
its content, so the evaluator's lineage and decision caches never mix two schemas.

When a catalog is re-read:

* every ``proxy.catalog_refresh_seconds`` in the background while it is in use;
* before the next statement after dbward saw an allowed DDL statement complete on that
  connection (:meth:`TargetCatalogs.invalidate`, called from the gate's completion path);
* when a result's wire origin (a PostgreSQL RowDescription table OID) is not in the catalog,
  or a statement names a table the catalog does not know (:meth:`TargetCatalogs.suspect`,
  at most every few seconds): another tool changed the schema under dbward.

Only the evaluator asks for a catalog, and only when a masking rule applies to the session:
connections without masking rules never pay for one. A catalog that cannot be read raises
:class:`CatalogUnavailable`, and the evaluator denies the statement with that sentence.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import ssl
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from dbward.config import Settings
from dbward.domain import SessionInfo, Target, TlsMode
from dbward.errors import DbwardError
from dbward.proxy.engine import TargetDirectory
from dbward.proxy.tls import client_context
from dbward.sql.lineage import Catalog
from dbward.wire.postgres import messages as m

log = logging.getLogger(__name__)

#: a suspected stale catalog is re-read at most this often (a user naming unknown tables in a
#: loop must not turn into a stream of catalog reads)
SUSPECT_MIN_INTERVAL = 2.0
#: a catalog nobody asked for in this many refresh periods is dropped (and its refresher stops)
IDLE_PERIODS = 10
#: sessions remembered as having masking rules (the oldest are forgotten first)
MAX_SESSIONS = 100_000
#: MySQL databases that are not user data (information_schema stays: GUI tools query it)
MYSQL_SYSTEM = ("mysql", "performance_schema", "sys")

_PG_COLUMNS = """
SELECT c.oid, n.nspname, c.relname, c.relkind, a.attnum, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY c.oid, a.attnum
"""
# Definitions of user views only: the system views of pg_catalog and information_schema are
# read as tables (their definitions reach nothing a masking rule protects, and following them
# would make every GUI metadata query expensive to analyse).
_PG_VIEWS = """
SET search_path = '';
SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY c.oid;
"""


class CatalogUnavailable(DbwardError):
    """The catalog of a connection could not be read."""


@dataclass(frozen=True, slots=True)
class Relation:
    """A relation as the wire names it: PostgreSQL RowDescription carries its OID and the
    column's attribute number."""

    schema: str
    name: str
    columns: dict[int, str]


class TargetCatalog(Catalog):
    """A :class:`Catalog` read from a target, with PostgreSQL relation OIDs."""

    __slots__ = ("loaded_at", "relations")

    def __init__(
        self,
        tables: dict[tuple[str, str], tuple[str, ...]],
        views: dict[tuple[str, str], str],
        *,
        database: str | None,
        relations: dict[int, Relation] | None = None,
    ) -> None:
        h = hashlib.sha256()
        for (s, t), cols in sorted(tables.items()):
            h.update(f"T\0{s}\0{t}\0{chr(1).join(cols)}\n".encode())
        for (s, t), sql in sorted(views.items()):
            h.update(f"V\0{s}\0{t}\0{sql}\n".encode())
        for oid, rel in sorted((relations or {}).items()):
            h.update(f"O\0{oid}\0{rel.schema}\0{rel.name}\0{sorted(rel.columns.items())}\n".encode())
        super().__init__(tables, views, version=h.hexdigest()[:20], database=database)
        self.relations: dict[int, Relation] = relations or {}
        self.loaded_at = time.monotonic()

    def origin(self, table_oid: int, attnum: int) -> tuple[str, str, str] | None:
        """(schema, table, column) of a RowDescription field, or None when unknown."""
        rel = self.relations.get(table_oid)
        if rel is None:
            return None
        col = rel.columns.get(attnum)
        return None if col is None else (rel.schema, rel.name, col)


@dataclass(eq=False)
class _Entry:
    target: Target
    database: str | None
    catalog: TargetCatalog | None = None
    stale: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    last_suspect: float = -math.inf  # never (monotonic time may start near 0 at boot)
    deferred: bool = False  # a re-read is scheduled for the end of the suspect interval
    refresher: asyncio.Task[None] | None = None


class TargetCatalogs:
    """The :class:`~dbward.policy.evaluator.CatalogProvider` of a node (both engines)."""

    def __init__(self, directory: TargetDirectory, settings: Settings) -> None:
        self._directory = directory
        self._settings = settings
        self._entries: dict[tuple[int, str], _Entry] = {}
        # sessions the evaluator read a catalog for (a masking rule applies to them)
        self._sessions: OrderedDict[str, tuple[int, str]] = OrderedDict()
        #: a suspected stale catalog is re-read at most this often (seconds)
        self.suspect_interval = SUSPECT_MIN_INTERVAL
        self.loads = 0  # catalogs read from targets (for tests and metrics)

    # ------------------------------------------------------------------ the provider
    @staticmethod
    def _key(target: Target, database: str | None) -> tuple[int, str]:
        # MySQL: one catalog of every database of the target; PostgreSQL: one per database
        return (target.id, "" if target.engine.value == "mysql" else (database or ""))

    def _entry(self, session: SessionInfo) -> _Entry:
        target = session.target
        key = self._key(target, session.database)
        entry = self._entries.get(key)
        if entry is None or entry.target != target:
            if entry is not None and entry.refresher is not None:
                entry.refresher.cancel()
            db = None if target.engine.value == "mysql" else (session.database or target.database)
            entry = _Entry(target=target, database=db)
            self._entries[key] = entry
        return entry

    def _use(self, session: SessionInfo) -> _Entry:
        entry = self._entry(session)
        entry.last_used = time.monotonic()
        if session.id not in self._sessions:
            self._sessions[session.id] = self._key(session.target, session.database)
            if len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return entry

    def catalog_nowait(self, session: SessionInfo) -> Catalog | None:
        """What :meth:`catalog` would return without reading the target, or None when it
        would read it (not loaded yet, or marked stale): the gate's synchronous path."""
        entry = self._use(session)
        if entry.stale or entry.catalog is None:
            return None
        return entry.catalog

    async def catalog(self, session: SessionInfo) -> Catalog:
        entry = self._use(session)
        if entry.stale or entry.catalog is None:
            async with entry.lock:
                if entry.stale or entry.catalog is None:
                    await self._load(entry)
        assert entry.catalog is not None
        return entry.catalog

    def watching(self, session: SessionInfo) -> TargetCatalog | None:
        """The catalog of the session's connection when the evaluator read one for this session
        (a masking rule applies to it): the engine then checks every result's wire origins."""
        key = self._sessions.get(session.id)
        if key is None:
            return None
        entry = self._entries.get(key)
        return entry.catalog if entry is not None else None

    def invalidate(self, target: Target, database: str | None = None) -> None:
        """Re-read the catalog(s) of ``target`` before they are used again (DDL was run)."""
        for (tid, db), entry in self._entries.items():
            if tid == target.id and (database is None or db in ("", database)):
                entry.stale = True

    def suspect(self, session: SessionInfo, why: str) -> bool:
        """The catalog may be stale (an unknown table or OID): re-read it before its next use,
        unless that was done moments ago. Returns whether a re-read was scheduled."""
        entry = self._entries.get(self._key(session.target, session.database))
        if entry is None:
            return False
        now = time.monotonic()
        wait = entry.last_suspect + self.suspect_interval - now
        if wait > 0:
            # re-read once the interval is over (later statements see it), not now
            if not entry.deferred:
                entry.deferred = True
                asyncio.get_running_loop().call_later(wait, self._deferred_stale, entry)
            return False
        entry.last_suspect = now
        entry.stale = True
        log.info("catalog of connection %s will be re-read: %s", session.target.name, why)
        return True

    @staticmethod
    def _deferred_stale(entry: _Entry) -> None:
        entry.deferred = False
        entry.last_suspect = time.monotonic()
        entry.stale = True

    async def close(self) -> None:
        tasks = [e.refresher for e in self._entries.values() if e.refresher is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._entries.clear()

    # ------------------------------------------------------------------ loading
    async def _load(self, entry: _Entry) -> None:
        target = entry.target
        timeout = self._settings.proxy.connect_timeout_seconds * 3
        try:
            async with asyncio.timeout(timeout):
                password = await self._directory.upstream_password(target)
                if target.engine.value == "mysql":
                    cat = await asyncio.to_thread(_load_mysql, target, password, timeout)
                else:
                    cat = await _load_postgres(target, password, entry.database or target.username)
        except CatalogUnavailable:
            raise
        except TimeoutError:
            raise CatalogUnavailable(
                f"reading the catalog of connection {target.name} took longer than {timeout:g} seconds "
                "(three times proxy.connect_timeout_seconds)"
            ) from None
        except DbwardError as exc:
            raise CatalogUnavailable(
                f"the catalog of connection {target.name} could not be read: {exc.message}"
            ) from None
        except Exception as exc:
            raise CatalogUnavailable(
                f"the catalog of connection {target.name} could not be read ({type(exc).__name__}: {exc})"
            ) from None
        self.loads += 1
        changed = entry.catalog is None or entry.catalog.version != cat.version
        entry.catalog = cat
        entry.stale = False
        if changed:
            log.info(
                "catalog of connection %s read: %d relations, %d views (version %s)",
                target.name,
                len(cat.tables),
                len(cat.views),
                cat.version,
            )
        if entry.refresher is None or entry.refresher.done():
            entry.refresher = asyncio.create_task(
                self._refresh_loop(entry), name=f"catalog-refresh-{target.name}"
            )

    async def _refresh_loop(self, entry: _Entry) -> None:
        period = self._settings.proxy.catalog_refresh_seconds
        while True:
            await asyncio.sleep(period)
            if time.monotonic() - entry.last_used > period * IDLE_PERIODS:
                key = self._key(entry.target, entry.database)
                if self._entries.get(key) is entry:
                    del self._entries[key]
                return
            async with entry.lock:
                await self._load_quietly(entry)

    async def _load_quietly(self, entry: _Entry) -> None:
        try:
            await self._load(entry)
        except CatalogUnavailable as exc:
            # the next statement that needs it tries again, and is denied with this sentence
            entry.stale = True
            log.warning("%s", exc.message)


# --------------------------------------------------------------------------- PostgreSQL
async def _simple_query(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sql: str, target: Target
) -> list[tuple[str | None, ...]]:
    """Run ``sql`` with the simple Query protocol; the text rows of its last result."""
    writer.write(m.Query(sql).encode())
    await writer.drain()
    rows: list[tuple[str | None, ...]] = []
    error: str | None = None
    while True:
        hdr = await reader.readexactly(5)
        t, length = struct.unpack("!cI", hdr)
        body = await reader.readexactly(length - 4)
        if t == b"T":
            rows = []
        elif t == b"D":
            msg = m.decode_backend(t[0], body)
            assert isinstance(msg, m.DataRow)
            rows.append(tuple(None if v is None else v.decode("utf-8", "replace") for v in msg.values))
        elif t == b"E":
            err = m.decode_backend(t[0], body)
            assert isinstance(err, m.ErrorResponse)
            error = err.message
        elif t == b"Z":
            if error is not None:
                raise CatalogUnavailable(
                    f"the catalog of connection {target.name} could not be read: the target answered {error}"
                )
            return rows


async def _load_postgres(target: Target, password: str | None, database: str) -> TargetCatalog:
    from dbward.proxy.postgres_upstream import UpstreamRefused, connect

    try:
        up = await connect(
            target,
            password,
            database,
            {"application_name": "dbward-catalog", "client_encoding": "UTF8"},
            timeout=30,
        )
    except UpstreamRefused as exc:
        raise CatalogUnavailable(
            f"the catalog of connection {target.name} could not be read: the target refused the login "
            f"({exc.error.message})"
        ) from None
    try:
        rows = await _simple_query(up.reader, up.writer, _PG_COLUMNS, target)
        views_rows = await _simple_query(up.reader, up.writer, _PG_VIEWS, target)
        up.writer.write(m.Terminate().encode())
        await up.writer.drain()
    finally:
        up.writer.close()
    tables: dict[tuple[str, str], list[str]] = {}
    relations: dict[int, Relation] = {}
    for oid_s, schema, name, _kind, attnum_s, attname in rows:
        assert oid_s is not None and schema is not None and name is not None and attname is not None
        oid, attnum = int(oid_s), int(attnum_s or 0)
        tables.setdefault((schema, name), []).append(attname)
        rel = relations.get(oid)
        if rel is None:
            rel = relations[oid] = Relation(schema=schema, name=name, columns={})
        rel.columns[attnum] = attname
    views = {(s or "", n or ""): (d or "").strip().rstrip(";") for s, n, d in views_rows}
    return TargetCatalog(
        {k: tuple(v) for k, v in tables.items()}, views, database=database, relations=relations
    )


# --------------------------------------------------------------------------- MySQL / MariaDB
def _load_mysql(target: Target, password: str | None, timeout: float) -> TargetCatalog:
    import pymysql

    ssl_ctx: ssl.SSLContext | None = client_context(target.tls_mode, target.tls_ca)
    kwargs: dict[str, object] = {}
    if target.tls_mode is TlsMode.DISABLE or ssl_ctx is None:
        kwargs["ssl_disabled"] = True
    else:
        kwargs["ssl"] = ssl_ctx
    try:
        conn = pymysql.connect(
            host=target.host,
            port=target.port,
            user=target.username,
            password=password or "",
            connect_timeout=max(1, int(timeout)),
            read_timeout=max(1, int(timeout)),
            charset="utf8mb4",
            program_name="dbward-catalog",
            **kwargs,
        )
    except pymysql.MySQLError as exc:
        raise CatalogUnavailable(
            f"the catalog of connection {target.name} could not be read: dbward cannot log in to "
            f"{target.host}:{target.port} ({exc.args[-1] if exc.args else exc})"
        ) from None
    placeholders = ", ".join(["%s"] * len(MYSQL_SYSTEM))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                f"WHERE TABLE_SCHEMA NOT IN ({placeholders}) "
                "ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
                MYSQL_SYSTEM,
            )
            cols = cur.fetchall()
            cur.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
                f"WHERE TABLE_SCHEMA NOT IN ({placeholders})",
                MYSQL_SYSTEM,
            )
            view_rows = cur.fetchall()
    except pymysql.MySQLError as exc:
        raise CatalogUnavailable(
            f"the catalog of connection {target.name} could not be read: the target answered "
            f"{exc.args[-1] if exc.args else exc}"
        ) from None
    finally:
        conn.close()
    tables: dict[tuple[str, str], list[str]] = {}
    for schema, name, column in cols:
        tables.setdefault((str(schema), str(name)), []).append(str(column))
    views = {(str(s), str(n)): str(d or "") for s, n, d in view_rows}
    return TargetCatalog({k: tuple(v) for k, v in tables.items()}, views, database=None)
