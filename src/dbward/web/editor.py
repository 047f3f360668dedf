"""The console's SQL editor: statements run through this node's own proxy, never beside it.

For each signed-in person and connection the editor opens a real client session to the node's
listener for that connection over loopback (asyncpg for PostgreSQL, PyMySQL for MySQL and
MariaDB), logging in as that person with a one-login token from ``identity/ephemeral.py``
and the program name ``dbward-console``. The gate, the policy, masking and the audit trail
therefore treat the editor exactly like psql or DBeaver: a refused DELETE comes back as the
proxy's native error with the policy's reason, and masked columns arrive masked.

The editor's socket carries the browser's address to the proxy in a PROXY v2 header, so
grants limited by client address and the audit trail see the person's address, not loopback.
The listener believes that header only from the exact local address the editor registered
with ``proxy/server.py``'s :class:`LocalDialers` just before connecting (see there why an
outside program cannot borrow it).

Results stream: a statement that returns rows is read through a cursor (an asyncpg cursor in
a transaction; PyMySQL's unbuffered SSCursor), one page ahead of what the grid shows, and kept
up to ``api.editor_max_rows`` rows; the CSV export reads on from the cursor as it streams out,
up to the export limit. A PostgreSQL result that is still open holds its transaction until it
is read to the end, another statement runs on the connection, or the result is dropped; then
it is committed (a statement that wrote, e.g. ``INSERT ... RETURNING``, keeps its effect).

Cancel from the browser is the driver's cancel (a PostgreSQL CancelRequest through the proxy;
for MySQL the client connection is closed, on which the proxy runs KILL QUERY upstream). When
the browser goes away mid-statement, the connection is closed the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from dbward.api.context import ApiContext
from dbward.errors import DbwardError, NotFoundError, UnsupportedFeature, UpstreamError
from dbward.proxy.loopback import DialingLoop, endpoint_for, loopback_tls
from dbward.store import repo
from dbward.store.directory import target_from_row
from dbward.wire import proxy_protocol

log = logging.getLogger(__name__)

PROGRAM = "dbward-console"
PAGE_SIZE = 100
EXPORT_BATCH = 1000
IDLE_SECONDS = 15 * 60
KEEP_RESULTS = 5


class StatementFailed(DbwardError):
    """The proxy or the target refused or failed the statement; the message is theirs."""

    http_status = 400
    code = "statement_failed"

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.state = sqlstate or ""


class RowSource:
    """Where the rest of a result's rows come from (an open cursor), read a batch at a time."""

    async def fetch(self, n: int) -> list[list[str | None]]:
        """Up to ``n`` more rows; fewer means the result has ended (and the source is closed)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop reading; what was not read is discarded on the target."""
        raise NotImplementedError


