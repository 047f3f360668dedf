"""dbward's executor: approved SQL requests run by dbward itself, at their scheduled time or
when the requester asks (``POST /api/v1/approvals/requests/{id}/execute``).

It never runs SQL beside the proxy. Like the console's editor (``web/editor.py``) it opens a
real client session to this node's own listener over loopback, as the requester, with a
one-login token (``identity/ephemeral.py``) and the program name ``dbward-scheduler``, so the
gate, the policy, masking and the audit trail treat it as any client. Its socket is bound to
a loopback address first and registered with the service (``ApprovalService.expect_executor``):
the gate knows that session by that exact address and lets it run the one claimed request,
taking that request's use for the statement even where the user's grants would allow it, and
nothing else (``proxy/gate.py``).

Reliability, step by step (every step one conditional UPDATE in the store,
``store/approvals_repo.py``):

1. claim: ``approved`` -> ``executing``, ``execution_state`` ``claimed``, ``claimed_by`` this
   process, before connecting; two nodes never both claim a request.
2. the gate takes the use: ``execution_state`` ``running`` with the statement id, audited
   (``approval.step`` "used") before the statement is decided and forwarded.
3. the gate records the target's answer on the request (``ApprovalService.completed``) before
   the client hears it; the executor then ends the run: ``executed`` (or ``failed``), with
   rows affected, error text, SQLSTATE or errno, and the statement id; audited and notified.

While it runs, the node renews its claim every quarter of ``approvals.execution_lease_seconds``
(at most every 5 s). A claim not renewed within the lease belongs to a process that is gone
(a claim of an earlier process of this host, a restart, is known at once when that process id
no longer exists, else after three missed renewals); a node takes it over and: finishes
it from the recorded outcome (the request's runs, or ``statement.complete`` in the store's
audit copy); or, when the statement was decided but no outcome exists, fails the request as
"outcome unknown", naming the statement id to check on the target; or, when the statement
never reached the gate (``claimed``), runs it. An approved statement is never run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from dbward.approvals.service import ApprovalService, Execution, ExecutorRun
from dbward.approvals.workflow import InvalidState
from dbward.audit.store import AuditQuery, search
from dbward.errors import NotFoundError, UnsupportedFeature
from dbward.proxy.loopback import DialingLoop, endpoint_for, loopback_tls
from dbward.wire import proxy_protocol

if TYPE_CHECKING:
    from dbward.config import Settings
    from dbward.identity.ephemeral import EphemeralTokens
    from dbward.proxy.server import ProxyServer

log = logging.getLogger(__name__)

PROGRAM = "dbward-scheduler"
#: a run that could not open its session (nothing reached the target) is tried this often
MAX_ATTEMPTS = 3
CONNECT_TIMEOUT = 15.0
#: how long the executor waits for the gate's record of a statement's outcome (normally there)
RECORD_WAIT = 10.0
#: a PROXY v2 header with the LOCAL command: "use the socket's own address" (for listeners
#: that expect a header from loopback because it is in proxy.trusted_proxies)
_PROXY_V2_LOCAL = proxy_protocol.V2_SIGNATURE + b"\x20\x00\x00\x00"

Outcome = Literal["done", "failed", "refused", "unknown", "retry"]


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What the executor's client saw. ``connected`` False: the session never opened."""

    connected: bool
    rows_affected: int | None = None
    rows: int | None = None
    error: str | None = None
    sqlstate: str | None = None
    errno: int | None = None
    #: the server (the proxy or the target) answered with an error, as opposed to the
    #: connection failing or breaking
    answered: bool = False


