"""Session lifecycle through dbward: cancel on disconnect, administrator kill, idle timeout,
refused commands, malformed packets, and bounded memory on a 1,000,000-row result."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pymysql
import pytest

from tests.conftest import PASSWORD, USER, RunningNode, mysql_root
from tests.e2e.mysql.conftest import completions, run


def connect(port: int, **kw: Any) -> pymysql.connections.Connection:
    return pymysql.connect(
        host="127.0.0.1", port=port, user=USER, password=PASSWORD, ssl_disabled=True, autocommit=True, **kw
    )


def upstream_queries(marker: str) -> list[tuple[int, str]]:
    """Queries running on MariaDB whose text contains ``marker`` (seen by root, not via dbward)."""
    root = mysql_root()
    try:
        with root.cursor() as cur:
            cur.execute(
                "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE USER = 'dbward_upstream' "
                "AND INFO LIKE %s",
                (f"%{marker}%",),
            )
            return [(int(r[0]), str(r[1])) for r in cur.fetchall()]
    finally:
        root.close()


async def wait_until(pred: Any, what: str, deadline: float = 30.0) -> None:
    """Poll ``pred`` until true; the deadline only bounds a hang, it is not a speed check."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await asyncio.to_thread(pred):
        if loop.time() > end:
            pytest.fail(f"gave up waiting for: {what}")
        await asyncio.sleep(0.1)


async def start_long_query(
    conn: pymysql.connections.Connection, marker: str, *, first: str | None = None
) -> tuple[threading.Thread, list[Any]]:
    """Run ``SELECT SLEEP(600) AS <marker>`` on ``conn`` in a thread (after ``first``, if
    given) and wait until the target runs it. Returns the thread and a list that gets how the
    query ended: its rows, or the exception the client raised."""
    ended: list[Any] = []

    def long_query() -> None:
        try:
            with conn.cursor() as cur:
                if first is not None:
                    cur.execute(first)
                cur.execute(f"SELECT SLEEP(600) AS {marker}")
                ended.append(cur.fetchall())
        except BaseException as exc:
            ended.append(exc)

    t = threading.Thread(target=long_query, daemon=True)
    t.start()
    await wait_until(lambda: bool(upstream_queries(marker)), "the query to run on the target")
    return t, ended


async def test_client_disconnect_kills_the_running_query(dbward_node: RunningNode, maria_port: int) -> None:
    marker = "dbward_cancel_probe_1"
    conn = await asyncio.to_thread(connect, maria_port)
    t, ended = await start_long_query(conn, marker)
    conn._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]  # the client vanishes
    await wait_until(lambda: not upstream_queries(marker), "dbward to KILL QUERY on the target")
    await asyncio.to_thread(t.join, 10)
    assert ended and isinstance(ended[0], BaseException)  # the client saw its connection go
    await wait_until(lambda: bool(dbward_node.journal.of_type("session.end")), "the session end event")
    assert "KILL QUERY" in dbward_node.journal.of_type("session.end")[-1]["reason"]
    # A killed SLEEP() returns 1 instead of failing; either way the statement's end is audited,
    # as interrupted when dbward saw the client go before the target answered.
    done = completions(dbward_node)[-1]
    assert done["rows"] == 1 or "interrupted" in (done["error"] or "").lower()


async def test_administrator_kill_stops_query_and_session(dbward_node: RunningNode, maria_port: int) -> None:
    marker = "dbward_kill_probe_2"
    conn = await asyncio.to_thread(connect, maria_port)
    t, ended = await start_long_query(conn, marker)
    (live,) = dbward_node.node.sessions.list()
    assert live.busy
    assert await dbward_node.node.sessions.kill(live.info.id, "killed by an administrator in a test")
    await wait_until(lambda: not upstream_queries(marker), "the query to be killed on the target")
    await asyncio.to_thread(t.join, 10)
    assert ended and isinstance(ended[0], pymysql.err.OperationalError)
    await wait_until(lambda: bool(dbward_node.journal.of_type("session.end")), "the session end event")
    assert dbward_node.journal.of_type("session.end")[-1]["reason"] == "killed by an administrator in a test"