@dataclass
class Result:
    id: str
    connection: str
    sql: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    status: str = ""
    #: more rows exist than the editor keeps (api.editor_max_rows)
    truncated: bool = False
    elapsed_ms: float = 0.0
    max_rows: int = 5000
    #: the open cursor while rows remain unread; None once the result is complete or cut
    source: RowSource | None = field(default=None, repr=False)
    conn: EditorConn | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return self.source is None and not self.truncated

    def page(self, n: int) -> list[list[str | None]]:
        return self.rows[n * PAGE_SIZE : (n + 1) * PAGE_SIZE]

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.rows) // PAGE_SIZE))

    async def fill(self, upto: int) -> None:
        """Read from the cursor until ``upto`` rows are kept (or the end, or the keep limit)."""
        while self.source is not None and len(self.rows) < min(upto, self.max_rows):
            want = min(upto, self.max_rows) - len(self.rows)
            batch = await self._fetch(max(want, PAGE_SIZE))
            if batch is None:
                return
            room = self.max_rows - len(self.rows)
            self.rows.extend(batch[:room])
            if len(batch) > room:
                self.truncated = True  # the rows past the limit were read: only export sees them now

    async def _fetch(self, n: int) -> list[list[str | None]] | None:
        src = self.source
        if src is None:
            return None
        try:
            batch = await src.fetch(n)
        except BaseException:
            self.source, self.truncated = None, True
            with contextlib.suppress(Exception):
                await src.close()
            raise
        if len(batch) < n:
            self.source = None  # the source closed itself at the end
        return batch

    async def stream(self, limit: int) -> AsyncIterator[list[str | None]]:
        """Every row up to ``limit``: the kept ones, then on from the cursor (for the export)."""
        sent = 0
        for row in self.rows[:limit]:
            yield row
            sent += 1
        if len(self.rows) < self.max_rows:
            await self.fill(self.max_rows)  # keep what the grid may show; usually a no-op
            for row in self.rows[sent:limit]:
                yield row
                sent += 1
        while sent < limit and self.source is not None:
            batch = await self._fetch(min(EXPORT_BATCH, limit - sent))
            for row in batch or []:
                yield row
                sent += 1

    async def release(self) -> None:
        """Close the cursor; the rows read so far stay."""
        src, self.source = self.source, None
        if src is not None:
            self.truncated = True
            await src.close()


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
    #: the browser's address this connection announced to the proxy
    client: tuple[str, int] = ("0.0.0.0", 0)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[Any] | None = None
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    #: the result whose cursor is still open on this connection
    open: Result | None = None

    async def release(self) -> None:
        """Close the open result's cursor, so that the connection can run something else."""
        res, self.open = self.open, None
        if res is not None and res.source is not None:
            try:
                await res.release()
            except Exception:
                log.debug("closing an editor cursor failed; the connection is closed instead", exc_info=True)
                await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.open is not None:
            self.open.source, self.open = None, None
        try:
            if self.engine == "postgres":
                self.driver.terminate()
            else:
                _shutdown_mysql(self.driver)
        except Exception:  # closing a half-broken socket must not fail the caller
            log.debug("editor connection close failed", exc_info=True)


class _PgSource(RowSource):
    """An asyncpg cursor; inside a transaction of its own unless the person opened one."""

    def __init__(self, cursor: Any, transaction: Any | None) -> None:
        self.cursor = cursor
        self.transaction = transaction

    async def fetch(self, n: int) -> list[list[str | None]]:
        try:
            records = await self.cursor.fetch(n)
        except BaseException:
            await self._end(commit=False)
            raise
        if len(records) < n:
            await self._end(commit=True)
        return [[_text(v) for v in r.values()] for r in records]

    async def close(self) -> None:
        await self._end(commit=True)

    async def _end(self, *, commit: bool) -> None:
        tr, self.transaction = self.transaction, None
        if tr is None:
            return
        if commit:
            try:
                await tr.commit()
                return
            except Exception:
                log.debug("commit of an editor cursor's transaction failed", exc_info=True)
        with contextlib.suppress(Exception):
            await tr.rollback()


class _MysqlSource(RowSource):
    """PyMySQL's unbuffered SSCursor: the rows stay on the wire until read."""

    def __init__(self, cursor: Any, ec: EditorConn) -> None:
        self.cursor = cursor
        self.ec = ec

    async def fetch(self, n: int) -> list[list[str | None]]:
        rows = await asyncio.to_thread(self.cursor.fetchmany, n)
        if len(rows) < n:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.cursor.close)
        return [[_text(v) for v in r] for r in rows]

    async def close(self) -> None:
        # reading the rest to the end could take long: the connection is closed instead, and the
        # proxy runs KILL QUERY on the target; the next statement opens a new one
        await self.ec.close()


