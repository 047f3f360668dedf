"""The console's SQL editor: statements run through this node's own proxy, never beside it.

For each signed-in person and connection the editor opens a real client session to the node's
listener for that connection over loopback (asyncpg for PostgreSQL, PyMySQL for MySQL and
MariaDB), logging in as that person with a one-login token from ``identity/ephemeral.py``
and the program name ``dbward-console``. The gate, the policy, masking and the audit trail
therefore treat the editor exactly like psql or DBeaver: a refused DELETE comes back as the
proxy's native error with the policy's reason, and masked columns arrive masked.

Cancel from the browser is the driver's cancel (a PostgreSQL CancelRequest through the proxy;
for MySQL the client connection is closed, on which the proxy runs KILL QUERY upstream). When
the browser goes away mid-statement, the connection is closed the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dbward.api.context import ApiContext
from dbward.errors import DbwardError, NotFoundError, UnsupportedFeature, UpstreamError
from dbward.store import repo
from dbward.store.directory import target_from_row

log = logging.getLogger(__name__)

PROGRAM = "dbward-console"
PAGE_SIZE = 100
IDLE_SECONDS = 15 * 60
KEEP_RESULTS = 5


class StatementFailed(DbwardError):
    """The proxy or the target refused or failed the statement; the message is theirs."""

    http_status = 400
    code = "statement_failed"

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.state = sqlstate or ""


@dataclass
class Result:
    id: str
    connection: str
    sql: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    status: str = ""
    truncated: bool = False
    elapsed_ms: float = 0.0

    def page(self, n: int) -> list[list[str | None]]:
        return self.rows[n * PAGE_SIZE : (n + 1) * PAGE_SIZE]

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.rows) // PAGE_SIZE))


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    return str(v)


@dataclass
class EditorConn:
    engine: str
    connection: str
    database: str | None
    driver: Any
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[Result] | None = None
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.engine == "postgres":
                self.driver.terminate()
            else:
                _shutdown_mysql(self.driver)
        except Exception:  # closing a half-broken socket must not fail the caller
            log.debug("editor connection close failed", exc_info=True)


def _shutdown_mysql(conn: Any) -> None:
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        conn.close()


class EditorManager:
    """Editor connections and results of every console session of this app."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.conns: dict[tuple[str, str], EditorConn] = {}
        self.results: dict[str, tuple[str, Result]] = {}  # id -> (console session, result)
        self._loopback: dict[int, int] = {}  # connection id -> port of a loopback listener we opened

    # ------------------------------------------------------------------ where to connect
    async def _endpoint(self, connection: str, database: str | None) -> tuple[str, str, int, str]:
        from dbward.node import Node, load_engines
        from dbward.proxy.engine import ENGINES

        node = self.ctx.node
        if not isinstance(node, Node):
            raise UnsupportedFeature("The SQL editor needs a running dbward node (`dbward up`).")
        async with self.ctx.store.session() as s:
            row = await repo.get_connection(s, connection)
            if row is None:
                raise NotFoundError(f"connection {connection} does not exist")
            target = target_from_row(row)
        load_engines()
        protocol = target.engine.value
        if protocol not in ENGINES:
            raise UnsupportedFeature(
                f"The {protocol} proxy engine is not available in this build yet, so the SQL editor "
                f"cannot open {connection}."
            )
        db = database or target.database or ""
        for lst in node.proxy.listeners:
            if lst.target is not None and lst.target.id == target.id:
                return protocol, _loop_host(lst.host), lst.bound_port, db
        for lst in node.proxy.listeners:
            if lst.target is None and lst.protocol == protocol:
                return (
                    protocol,
                    _loop_host(lst.host),
                    lst.bound_port,
                    f"{connection}/{db}" if db else connection,
                )
        port = self._loopback.get(target.id)
        if port is None:
            lst = await node.proxy.add_listener(protocol, "127.0.0.1", 0, target)
            port = self._loopback[target.id] = lst.bound_port
        return protocol, "127.0.0.1", port, db

    async def _open(self, username: str, connection: str, database: str | None) -> EditorConn:
        protocol, host, port, dbname = await self._endpoint(connection, database)
        name, secret = self.ctx.ephemeral.issue(username)
        try:
            if protocol == "postgres":
                import asyncpg

                try:
                    driver = await asyncpg.connect(
                        host=host,
                        port=port,
                        user=username,
                        password=secret,
                        database=dbname or None,
                        # Over TLS the proxy checks a cleartext password against every secret of the
                        # user (one-login tokens included); plain SCRAM only tries the first one.
                        ssl=_loopback_tls(),
                        timeout=15,
                        statement_cache_size=0,
                        server_settings={"application_name": PROGRAM},
                    )
                except asyncpg.PostgresError as exc:
                    raise StatementFailed(
                        getattr(exc, "message", str(exc)), getattr(exc, "sqlstate", None)
                    ) from None
                except (OSError, TimeoutError) as exc:
                    raise UpstreamError(
                        f"the editor could not reach the proxy listener on port {port}: {exc}"
                    ) from None
            else:
                import pymysql

                def _connect() -> Any:
                    return pymysql.connect(
                        host=host,
                        port=port,
                        user=username,
                        password=secret,
                        database=dbname or None,
                        program_name=PROGRAM,
                        ssl_disabled=True,
                        autocommit=True,
                        connect_timeout=15,
                        charset="utf8mb4",
                    )

                try:
                    driver = await asyncio.to_thread(_connect)
                except pymysql.err.MySQLError as exc:
                    raise StatementFailed(_mysql_message(exc)) from None
        finally:
            self.ctx.ephemeral.revoke(name)
        return EditorConn(engine=protocol, connection=connection, database=database, driver=driver)

    async def _conn(self, owner: str, username: str, connection: str, database: str | None) -> EditorConn:
        await self._reap()
        key = (owner, connection)
        ec = self.conns.get(key)
        if ec is not None and (ec.closed or ec.database != database or _is_closed(ec)):
            await ec.close()
            ec = None
        if ec is None:
            ec = await self._open(username, connection, database)
            self.conns[key] = ec
        ec.last_used = time.monotonic()
        return ec

    # ------------------------------------------------------------------ running
    async def run(
        self,
        owner: str,
        username: str,
        connection: str,
        database: str | None,
        sql: str,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> Result:
        """Run ``sql`` as ``username``; ``gone`` says whether the browser went away meanwhile."""
        sql = sql.strip()
        if not sql:
            raise StatementFailed("There is no statement to run.")
        ec = await self._conn(owner, username, connection, database)
        if ec.lock.locked():
            raise StatementFailed("A statement is still running on this connection; cancel it or wait.")
        async with ec.lock:
            res = Result(id=secrets.token_urlsafe(9), connection=connection, sql=sql)
            started = time.monotonic()
            runner = self._run_pg(ec, res) if ec.engine == "postgres" else self._run_mysql(ec, res)
            ec.task = asyncio.create_task(runner, name=f"editor-{connection}-{res.id}")
            try:
                async with asyncio.timeout(self.ctx.settings.api.editor_statement_timeout_seconds):
                    while not ec.task.done():
                        await asyncio.wait({ec.task}, timeout=0.25)
                        if not ec.task.done() and gone is not None and await gone():
                            await self._abandon(owner, ec)
                            raise StatementFailed("The browser went away; the statement was cancelled.")
            except TimeoutError:
                await self._abandon(owner, ec)
                raise StatementFailed(
                    "The statement ran longer than the editor allows and was cancelled."
                ) from None
            try:
                result = await ec.task
            except asyncio.CancelledError:
                if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                raise StatementFailed("The statement was cancelled.") from None
            finally:
                ec.task = None
            result.elapsed_ms = (time.monotonic() - started) * 1000
        self._keep(owner, result)
        return result

    async def _run_pg(self, ec: EditorConn, res: Result) -> Result:
        import asyncpg

        limit = self.ctx.settings.api.editor_max_rows
        conn = ec.driver
        try:
            try:
                stmt = await conn.prepare(res.sql)
            except asyncpg.PostgresSyntaxError as exc:
                if "multiple commands" not in str(exc):
                    raise
                res.status = await conn.execute(res.sql)
                return res
            records = await stmt.fetch()
            res.columns = [a.name for a in stmt.get_attributes()]
            res.truncated = len(records) > limit
            res.rows = [[_text(v) for v in r.values()] for r in records[:limit]]
            res.status = stmt.get_statusmsg() or ""
        except asyncpg.PostgresError as exc:
            msg = getattr(exc, "message", None) or str(exc)
            detail = getattr(exc, "detail", None)
            raise StatementFailed(
                f"{msg}" + (f" ({detail})" if detail else ""), getattr(exc, "sqlstate", None)
            ) from None
        except asyncpg.InterfaceError as exc:
            raise StatementFailed(f"the editor's connection failed: {exc}") from None
        return res

    async def _run_mysql(self, ec: EditorConn, res: Result) -> Result:
        import pymysql
        import pymysql.cursors

        limit = self.ctx.settings.api.editor_max_rows
        conn = ec.driver

        def _go() -> bool:
            cur = conn.cursor(pymysql.cursors.SSCursor)
            cur.execute(res.sql)
            if cur.description:
                res.columns = [d[0] for d in cur.description]
                rows = cur.fetchmany(limit + 1)
                res.truncated = len(rows) > limit
                res.rows = [[_text(v) for v in r] for r in rows[:limit]]
                res.status = f"{len(res.rows)} rows"
                if res.truncated:
                    return False  # the rest is not read: the connection is closed instead
            else:
                res.status = f"{cur.rowcount} rows affected"
            cur.close()
            return True

        try:
            keep = await asyncio.to_thread(_go)
        except pymysql.err.MySQLError as exc:
            if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError) and _is_closed(ec):
                ec.closed = True
            raise StatementFailed(_mysql_message(exc)) from None
        if not keep:
            await ec.close()
        return res

    async def cancel(self, owner: str, connection: str) -> bool:
        ec = self.conns.get((owner, connection))
        if ec is None or ec.task is None or ec.task.done():
            return False
        if ec.engine == "postgres":
            ec.task.cancel()  # asyncpg sends a CancelRequest through the proxy
        else:
            await ec.close()
        return True

    async def _abandon(self, owner: str, ec: EditorConn) -> None:
        if ec.task is not None and not ec.task.done():
            ec.task.cancel()
        await ec.close()
        self.conns.pop((owner, ec.connection), None)

    # ------------------------------------------------------------------ schema browser
    async def schema(
        self, owner: str, username: str, connection: str, database: str | None
    ) -> dict[str, dict[str, list[tuple[str, str]]]]:
        ec = await self._conn(owner, username, connection, database)
        if ec.engine == "postgres":
            sql = (
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                "ORDER BY table_schema, table_name, ordinal_position LIMIT 5000"
            )
        else:
            sql = (
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') "
                "ORDER BY table_schema, table_name, ordinal_position LIMIT 5000"
            )
        res = await self.run(owner, username, connection, database, sql)
        tree: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for schema_, table, column, dtype in res.rows:
            tree.setdefault(str(schema_), {}).setdefault(str(table), []).append((str(column), str(dtype)))
        return tree

    # ------------------------------------------------------------------ results and cleanup
    def _keep(self, owner: str, result: Result) -> None:
        self.results[result.id] = (owner, result)
        mine = [rid for rid, (o, _) in self.results.items() if o == owner]
        for rid in mine[:-KEEP_RESULTS]:
            del self.results[rid]

    def result(self, owner: str, rid: str) -> Result:
        found = self.results.get(rid)
        if found is None or found[0] != owner:
            raise NotFoundError("That result is no longer kept; run the statement again.")
        return found[1]

    async def close_owner(self, owner: str) -> None:
        for key in [k for k in self.conns if k[0] == owner]:
            await self.conns.pop(key).close()
        for rid in [r for r, (o, _) in self.results.items() if o == owner]:
            del self.results[rid]

    async def _reap(self) -> None:
        now = time.monotonic()
        for key, ec in list(self.conns.items()):
            if ec.closed or (now - ec.last_used > IDLE_SECONDS and not ec.lock.locked()):
                await ec.close()
                del self.conns[key]

    async def close_all(self) -> None:
        for ec in self.conns.values():
            await ec.close()
        self.conns.clear()
        self.results.clear()


def _loopback_tls() -> ssl.SSLContext:
    """TLS to our own listener over loopback: encrypted, the node's self-signed certificate accepted."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _loop_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _is_closed(ec: EditorConn) -> bool:
    if ec.engine == "postgres":
        return bool(ec.driver.is_closed())
    return not bool(getattr(ec.driver, "open", False))


def _mysql_message(exc: Exception) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[1], str):
        return f"{args[1]} (error {args[0]})"
    return str(exc) or exc.__class__.__name__
