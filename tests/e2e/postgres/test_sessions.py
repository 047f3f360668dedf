"""Sessions through dbward: tokens, TLS modes, shared-port routing, cancel keys, kill, idle
timeout, disconnects, protocol errors and the fast-path FunctionCall."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess

import psycopg
import pytest

from dbward.store import repo
from dbward.wire.postgres import messages as m
from tests.conftest import PASSWORD, USER, RunningNode, pg_dsn
from tests.e2e.postgres.conftest import completions, dsn, pg_env, policy_changed
from tests.e2e.postgres.rawclient import RawClient, send_cancel


async def _connect(conninfo: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)


async def test_proxy_tokens_by_scram_and_over_tls(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    async with dbward_node.store.transaction() as s:
        token = await repo.create_proxy_token(s, dbward_node.store.box, USER, "laptop")
        await repo.create_user(s, dbward_node.store.box, "carol")  # no password: SCRAM uses her token
        carol_token = await repo.create_proxy_token(s, dbward_node.store.box, "carol", "ci")
        await repo.create_grant(
            s,
            "carol-pg",
            subject_type="user",
            subject_name="carol",
            connection="pg",
            privileges=["admin"],
        )
    policy_changed(dbward_node)
    async with await _connect(dsn(port, password=token, sslmode="require")) as conn:
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    async with await _connect(dsn(port, user="carol", password=carol_token)) as conn:
        assert (await (await conn.execute("SELECT current_user")).fetchone()) == ("dbward_upstream",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await _connect(dsn(port, user="carol", password=carol_token[:-1] + "x"))
    starts = dbward_node.journal.of_type("session.start")
    assert [(e["user"], e["auth_method"], e["tls"]) for e in starts] == [
        ("alice", "proxy_token", True),
        ("carol", "proxy_token", False),
    ]


async def test_direct_tls_and_protocol_3_2(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    if psycopg.pq.version() < 170000:
        pytest.fail("psycopg's libpq is older than 17: direct TLS cannot be tested")
    async with await _connect(dsn(port, sslmode="require", sslnegotiation="direct")) as conn:
        assert (await (await conn.execute("SELECT 'direct'")).fetchone()) == ("direct",)
        # libpq sends the CancelRequest over direct TLS as well
        task = asyncio.create_task(conn.execute("SELECT pg_sleep(29)"))
        await _wait_for_statement(dbward_node, "SELECT pg_sleep(29)")
        await asyncio.sleep(0.2)
        await conn.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await task
    # protocol 3.2 (libpq 18): dbward issues 32-byte cancel keys and cancelling still works
    async with await _connect(dsn(port, max_protocol_version="3.2")) as conn:
        task = asyncio.create_task(conn.execute("SELECT pg_sleep(30)"))
        await _wait_for_statement(dbward_node, "SELECT pg_sleep(30)")
        await asyncio.sleep(0.2)
        await conn.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await task
        assert (await (await conn.execute("SELECT 2")).fetchone()) == (2,)
    assert [e["tls"] for e in dbward_node.journal.of_type("session.start")] == [True, False]


async def _wait_for_statement(node: RunningNode, sql: str) -> None:
    for _ in range(400):
        if sql in node.statements():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{sql!r} never reached the gate")


async def test_shared_port_routes_by_database_name(dbward_node: RunningNode) -> None:
    lst = await dbward_node.node.proxy.add_listener("postgres", "127.0.0.1", 0, None)
    async with await _connect(dsn(lst.bound_port, dbname="pg/dbward_test")) as conn:
        row = await (await conn.execute("SELECT current_database()")).fetchone()
        assert row == ("dbward_test",)
    with pytest.raises(psycopg.OperationalError, match='no PostgreSQL connection named "nope"'):
        await _connect(dsn(lst.bound_port, dbname="nope/x"))
    with pytest.raises(psycopg.OperationalError, match='no PostgreSQL connection named "maria"'):
        await _connect(dsn(lst.bound_port, dbname="maria/dbward_test"))
    assert dbward_node.journal.of_type("session.start")[0]["connection"] == "pg"
    assert len(dbward_node.journal.of_type("session.rejected")) == 2


async def test_cancel_with_wrong_keys_does_nothing(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD)
    c.send(m.Query("SELECT pg_sleep(1.5), 'finished'"))
    await _wait_for_statement(dbward_node, "SELECT pg_sleep(1.5), 'finished'")
    await send_cancel(port, c.pid, secrets.token_bytes(4))
    await send_cancel(port, c.pid ^ 1, c.secret)
    msgs = await c.until_ready()
    assert not [x for x in msgs if isinstance(x, m.ErrorResponse)]
    assert any(isinstance(x, m.DataRow) and x.values[1] == b"finished" for x in msgs)
    # the right keys do cancel
    c.send(m.Query("SELECT pg_sleep(30)"))
    await _wait_for_statement(dbward_node, "SELECT pg_sleep(30)")
    await asyncio.sleep(0.2)
    await send_cancel(port, c.pid, c.secret)
    msgs = await c.until_ready()
    errors = [x for x in msgs if isinstance(x, m.ErrorResponse)]
    assert errors and errors[0].sqlstate == "57014"
    await c.close()


def _sleepers() -> int:
    with psycopg.connect(pg_dsn()) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
        ).fetchone()
        assert row is not None
        return int(row[0])


async def _until_no_sleepers() -> None:
    for _ in range(200):
        if await asyncio.to_thread(_sleepers) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the query kept running on the target")


async def test_client_disconnect_mid_query_cancels_on_target(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    proc = await asyncio.create_subprocess_exec(
        "psql",
        "-X",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        USER,
        "-d",
        "dbward_test",
        "-c",
        "SELECT pg_sleep(30)",
        env=pg_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await _wait_for_statement(dbward_node, "SELECT pg_sleep(30)")
    await asyncio.sleep(0.2)
    assert await asyncio.to_thread(_sleepers) == 1
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await _until_no_sleepers()


async def test_kill_terminates_the_session_and_its_query(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD)
    c.send(m.Query("SELECT pg_sleep(30)"))
    await _wait_for_statement(dbward_node, "SELECT pg_sleep(30)")
    await asyncio.sleep(0.2)
    [live] = dbward_node.node.sessions.list()
    assert live.busy
    assert await dbward_node.node.sessions.kill(live.info.id, "killed by an administrator (test)")
    msgs = await c.until_ready()
    fatal = [x for x in msgs if isinstance(x, m.ErrorResponse)]
    assert fatal[-1].sqlstate == "57P01" and "killed by an administrator (test)" in fatal[-1].message
    await _until_no_sleepers()
    ended = dbward_node.journal.of_type("session.end")
    assert ended[-1]["reason"] == "killed by an administrator (test)"
    await c.close()


async def test_idle_timeout_counts_running_statements_as_activity(dbward_node: RunningNode) -> None:
    dbward_node.node.settings.proxy.idle_timeout_seconds = 0.5
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD)
    c.send(m.Query("SELECT pg_sleep(1.2)"))
    msgs = await c.until_ready()
    assert not [x for x in msgs if isinstance(x, m.ErrorResponse)]
    msgs = await c.until_ready()  # now idle: dbward closes the session
    err = msgs[0]
    assert isinstance(err, m.ErrorResponse) and err.sqlstate == "57P05"
    assert "proxy.idle_timeout_seconds" in err.message
    assert msgs[-1] is None
    assert "proxy.idle_timeout_seconds" in dbward_node.journal.of_type("session.end")[-1]["reason"]


async def test_function_call_refused_and_garbage_ends_only_that_session(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD)
    c.send(m.FunctionCall(1598, b"\x00\x00\x00\x00\x00\x00\x00\x00"))  # 1598 = md5(text)
    msgs = await c.until_ready()
    err = msgs[0]
    assert isinstance(err, m.ErrorResponse) and err.sqlstate == "0A000" and "FunctionCall" in err.message
    assert isinstance(msgs[-1], m.ReadyForQuery)
    c.send(m.Query("SELECT 5"))
    assert any(isinstance(x, m.DataRow) and x.values == (b"5",) for x in await c.until_ready())
    # a message type the protocol does not have ends the session with a protocol error
    c.send_raw(b"\x07\x00\x00\x00\x04")
    msgs = await c.until_ready()
    err = msgs[0]
    assert isinstance(err, m.ErrorResponse) and err.sqlstate == "08P01" and err.get("S") == "FATAL"
    await c.close()
    # a truncated Bind (lying about its parameter count) too
    c = await RawClient.login(port, USER, PASSWORD)
    c.send_raw(b"B" + (4 + 6).to_bytes(4, "big") + b"\x00\x00\x00\x00\x00\x09")
    msgs = await c.until_ready()
    assert isinstance(msgs[0], m.ErrorResponse) and msgs[0].sqlstate == "08P01"
    await c.close()
    # garbage before the startup packet
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x00\x00\x00\x10" + os.urandom(60))
    try:
        answer = await reader.read()
        assert answer == b"" or answer.startswith(b"E")
    except ConnectionResetError:
        pass
    writer.close()
    # and the node serves the next client as usual
    async with await _connect(dsn(port)) as conn:
        assert (await (await conn.execute("SELECT 6")).fetchone()) == (6,)
    assert any(c["error"] for c in completions(dbward_node)) is False


async def test_random_garbage_after_login_never_harms_the_node(dbward_node: RunningNode) -> None:
    import random

    port = await dbward_node.listen("pg")
    rnd = random.Random(20261125)
    types = b"QPBDECSHXdcfF\x00\x07zpZ"
    outcomes: set[str] = set()
    for _ in range(25):
        c = await RawClient.login(port, USER, PASSWORD)
        t = bytes([rnd.choice(types)])
        body = rnd.randbytes(rnd.randrange(0, 40))
        declared = len(body) + 4 + rnd.choice([0, 0, -1, 3, 1 << 31])
        c.send_raw(t + (declared & 0xFFFFFFFF).to_bytes(4, "big") + body)
        if declared != len(body) + 4:
            c.writer.write_eof()  # a truncated message: the client gives up mid-frame
        else:
            c.send(m.Query("SELECT 1"))
        msgs = await c.until_ready()
        errors = [x for x in msgs if isinstance(x, m.ErrorResponse)]
        if msgs[-1] is None:
            outcomes.add("closed" if not errors else f"closed-{errors[-1].sqlstate}")
        else:
            outcomes.add("usable")
        await c.close()
    assert "closed-08P01" in outcomes
    for _ in range(100):
        if len(dbward_node.node.sessions) == 0:
            break
        await asyncio.sleep(0.02)
    assert len(dbward_node.node.sessions) == 0
    async with await _connect(dsn(port)) as conn:
        assert (await (await conn.execute("SELECT 8")).fetchone()) == (8,)


async def test_gssenc_declined_and_protocol_negotiation(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD, gssenc_first=True)
    assert c.gssenc_answer == b"N"
    assert c.negotiated is None and len(c.secret) == 4
    await c.close()
    # a client asking for 3.5 and an unknown protocol extension gets 3.2 and the option declined
    c = await RawClient.login(port, USER, PASSWORD, protocol=(3 << 16) | 5, extra={"_pq_.future": "1"})
    assert c.negotiated == m.NegotiateProtocolVersion(2, ("_pq_.future",))
    assert len(c.secret) == 32
    c.send(m.Query("SELECT 9"))
    assert any(isinstance(x, m.DataRow) and x.values == (b"9",) for x in await c.until_ready())
    await c.close()


async def test_sql_prepare_and_declare_used_through_protocol_messages(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD)
    c.send(m.Query("PREPARE byid(int) AS SELECT name FROM customers WHERE id = $1"))
    await c.until_ready()
    c.send(m.Bind("", "byid", (), (b"2",), ()), m.Execute("", 0), m.Sync())
    msgs = await c.until_ready()
    assert any(isinstance(x, m.DataRow) and x.values == (b"Lee Jun",) for x in msgs)
    c.send(m.Query("BEGIN; DECLARE cur CURSOR FOR SELECT id FROM customers ORDER BY id"))
    await c.until_ready()
    c.send(m.Execute("cur", 2), m.Sync())
    msgs = await c.until_ready()
    assert [x.values for x in msgs if isinstance(x, m.DataRow)] == [(b"1",), (b"2",)]
    assert any(isinstance(x, m.PortalSuspended) for x in msgs)
    c.send(m.Query("COMMIT"))
    await c.until_ready()
    await c.close()
    seen = [(d["sql"], d["origin"], d["params"]) for d in dbward_node.journal.of_type("statement.decision")]
    assert ('EXECUTE "byid"', "execute", ["2"]) in seen
    assert ('FETCH 2 FROM "cur"', "execute", []) in seen


class _OutageJournal:
    """The node's journal, made to fail on statement decisions while ``down`` is set."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.down = False

    async def append(self, event: object) -> object:
        from dbward.errors import AuditUnavailable

        if self.down and getattr(event, "type", "") == "statement.decision":
            raise AuditUnavailable(
                "the audit journal cannot be written (test outage); statements are refused"
            )
        return await self.inner.append(event)  # type: ignore[attr-defined]

    def append_soon(self, event: object) -> None:
        self.inner.append_soon(event)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.inner.close()  # type: ignore[attr-defined]