class ScheduledExecutor:
    """One per node (``Node.start_approvals``); see the module docstring."""

    def __init__(
        self,
        service: ApprovalService,
        *,
        proxy: ProxyServer,
        tokens: EphemeralTokens,
        settings: Settings,
        node_name: str,
    ) -> None:
        self.service = service
        self.proxy = proxy
        self.tokens = tokens
        self.settings = settings
        self.node_name = node_name
        #: this process: a restarted node has the same name, another process id and nonce
        self.claimer = f"{node_name}#{os.getpid()}-{secrets.token_hex(3)}"
        self._task: asyncio.Task[None] | None = None
        self._runs: dict[int, asyncio.Task[None]] = {}
        self._loopback: dict[int, int] = {}  # connection id -> port of a listener opened here

    # ------------------------------------------------------------------ timing
    @property
    def lease(self) -> float:
        return float(self.settings.approvals.execution_lease_seconds)

    @property
    def heartbeat(self) -> float:
        return max(0.25, min(self.lease / 4, 5.0))

    def _stale_after(self, claimed_by: str) -> float:
        """Seconds without renewal after which a claim is abandoned.

        Another node: the lease (its clock may differ a little from ours). An earlier process
        of this host (a restart: same node name, same clock): at once when that process is
        gone, else after three missed renewals."""
        name, _, instance = claimed_by.rpartition("#")
        if name != self.node_name:
            return self.lease
        pid = instance.partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            return 0.0
        return min(self.lease, 3 * self.heartbeat)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="dbward-approval-executor")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop looking for work; give runs in flight ``timeout`` seconds, then cancel them
        (their claims stay and are taken over after the lease: outcome recorded or unknown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        runs = list(self._runs.values())
        if runs:
            _done, pending = await asyncio.wait(runs, timeout=timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*runs, return_exceptions=True)

    async def _loop(self) -> None:
        interval = self.settings.approvals.executor_interval_seconds
        while True:
            try:
                await self.recover()
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dbward's executor failed to look for work; trying again in %s s", interval)
            await asyncio.sleep(interval)

    async def wait(self, request_id: int) -> None:
        """Until this node's run of ``request_id`` (if any) has ended."""
        task = self._runs.get(request_id)
        if task is not None:
            await asyncio.shield(task)

    # ------------------------------------------------------------------ starting runs
    async def run_due(self) -> list[int]:
        """Claim and start every scheduled request whose time has come; their ids."""
        started: list[int] = []
        for rid in await self.service.due_scheduled():
            ex = await self.service.claim_execution(rid, self.claimer, actor=None)
            if ex is None:
                continue  # another node claimed it first, or it changed
            self._spawn(ex)
            started.append(rid)
        return started

    async def execute_now(self, request_id: int, actor: str) -> dict[str, Any]:
        """The requester asks dbward to run their approved request now; returns the request
        as claimed (its run goes on in the background: read the request for its outcome)."""
        await self.service.check_execute_now(request_id, actor)
        ex = await self.service.claim_execution(request_id, self.claimer, actor=actor, via="api")
        if ex is None:
            raise InvalidState(
                f"request #{request_id} is being run already, or changed meanwhile; look at it again"
            )
        self._spawn(ex)
        return await self.service.get(request_id)

    def _spawn(self, ex: Execution) -> None:
        task = asyncio.create_task(self._run(ex), name=f"dbward-execute-{ex.id}")
        self._runs[ex.id] = task

        def _done(t: asyncio.Task[None], rid: int = ex.id) -> None:
            if self._runs.get(rid) is t:
                del self._runs[rid]

        task.add_done_callback(_done)

    # ------------------------------------------------------------------ one run
    async def _run(self, ex: Execution) -> None:
        beat = asyncio.create_task(self._renew(ex.id), name=f"dbward-execute-{ex.id}-lease")
        try:
            result = await self._execute(ex)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here: the claim stays, and is resolved after the lease
            log.exception("dbward's executor failed while running request %s", ex.id)
            result = RunResult(connected=False, error=f"internal error in dbward's executor: {exc}")
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        try:
            await self._conclude(ex, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "the outcome of request %s could not be recorded; it is resolved after the lease", ex.id
            )

    async def _renew(self, request_id: int) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                if not await self.service.renew_claim(request_id, self.claimer):
                    log.warning("dbward's executor lost its claim on request %s", request_id)
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing the claim on request %s failed; trying again", request_id)

    async def _conclude(self, ex: Execution, result: RunResult) -> None:
        fresh = await self.service.execution(ex.id)
        if fresh is None or fresh.state != "executing" or fresh.claimed_by != self.claimer:
            log.warning("request %s was taken from this node's executor while it ran", ex.id)
            return
        sid = fresh.statement_id if fresh.execution_state == "running" else None
        if sid is not None and fresh.run_of(sid) is None and result.connected:
            fresh = await self._gate_record(fresh, sid)
        outcome: Outcome
        record: dict[str, Any] = {
            "rows_affected": result.rows_affected,
            "rows": result.rows,
            "error": result.error,
            "sqlstate": result.sqlstate,
            "errno": result.errno,
            "attempt": fresh.attempt,
            "node": self.claimer,
        }
        if sid is not None:  # the gate took the use: it was decided and forwarded
            record["statement_id"] = sid
            run = fresh.run_of(sid)
            if run is not None:
                record["rows_affected"] = _first(result.rows_affected, run.get("rows_affected"))
                record["rows"] = _first(result.rows, run.get("rows"))
                record["error"] = _first(result.error, run.get("error"))
                outcome = "failed" if record["error"] else "done"
            elif result.answered and result.error:
                outcome = "failed"
            elif result.error is None:
                outcome = "done"
            else:  # the session broke after the statement was forwarded: no answer
                outcome = "unknown"
                record["error"] = _unknown(ex.id, sid, self.claimer, result.error)
        elif not result.connected and not result.answered and fresh.attempt < MAX_ATTEMPTS:
            outcome = "retry"
        elif result.error is None:
            # nothing took the use, yet the client saw success: never guess, never run again
            outcome = "unknown"
            record["error"] = (
                "dbward's executor saw no approved use of the statement taken by the gate; "
                "it is not run again"
            )
        else:
            outcome = "refused"
        await self.service.finish_execution(
            ex.id, self.claimer, result=record, outcome=outcome, comment=_comment(outcome, record, fresh)
        )

    async def _gate_record(self, ex: Execution, sid: str) -> Execution:
        """The request once the gate has recorded the statement's outcome on it.

        Both engines write it before the client gets its answer, so this normally returns at
        the first look; the wait is a safety net that keeps the two writes of the request's
        outcome in order whatever the engine does."""
        try:
            async with asyncio.timeout(RECORD_WAIT):
                while True:
                    await asyncio.sleep(0.02)
                    fresh = await self.service.execution(ex.id)
                    if fresh is None or fresh.run_of(sid) is not None or fresh.claimed_by != self.claimer:
                        return fresh or ex
        except TimeoutError:
            log.warning(
                "the gate recorded no outcome for statement %s of request %s; using the client's", sid, ex.id
            )
            return ex

    # ------------------------------------------------------------------ recovery
    async def recover(self) -> list[int]:
        """Take over executions whose claim went stale and resolve them; their ids."""
        now = self.service.clock()
        done: list[int] = []
        for ex in await self.service.executions():
            if ex.claimed_by == self.claimer or ex.id in self._runs or ex.claimed_by is None:
                continue
            stale_before = now - timedelta(seconds=self._stale_after(ex.claimed_by))
            if ex.claimed_at is not None and ex.claimed_at > stale_before:
                continue
            if not await self.service.take_over(ex, self.claimer, stale_before):
                continue  # renewed meanwhile, or another node took it
            fresh = await self.service.execution(ex.id)
            if fresh is None:
                continue
            await self._resolve(fresh, previous=ex.claimed_by)
            done.append(ex.id)
        return done

    async def _resolve(self, ex: Execution, *, previous: str) -> None:
        if ex.execution_state == "claimed":
            log.info(
                "request %s was claimed by %s, which is gone, before it reached the gate: running it",
                ex.id,
                previous,
            )
            self._spawn(ex)
            return
        sid = ex.statement_id
        record: dict[str, Any] = {"statement_id": sid, "node": self.claimer, "taken_over_from": previous}
        run = ex.run_of(sid) if sid else None
        if run is None and sid:
            run = await self._completed_in_audit(sid)
        outcome: Outcome
        if run is not None:
            record.update(rows_affected=run.get("rows_affected", run.get("affected")), rows=run.get("rows"))
            record["error"] = run.get("error")
            outcome = "failed" if run.get("error") else "done"
        else:
            outcome = "unknown"
            record["error"] = _unknown(ex.id, sid, previous, None)
        await self.service.finish_execution(
            ex.id, self.claimer, result=record, outcome=outcome, comment=_comment(outcome, record, ex)
        )

    async def _completed_in_audit(self, statement_id: str) -> dict[str, Any] | None:
        """The statement's completion in the store's copy of the audit trail, if it got there."""
        try:
            found = await search(
                self.service.store, AuditQuery(type="statement.complete", text=statement_id), limit=10
            )
        except Exception:
            log.exception("the audit trail could not be searched for statement %s", statement_id)
            return None
        for _id, rec in found:
            if rec.get("statement_id") == statement_id:
                return rec
        return None

    # ------------------------------------------------------------------ the client
    async def _endpoint(self, connection: str, database: str | None) -> tuple[str, str, int, str]:
        """(protocol, host, port, database to log in to) of this node's listener for ``connection``."""
        from dbward.node import load_engines
        from dbward.proxy.engine import ENGINES
        from dbward.store import repo
        from dbward.store.directory import target_from_row

        async with self.service.store.session() as s:
            row = await repo.get_connection(s, connection)
            if row is None:
                raise NotFoundError(f"connection {connection} does not exist any more")
            target = target_from_row(row)
        load_engines()
        protocol = target.engine.value
        if protocol not in ENGINES:
            raise UnsupportedFeature(f"the {protocol} proxy engine is not available in this build")
        host, port, db = await endpoint_for(self.proxy, target, database, self._loopback)
        return protocol, host, port, db

    async def _dial(self, host: str, port: int, register: ExecutorRun | None) -> socket.socket:
        """A socket to our own listener; ``register``: its exact local address is announced to
        the service first, so the gate knows the session as this run (see the module docstring)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        local: tuple[str, int] | None = None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, 0))  # no SO_REUSEADDR: the address is ours alone while bound
            local = (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
            if register is not None:
                self.service.expect_executor(local, register)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (host, port))
                if self.proxy._is_trusted(local[0]):
                    await loop.sock_sendall(sock, _PROXY_V2_LOCAL)
        except BaseException:
            if local is not None and register is not None:
                self.service.forget_executor(local)
            sock.close()
            raise
        return sock

    async def _execute(self, ex: Execution) -> RunResult:
        if ex.connection is None:
            return RunResult(connected=False, answered=True, error="the request names no connection")
        try:
            protocol, host, port, dbname = await self._endpoint(ex.connection, ex.database)
        except (NotFoundError, UnsupportedFeature) as exc:
            return RunResult(connected=False, answered=True, error=exc.message)
        run = ExecutorRun(ex.id, self.claimer)
        name, secret = self.tokens.issue(ex.requester)
        registered: list[tuple[str, int]] = []

        async def dial(register: bool) -> socket.socket:
            sock = await self._dial(host, port, run if register else None)
            if register:
                registered.append((str(sock.getsockname()[0]), int(sock.getsockname()[1])))
            return sock

        try:
            if protocol == "postgres":
                return await self._run_pg(ex, host, port, dbname, secret, dial)
            return await self._run_mysql(ex, host, port, dbname, secret, dial)
        finally:
            self.tokens.revoke(name)
            for local in registered:
                self.service.forget_executor(local)

    async def _run_pg(
        self,
        ex: Execution,
        host: str,
        port: int,
        dbname: str,
        secret: str,
        dial: Callable[[bool], Awaitable[socket.socket]],
    ) -> RunResult:
        import asyncpg

        first = True

        async def next_socket() -> socket.socket:
            nonlocal first
            register, first = first, False  # later ones are cancel requests: they run nothing
            return await dial(register)

        try:
            conn = await asyncpg.connect(
                host=host,
                port=port,
                loop=DialingLoop(asyncio.get_running_loop(), next_socket),
                user=ex.requester,
                password=secret,
                database=dbname or None,
                # over TLS the proxy checks a cleartext password against every secret of the
                # user, one-login tokens included (as for the console's editor)
                ssl=loopback_tls(),
                timeout=CONNECT_TIMEOUT,
                statement_cache_size=0,
                server_settings={"application_name": PROGRAM},
            )
        except asyncpg.PostgresError as exc:
            return RunResult(connected=False, answered=True, error=_pg_message(exc), sqlstate=exc.sqlstate)
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            return RunResult(connected=False, error=f"dbward's executor could not open its session: {exc}")
        try:
            params = list(ex.params or [])
            status = await (conn.execute(ex.sql, *params) if params else conn.execute(ex.sql))
            affected, rows = _pg_counts(status)
            return RunResult(connected=True, rows_affected=affected, rows=rows)
        except asyncpg.PostgresError as exc:
            return RunResult(connected=True, answered=True, error=_pg_message(exc), sqlstate=exc.sqlstate)
        except (OSError, asyncpg.InterfaceError) as exc:
            return RunResult(connected=True, error=f"the session broke while the statement ran: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)

    async def _run_mysql(
        self,
        ex: Execution,
        host: str,
        port: int,
        dbname: str,
        secret: str,
        dial: Callable[[bool], Awaitable[socket.socket]],
    ) -> RunResult:
        import pymysql

        if ex.params:
            return RunResult(
                connected=False,
                answered=True,
                error="dbward's executor cannot send a MySQL statement with bound parameters",
            )
        try:
            sock = await dial(True)
        except (OSError, TimeoutError) as exc:
            return RunResult(connected=False, error=f"dbward's executor could not open its session: {exc}")
        sock.setblocking(True)
        sock.settimeout(None)
        conn = pymysql.connect(
            host=host,
            port=port,
            user=ex.requester,
            password=secret,
            database=dbname or None,
            program_name=PROGRAM,
            ssl_disabled=True,
            autocommit=True,
            connect_timeout=int(CONNECT_TIMEOUT),
            charset="utf8mb4",
            defer_connect=True,
        )
        try:
            try:
                await asyncio.to_thread(conn.connect, sock)
            except pymysql.err.MySQLError as exc:
                errno, msg = _mysql_error(exc)
                return RunResult(
                    connected=False, answered=errno is not None and errno < 2000, error=msg, errno=errno
                )

            def work() -> tuple[int, int | None]:
                with conn.cursor() as cur:
                    n = cur.execute(ex.sql)
                    if cur.description is not None:
                        return len(cur.fetchall()), None
                    return n, n

            try:
                rows, affected = await asyncio.to_thread(work)
            except pymysql.err.MySQLError as exc:
                errno, msg = _mysql_error(exc)
                # 2000-2999 are client-side errors (the connection broke): no answer came
                return RunResult(
                    connected=True, answered=errno is not None and errno < 2000, error=msg, errno=errno
                )
            return RunResult(connected=True, rows_affected=affected, rows=rows if affected is None else None)
        finally:
            with contextlib.suppress(Exception):
                conn.close()
            with contextlib.suppress(OSError):
                sock.close()


# ---------------------------------------------------------------------------- helpers
def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (another's process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _unknown(request_id: int, statement_id: str | None, node: str, detail: str | None) -> str:
    why = f" ({detail})" if detail else ""
    return (
        f"outcome unknown: dbward ({node}) stopped or lost its session while request #{request_id} ran as "
        f"statement {statement_id}{why}; whether the target completed it is not known. Check the target "
        f"and the audit trail for statement {statement_id} before doing anything; dbward does not run it again."
    )


def _comment(outcome: Outcome, record: dict[str, Any], ex: Execution) -> str:
    sid = record.get("statement_id")
    on = f" as statement {sid}" if sid else ""
    if outcome == "done":
        n = record.get("rows_affected")
        what = f"{n} rows affected" if n is not None else f"{record.get('rows') or 0} rows returned"
        return f"executed by dbward{on}: {what}"
    if outcome == "failed":
        code = record.get("sqlstate") or record.get("errno")
        return f"failed{on}: {record.get('error')}" + (f" ({code})" if code else "")
    if outcome == "unknown":
        return str(record.get("error"))
    if outcome == "retry":
        return (
            f"attempt {ex.attempt} of {MAX_ATTEMPTS} could not open dbward's session, so nothing reached "
            f"the target: {record.get('error')}; dbward tries again"
        )
    return f"not run: {record.get('error')}"


_COUNT = re.compile(r"^(\w+)(?: \d+)? (\d+)$")


def _pg_counts(status: str) -> tuple[int | None, int | None]:
    """(rows affected, rows returned) from a CommandComplete tag such as "UPDATE 3"."""
    m = _COUNT.match(status or "")
    if m is None:
        return None, None
    n = int(m.group(2))
    if m.group(1) in ("SELECT", "FETCH", "MOVE"):
        return None, n
    return n, None


def _pg_message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)


def _mysql_error(exc: Exception) -> tuple[int | None, str]:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    return None, str(exc) or exc.__class__.__name__


__all__ = ["PROGRAM", "RunResult", "ScheduledExecutor"]