async def test_idle_timeout_spares_running_statements(dbward_node: RunningNode, maria_port: int) -> None:
    dbward_node.node.deps.settings.proxy.idle_timeout_seconds = 1.0

    def go() -> tuple[Any, pymysql.err.OperationalError]:
        conn = connect(maria_port)
        with conn.cursor() as cur:
            cur.execute("SELECT SLEEP(1.5)")  # longer than the idle timeout: still activity
            first = cur.fetchone()
        threading.Event().wait(2.5)  # now truly idle
        with pytest.raises(pymysql.err.OperationalError) as ei, conn.cursor() as cur:
            cur.execute("SELECT 1")
        return first, ei.value

    first, err = await asyncio.to_thread(go)
    assert first == (0,)
    # the unsolicited ERR (4031) or the closed socket (2013) tells the client
    assert err.args[0] in (4031, 2013)
    ended = dbward_node.journal.of_type("session.end")[-1]
    assert "proxy.idle_timeout_seconds" in ended["reason"]


async def test_change_user_and_unknown_commands_are_refused(
    dbward_node: RunningNode, maria_port: int
) -> None:
    def go() -> tuple[str, str, tuple[Any, ...]]:
        conn = connect(maria_port)
        # COM_DEBUG (0x0d) and COM_BINLOG_DUMP (0x12) must never reach the target
        conn._execute_command(0x0D, b"")
        with pytest.raises(pymysql.err.MySQLError) as e1:
            conn._read_ok_packet()
        with pytest.raises(pymysql.err.MySQLError) as e2:
            conn.change_user if False else None  # noqa: B018
            conn._execute_command(0x11, b"bob\x00\x00\x00")
            conn._read_ok_packet()
        with conn.cursor() as cur:
            cur.execute("SELECT 9")
            row = cur.fetchone()
        conn.close()
        return str(e1.value), str(e2.value), row

    m1, m2, row = await asyncio.to_thread(go)
    assert "COM_DEBUG" in m1 and "not sent to the target" in m1
    assert "COM_CHANGE_USER is refused" in m2
    assert row == (9,)


async def test_malformed_packets_end_only_that_session(dbward_node: RunningNode, maria_port: int) -> None:
    async def raw(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", maria_port)
        await reader.read(4096)  # greeting
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        return data

    # a HandshakeResponse41 cut short, and one whose user name never ends
    for garbage in (b"\x05\x00\x00\x01\x8d\xa6\x0f\x00\x00", b"\x28\x00\x00\x01" + b"\xff" * 40):
        answer = await raw(garbage)
        assert answer[4] == 0xFF and b"malformed packet" in answer

    def bad_command() -> str:
        conn = connect(maria_port)
        conn._execute_command(0x17, b"\x01")  # COM_STMT_EXECUTE cut short
        with pytest.raises(pymysql.err.MySQLError) as ei:
            conn._read_ok_packet()
        return str(ei.value)

    assert "malformed packet" in await asyncio.to_thread(bad_command)
    ended = dbward_node.journal.of_type("session.end")[-1]
    assert "malformed packet" in ended["reason"]

    def ok() -> tuple[Any, ...]:
        with connect(maria_port) as c, c.cursor() as cur:
            cur.execute("SELECT 11")
            return tuple(cur.fetchall())

    assert await asyncio.to_thread(ok) == ((11,),)  # the node serves on


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["wc -l", "(sleep 3; wc -l)"], ids=["fast-client", "slow-client"])
async def test_million_row_result_streams_in_bounded_memory(
    dbward_node: RunningNode, maria_port: int, reader: str
) -> None:
    # ~110 MB of result rows; the client runs in its own process and counts rows without keeping
    # them. The slow client reads nothing for a while: dbward must stop reading from the target
    # meanwhile rather than hold the result in memory.
    sql = "SELECT seq, REPEAT('x', 100) FROM seq_1_to_1000000"
    cmd = (
        f"mariadb -h 127.0.0.1 -P {maria_port} -u {USER} -p{PASSWORD} --skip-ssl --quick -N "
        f'-D dbward_test -e "{sql}" | {reader}'
    )
    base = _rss_kib()
    peak = base
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_kib())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample(), name="rss-sampler")
    res = await run("sh", "-c", cmd, timeout=240)
    stop.set()
    await sampler
    assert res.rc == 0, res.stderr
    assert res.stdout.strip() == "1000000"
    done = completions(dbward_node)[-1]
    assert done["rows"] == 1_000_000
    result_kib = done["bytes_sent"] // 1024
    growth = peak - base
    print(f"1M rows: result {result_kib} KiB relayed, proxy RSS growth {growth} KiB")
    assert result_kib > 100_000
    assert growth < result_kib // 10