async def test_audit_outage_refuses_statements_and_keeps_the_session(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    journal = _OutageJournal(dbward_node.node.gate.journal)
    dbward_node.node.gate.journal = journal  # type: ignore[assignment]
    async with await _connect(dsn(port)) as conn:
        journal.down = True
        with pytest.raises(psycopg.errors.IoError) as exc:  # SQLSTATE 58030 io_error
            await conn.execute("SELECT 1")
        assert exc.value.diag.sqlstate == "58030"
        with pytest.raises(psycopg.errors.IoError):
            await conn.execute("SELECT %s::int", (1,))
        journal.down = False
        assert (await (await conn.execute("SELECT %s::int", (3,))).fetchone()) == (3,)


async def test_copy_in_started_by_the_extended_protocol(dbward_node: RunningNode) -> None:
    """As libpq's PQexecParams does it: Execute and Sync together, a second Sync after CopyDone."""
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD)
    c.send(m.Query("CREATE TEMP TABLE xcopy (a int)"))
    await c.until_ready()
    c.send(m.Parse("", "COPY xcopy FROM STDIN"), m.Bind("", ""), m.Execute(""), m.Sync())
    first = await c.recv()
    assert isinstance(first, m.ParseComplete)
    assert isinstance(await c.recv(), m.BindComplete)
    copy_in = await c.recv()
    assert isinstance(copy_in, tuple) and copy_in[0] == "G"
    c.send(m.CopyData(b"1\n2\n3\n"), m.CopyDone(), m.Sync())
    msgs = await c.until_ready()
    assert any(isinstance(x, m.CommandComplete) and x.tag == "COPY 3" for x in msgs)
    # and a failing COPY Execute: the Sync is not ignored then
    c.send(m.Parse("", "COPY no_such_table FROM STDIN"), m.Bind("", ""), m.Execute(""), m.Sync())
    msgs = await c.until_ready()
    assert [x.sqlstate for x in msgs if isinstance(x, m.ErrorResponse)] == ["42P01"]
    c.send(m.Query("SELECT count(*) FROM xcopy"))
    msgs = await c.until_ready()
    assert [x.values for x in msgs if isinstance(x, m.DataRow)] == [(b"3",)]
    [live] = dbward_node.node.sessions.list()
    assert not live.busy
    await c.close()
    done = completions(dbward_node)
    assert [c["rows"] for c in done][-1] == 1
    assert any(c["rows"] == 3 and c["affected"] == 3 for c in done)


