"""A real ``dbward up`` with ``proxy.workers: 2``: two processes share the node's listeners.

Checked with real clients against real PostgreSQL and MariaDB: both processes serve sessions;
a MySQL ``KILL QUERY <id>`` sent through a session of one process stops the statement of a
session held by the other; PostgreSQL CancelRequests (which arrive on a new connection that
either process may accept) cancel statements of sessions of both processes; the audit journal
written by both processes verifies as one chain; a worker killed with SIGKILL is started again;
and SIGTERM stops the primary and its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml

from dbward.audit.journal import iter_records
from dbward.config import load_settings
from tests.conftest import (
    MYSQL_UPSTREAM_PASSWORD,
    MYSQL_UPSTREAM_USER,
    PG_UPSTREAM_PASSWORD,
    PG_UPSTREAM_USER,
)
from tests.e2e.cli.conftest import Cli, Initialised, free_port, start_up

#: a safety net against a hang, not a measurement
WAIT = 60.0
PASSWORD = "worker-password-1"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _workers(pid: int) -> list[int]:
    """The primary's worker processes (its other children are the audit shipper)."""
    found = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"dbward.workers" in cmd:
            found.append(child)
    return found


@pytest.fixture
def node(
    cli: Cli, initialised: Initialised, tmp_path: Path, pg_upstream: None, mysql_upstream: None
) -> Iterator[dict[str, Any]]:
    d = initialised.data_dir
    cfg = d / "dbward.yaml"
    values = yaml.safe_load(cfg.read_text())
    values["proxy"]["workers"] = 2
    cfg.write_text(yaml.safe_dump(values))
    ports = {"pg": free_port(), "my": free_port()}
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"""\
version: 1
users:
  - username: wendy
    password: env:W_PW
connections:
  - name: pgw
    engine: postgres
    host: 127.0.0.1
    port: 5432
    database: dbward_test
    username: {PG_UPSTREAM_USER}
    password: env:UP_PW
    tls_mode: disable
    listen_port: {ports["pg"]}
  - name: myw
    engine: mysql
    host: 127.0.0.1
    port: 3306
    database: dbward_test
    username: {MYSQL_UPSTREAM_USER}
    password: env:MY_PW
    tls_mode: disable
    listen_port: {ports["my"]}
grants:
  - name: wendy-pg
    subject: user:wendy
    connection: pgw
    privileges: [read]
  - name: wendy-my
    subject: user:wendy
    connection: myw
    privileges: [admin]  # KILL is an administrative statement
"""
    )
    env = {**os.environ, "W_PW": PASSWORD, "UP_PW": PG_UPSTREAM_PASSWORD, "MY_PW": MYSQL_UPSTREAM_PASSWORD}
    r = cli("apply", "-f", policy, "--data-dir", d, env=env)
    assert r.code == 0, r.out
    proc, out = start_up(d, wait=WAIT)
    try:
        assert "dbward is up" in out, out
        assert "proxy processes: 2" in out, out
        yield {"proc": proc, "ports": ports, "data_dir": d, "banner": out}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in _workers(proc.pid):
            os.kill(w, signal.SIGKILL)


def _pg(port: int) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1", port=port, user="wendy", password=PASSWORD, dbname="dbward_test", sslmode="disable"
    )


def _my(port: int) -> pymysql.connections.Connection:
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="wendy",
        password=PASSWORD,
        database="dbward_test",
        ssl_disabled=True,
    )


def _sessions_by_owner(open_one: Any, owner_of: Any, per_owner: int) -> dict[int, list[Any]]:
    """Open sessions until each of the two processes holds ``per_owner`` of them."""
    by: dict[int, list[Any]] = {0: [], 1: []}
    deadline = time.monotonic() + WAIT
    while min(len(v) for v in by.values()) < per_owner and time.monotonic() < deadline:
        c = open_one()
        owner = owner_of(c) % 64
        assert owner in by, f"a session names process {owner}; the node has processes 0 and 1"
        if len(by[owner]) < per_owner:
            by[owner].append(c)
        else:
            # closed at once: until a restarted worker listens, every session lands on the
            # other process, and keeping them all open ran PostgreSQL out of connections
            c.close()
    assert min(len(v) for v in by.values()) >= per_owner, "one of the two processes served no session"
    return by