_SAFE_COMMANDS = [c for c in range(256) if c not in (0x02, 0x03, 0x0C, 0x16)]  # no SQL, no KILL


async def test_random_commands_never_take_the_node_down(dbward_node: RunningNode, maria_port: int) -> None:
    """Hypothesis-made command packets after a real login: each answer is a packet or a hang-up."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    answers: list[str] = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(_SAFE_COMMANDS), st.binary(max_size=64))
    def probe(cmd: int, body: bytes) -> None:
        conn = connect(maria_port)
        conn._sock.settimeout(10)  # type: ignore[union-attr]
        try:
            conn._execute_command(cmd, body)
            if cmd in (0x01, 0x18, 0x19):  # QUIT, SEND_LONG_DATA, STMT_CLOSE: no answer
                answers.append("none")
                return
            conn._read_packet()
            answers.append("answer")
        except pymysql.err.MySQLError as exc:
            answers.append(type(exc).__name__)
        finally:
            try:
                conn.close()
            except Exception:
                pass

    await asyncio.to_thread(probe)
    assert len(answers) >= 20
    assert set(answers) <= {"none", "answer", "OperationalError", "NotSupportedError", "InternalError"}

    def still_serving() -> tuple[Any, ...]:
        with connect(maria_port) as c, c.cursor() as cur:
            cur.execute("SELECT 12")
            return tuple(cur.fetchall())

    assert await asyncio.to_thread(still_serving) == ((12,),)


async def test_kill_with_a_dbward_connection_id(dbward_node: RunningNode, maria_port: int) -> None:
    """Clients kill with the id from dbward's greeting (the mariadb client on Ctrl-C does);
    dbward translates it to the session's target thread instead of forwarding it blindly."""
    marker = "dbward_kill_probe_3"
    victim = await asyncio.to_thread(connect, maria_port)
    killer = await asyncio.to_thread(connect, maria_port)
    assert victim.thread_id() >= 1 << 30  # a dbward id, never a target thread id
    t, ended = await start_long_query(victim, marker)

    def kill_query() -> None:
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {victim.thread_id()}")

    await asyncio.to_thread(kill_query)
    await asyncio.to_thread(t.join, 30)
    # MariaDB answers ER_QUERY_INTERRUPTED (MySQL makes SLEEP() return 1); the session lives on
    results = [e.args[0] if isinstance(e, pymysql.err.MySQLError) else e for e in ended]
    assert results in ([1317], [((1,),)])

    def victim_still_works() -> Any:
        with victim.cursor() as cur:
            cur.execute("SELECT 13")
            return cur.fetchall()

    assert await asyncio.to_thread(victim_still_works) == ((13,),)
    await asyncio.to_thread(killer.kill, victim.thread_id())  # COM_PROCESS_KILL: the whole session
    await wait_until(lambda: len(dbward_node.node.sessions) == 1, "the victim session to end")
    with pytest.raises(pymysql.err.OperationalError):
        await asyncio.to_thread(victim_still_works)
    stranger = await asyncio.to_thread(connect, maria_port)
    with pytest.raises(pymysql.err.OperationalError, match="not a live dbward session"):
        await asyncio.to_thread(stranger.kill, (1 << 30) + 999_999)
    for c in (killer, stranger):
        await asyncio.to_thread(c.close)
    kills = [
        e["sql"] for e in dbward_node.journal.of_type("statement.decision") if e["sql"].startswith("KILL")
    ]
    assert kills[0] == f"KILL QUERY {victim.thread_id()}"