async def test_scram_channel_binding_request_is_refused_and_audited(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(m.StartupMessage(m.PROTOCOL_3_0, {"user": USER, "database": "dbward_test"}).encode())
    c = RawClient(reader, writer)
    offer = await c.recv()
    assert isinstance(offer, m.Authentication) and offer.mechanisms() == ("SCRAM-SHA-256",)
    c.send(m.SASLInitialResponse("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abcdef"))
    err = await c.recv()
    assert isinstance(err, m.ErrorResponse) and err.sqlstate == "28P01"
    assert "dbward offers SCRAM-SHA-256 only" in err.message
    assert await c.recv() is None
    await c.close()
    rejected = dbward_node.journal.of_type("session.rejected")
    assert rejected[-1]["user"] == USER and "SCRAM-SHA-256-PLUS" in rejected[-1]["reason"]


async def test_graceful_drain_ends_sessions_with_a_message(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    c = await RawClient.login(port, USER, PASSWORD)
    c.send(m.Query("SELECT pg_sleep(30)"))
    await _wait_for_statement(dbward_node, "SELECT pg_sleep(30)")
    await dbward_node.node.proxy.drain(timeout=0.2)
    msgs = await c.until_ready()
    fatal = [x for x in msgs if isinstance(x, m.ErrorResponse)]
    assert fatal and fatal[-1].sqlstate == "57P01" and "shutting down" in fatal[-1].message
    await _until_no_sleepers()
    assert dbward_node.journal.of_type("session.end")[-1]["reason"] == "dbward is shutting down"
    await c.close()