def _shutdown_mysql(conn: Any) -> None:
    # an unread unbuffered result would try to read its rest from the closed socket when
    # collected; the proxy stops the statement on the target (KILL QUERY) when the socket closes
    result = getattr(conn, "_result", None)
    if result is not None and getattr(result, "unbuffered_active", False):
        result.unbuffered_active = False
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
        host, port, db = await endpoint_for(node.proxy, target, database, self._loopback)
        return protocol, host, port, db

    async def _dial(self, host: str, port: int, client: tuple[str, int]) -> socket.socket:
        """A socket connected to our own listener that has told it the browser's address.

        Bound first, so that the listener can recognise exactly this socket (``LocalDialers``),
        then connected, then the PROXY v2 header; the driver speaks its protocol after it.
        """
        from dbward.node import Node

        node = self.ctx.node
        assert isinstance(node, Node)
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        local: tuple[str, int] | None = None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, 0))  # no SO_REUSEADDR: this local address is ours alone while bound
            local = (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
            node.proxy.local_dialers.expect(local, port)
            async with asyncio.timeout(15):
                await loop.sock_connect(sock, (host, port))
                await loop.sock_sendall(
                    sock, proxy_protocol.build_v2(client, _same_family(host, port, client))
                )
        except BaseException:
            if local is not None:
                node.proxy.local_dialers.forget(local)
            sock.close()
            raise
        return sock

    async def _open(
        self, username: str, connection: str, database: str | None, client: tuple[str, int]
    ) -> EditorConn:
        protocol, host, port, dbname = await self._endpoint(connection, database)
        name, secret = self.ctx.ephemeral.issue(username)
        try:
            if protocol == "postgres":
                import asyncpg

                try:
                    driver = await asyncpg.connect(
                        host=host,
                        port=port,
                        # asyncpg has no socket factory (MagicStack/asyncpg#1054), only a loop:
                        # this one dials with the PROXY header (also for its cancel requests)
                        loop=DialingLoop(asyncio.get_running_loop(), lambda: self._dial(host, port, client)),
                        user=username,
                        password=secret,
                        database=dbname or None,
                        # Over TLS the proxy checks a cleartext password against every secret of the
                        # user (one-login tokens included); plain SCRAM only tries the first one.
                        ssl=loopback_tls(),
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

                try:
                    sock = await self._dial(host, port, client)
                except (OSError, TimeoutError) as exc:
                    raise UpstreamError(
                        f"the editor could not reach the proxy listener on port {port}: {exc}"
                    ) from None
                sock.setblocking(True)
                sock.settimeout(None)

                def _connect() -> Any:
                    conn = pymysql.connect(
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
                        defer_connect=True,
                    )
                    conn.connect(sock)
                    return conn

                try:
                    driver = await asyncio.to_thread(_connect)
                except pymysql.err.MySQLError as exc:
                    sock.close()
                    raise StatementFailed(_mysql_message(exc)) from None
        finally:
            self.ctx.ephemeral.revoke(name)
        return EditorConn(
            engine=protocol, connection=connection, database=database, driver=driver, client=client
        )

    async def _conn(
        self, owner: str, username: str, connection: str, database: str | None, client: tuple[str, int]
    ) -> EditorConn:
        await self._reap()
        key = (owner, connection)
        ec = self.conns.get(key)
        if ec is not None and (
            ec.closed or ec.database != database or ec.client[0] != client[0] or _is_closed(ec)
        ):
            if ec.lock.locked():
                raise StatementFailed("A statement is still running on this connection; cancel it or wait.")
            await ec.release()
            await ec.close()
            ec = None
        if ec is None:
            ec = await self._open(username, connection, database, client)
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
        *,
        client: tuple[str, int],
    ) -> Result:
        """Run ``sql`` as ``username`` from the browser at ``client`` and read its first page;
        ``gone`` says whether the browser went away meanwhile."""
        sql = sql.strip()
        if not sql:
            raise StatementFailed("There is no statement to run.")
        ec = await self._conn(owner, username, connection, database, client)
        if ec.lock.locked():
            raise StatementFailed("A statement is still running on this connection; cancel it or wait.")
        if ec.open is not None:
            async with ec.lock:
                await ec.release()
            if ec.closed:  # closing a MySQL cursor early closes its connection: open a new one
                ec = await self._conn(owner, username, connection, database, client)
        async with ec.lock:
            res = Result(
                id=secrets.token_urlsafe(9),
                connection=connection,
                sql=sql,
                max_rows=self.ctx.settings.api.editor_max_rows,
                conn=ec,
            )
            started = time.monotonic()
            runner = self._run_pg(ec, res) if ec.engine == "postgres" else self._run_mysql(ec, res)
            await self._supervise(owner, ec, runner, res.id, gone)
            res.elapsed_ms = (time.monotonic() - started) * 1000
            if res.source is not None:
                ec.open = res
        await self._keep(owner, res)
        return res

    async def _supervise(
        self,
        owner: str,
        ec: EditorConn,
        work: Coroutine[Any, Any, Any],
        label: str,
        gone: Callable[[], Awaitable[bool]] | None,
    ) -> None:
        """Run ``work`` on ``ec`` within the editor's time limit, stopping it when the browser goes."""
        ec.task = asyncio.create_task(work, name=f"editor-{ec.connection}-{label}")
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
            await ec.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise StatementFailed("The statement was cancelled.") from None
        finally:
            ec.task = None

    async def page(self, owner: str, rid: str, n: int) -> tuple[Result, int]:
        """Result ``rid`` with page ``n`` read (one row ahead, to know whether a next page exists)."""
        res = self.result(owner, rid)
        n = max(0, n)
        ec = res.conn
        if res.source is not None and ec is not None and len(res.rows) <= (n + 1) * PAGE_SIZE:
            if ec.lock.locked():
                raise StatementFailed("A statement is still running on this connection; cancel it or wait.")
            async with ec.lock:
                try:
                    await self._supervise(owner, ec, res.fill((n + 1) * PAGE_SIZE + 1), rid, None)
                finally:
                    if res.source is None and ec.open is res:
                        ec.open = None
        return res, min(n, res.pages - 1)

    async def export(self, owner: str, rid: str, limit: int) -> AsyncGenerator[list[str | None], None]:
        """The rows of result ``rid`` up to ``limit``, read on from its cursor as they are sent."""
        res = self.result(owner, rid)
        ec = res.conn
        if res.source is None or ec is None:
            async for row in res.stream(limit):
                yield row
            return
        if ec.lock.locked():
            raise StatementFailed("A statement is still running on this connection; cancel it or wait.")
        async with ec.lock:
            try:
                async with asyncio.timeout(self.ctx.settings.api.editor_statement_timeout_seconds):
                    async for row in res.stream(limit):
                        yield row
            finally:
                if res.source is None and ec.open is res:
                    ec.open = None

    async def _run_pg(self, ec: EditorConn, res: Result) -> None:
        import asyncpg

        conn = ec.driver
        try:
            try:
                stmt = await conn.prepare(res.sql)
            except asyncpg.PostgresSyntaxError as exc:
                if "multiple commands" not in str(exc):
                    raise
                res.status = await conn.execute(res.sql)
                return
            attributes = stmt.get_attributes()
            if not attributes:  # no rows: run it as it is (VACUUM, BEGIN, DDL, plain DML)
                await stmt.fetch()
                res.status = stmt.get_statusmsg() or ""
                return
            res.columns = [a.name for a in attributes]
            # a cursor needs a transaction: ours, unless the person has opened one in the editor
            tr = None if conn.is_in_transaction() else conn.transaction()
            if tr is not None:
                await tr.start()
            source = _PgSource(await stmt.cursor(), tr)
            res.source = source
            try:
                await res.fill(PAGE_SIZE + 1)
            except BaseException:
                res.source = None
                raise
        except asyncpg.PostgresError as exc:
            msg = getattr(exc, "message", None) or str(exc)
            detail = getattr(exc, "detail", None)
            raise StatementFailed(
                f"{msg}" + (f" ({detail})" if detail else ""), getattr(exc, "sqlstate", None)
            ) from None
        except asyncpg.InterfaceError as exc:
            raise StatementFailed(f"the editor's connection failed: {exc}") from None

    async def _run_mysql(self, ec: EditorConn, res: Result) -> None:
        import pymysql
        import pymysql.cursors

        conn = ec.driver

        def _go() -> Any:
            cur = conn.cursor(pymysql.cursors.SSCursor)
            cur.execute(res.sql)
            if cur.description:
                res.columns = [d[0] for d in cur.description]
                return cur
            res.status = f"{cur.rowcount} rows affected"
            cur.close()
            return None

        try:
            cur = await asyncio.to_thread(_go)
            if cur is not None:
                res.source = _MysqlSource(cur, ec)
                await res.fill(PAGE_SIZE + 1)
        except pymysql.err.MySQLError as exc:
            res.source = None
            if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError) and _is_closed(ec):
                ec.closed = True
            raise StatementFailed(_mysql_message(exc)) from None

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
        self, owner: str, username: str, connection: str, database: str | None, *, client: tuple[str, int]
    ) -> dict[str, dict[str, list[tuple[str, str]]]]:
        ec = await self._conn(owner, username, connection, database, client)
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
        res = await self.run(owner, username, connection, database, sql, client=client)
        await res.fill(res.max_rows)
        await res.release()
        tree: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for schema_, table, column, dtype in res.rows:
            tree.setdefault(str(schema_), {}).setdefault(str(table), []).append((str(column), str(dtype)))
        return tree

    # ------------------------------------------------------------------ results and cleanup
    async def _keep(self, owner: str, result: Result) -> None:
        self.results[result.id] = (owner, result)
        mine = [rid for rid, (o, _) in self.results.items() if o == owner]
        for rid in mine[:-KEEP_RESULTS]:
            _, old = self.results.pop(rid)
            if old.source is not None and old.conn is not None and old.conn.open is old:
                await old.conn.release()

    def result(self, owner: str, rid: str) -> Result:
        found = self.results.get(rid)
        if found is None or found[0] != owner:
            raise NotFoundError("That result is no longer kept; run the statement again.")
        return found[1]

    async def close_owner(self, owner: str) -> None:
        for key in [k for k in self.conns if k[0] == owner]:
            ec = self.conns.pop(key)
            if not ec.lock.locked():
                await ec.release()  # commits what an open result's statement did
            await ec.close()
        for rid in [r for r, (o, _) in self.results.items() if o == owner]:
            del self.results[rid]

    async def _reap(self) -> None:
        now = time.monotonic()
        for key, ec in list(self.conns.items()):
            if ec.closed or (now - ec.last_used > IDLE_SECONDS and not ec.lock.locked()):
                if not ec.closed:
                    await ec.release()
                await ec.close()
                del self.conns[key]

    async def close_all(self) -> None:
        for ec in self.conns.values():
            if not ec.lock.locked():
                with contextlib.suppress(Exception):
                    await ec.release()
            await ec.close()
        self.conns.clear()
        self.results.clear()


def _same_family(host: str, port: int, client: tuple[str, int]) -> tuple[str, int]:
    """The PROXY header's destination: the listener, in the family of the client's address."""
    if ipaddress.ip_address(client[0]).version == ipaddress.ip_address(host).version:
        return host, port
    return ("::" if ipaddress.ip_address(client[0]).version == 6 else "0.0.0.0"), port


def browser_address(ip: str, port: int = 0) -> tuple[str, int]:
    """The browser's address for the PROXY header; refuses what is not an IP address (fail closed)."""
    try:
        return str(ipaddress.ip_address(ip)), port
    except ValueError:
        raise UnsupportedFeature(
            f"The SQL editor cannot tell the proxy your address ({ip!r} is not an IP address), so it "
            "cannot apply address-limited grants; check api.trusted_proxies and X-Forwarded-For."
        ) from None


def _is_closed(ec: EditorConn) -> bool:
    if ec.engine == "postgres":
        return bool(ec.driver.is_closed())
    return not bool(getattr(ec.driver, "open", False))


def _mysql_message(exc: Exception) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[1], str):
        return f"{args[1]} (error {args[0]})"
    return str(exc) or exc.__class__.__name__