def test_two_processes_serve_cancel_and_kill_across_each_other(node: dict[str, Any], cli: Cli) -> None:
    ports = node["ports"]
    # ---- PostgreSQL: sessions on both processes, each cancelled by a CancelRequest that
    # either process may accept (BackendKeyData's process id names the session's process)
    pg = _sessions_by_owner(lambda: _pg(ports["pg"]), lambda c: c.info.backend_pid, 3)
    errors: dict[int, BaseException | None] = {}

    def sleep_in(c: psycopg.Connection[Any]) -> None:
        try:
            c.execute("SELECT pg_sleep(30)")
            errors[id(c)] = None
        except BaseException as exc:  # the cancel's error, checked below
            errors[id(c)] = exc

    conns = [c for group in pg.values() for c in group]
    threads = [threading.Thread(target=sleep_in, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the statements reach the target
    started = time.monotonic()
    for c in conns:
        c.cancel()
    for t in threads:
        t.join(WAIT)
    bad = [
        repr(errors.get(id(c)))
        for c in conns
        if not isinstance(errors.get(id(c)), psycopg.errors.QueryCanceled)
    ]
    assert not bad, bad
    assert time.monotonic() - started < 30, "a cancel did not reach its session"
    for c in conns:
        c.rollback()
        assert c.execute("SELECT 1").fetchone() == (1,)  # the sessions carry on
        c.close()

    # ---- MySQL: KILL QUERY <id> through a session of the other process
    my = _sessions_by_owner(lambda: _my(ports["my"]), lambda c: c.thread_id(), 1)
    victim, killer = my[0][0], my[1][0]
    outcome: dict[str, Any] = {}

    def run_long() -> None:
        try:
            with victim.cursor() as cur:
                cur.execute("SELECT SLEEP(30)")
                outcome["row"] = cur.fetchone()
        except BaseException as exc:
            outcome["error"] = exc

    t = threading.Thread(target=run_long)
    t.start()
    time.sleep(1.0)
    with killer.cursor() as cur:
        cur.execute(f"KILL QUERY {victim.thread_id()}")
    t.join(WAIT)
    assert not t.is_alive()
    # MariaDB answers an interrupted SLEEP() with 1 (or error 1317 "Query execution was interrupted")
    assert outcome.get("row") == (1,) or "1317" in str(outcome.get("error")), outcome
    with victim.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    # and KILL of the whole connection, the other way round
    with victim.cursor() as cur:
        cur.execute(f"KILL {killer.thread_id()}")
    with pytest.raises(pymysql.err.OperationalError), killer.cursor() as cur:
        cur.execute("SELECT 1")
    # a session of another user (or none) is refused with the sentence, from either process
    with (
        pytest.raises(pymysql.err.MySQLError, match="is not a live dbward session of user wendy"),
        victim.cursor() as cur,
    ):
        cur.execute(f"KILL QUERY {victim.thread_id() + 64 * 1000 + (1 - victim.thread_id() % 64)}")
    victim.close()

    # ---- one audit chain written by both processes, with sessions of both in it
    d = node["data_dir"]
    settings = load_settings(data_dir=d)
    nodes = {
        rec.get("node")
        for _, rec in iter_records(settings.journal_path)
        if rec.get("type") == "session.start"
    }
    assert len(nodes) == 2 and any(str(n).endswith("/w1") for n in nodes), nodes
    verify = cli("audit", "verify", "--data-dir", d)
    assert verify.code == 0, verify.out


def test_a_killed_worker_is_started_again_and_sigterm_stops_them_all(node: dict[str, Any]) -> None:
    proc: subprocess.Popen[str] = node["proc"]
    workers = _workers(proc.pid)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        now = _workers(proc.pid)
        if now and now != workers:
            break
        time.sleep(0.1)
    replacement = _workers(proc.pid)
    assert replacement and replacement != workers, "the worker was not started again"
    # the new worker serves: sessions reach both processes again
    by = _sessions_by_owner(lambda: _pg(node["ports"]["pg"]), lambda c: c.info.backend_pid, 1)
    for group in by.values():
        for c in group:
            assert c.execute("SELECT 1").fetchone() == (1,)
            c.close()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, rest
    assert "dbward stopped" in rest
    for pid in replacement:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
