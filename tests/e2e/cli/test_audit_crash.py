"""dbward killed with SIGKILL under load: every statement the target executed is in the trail.

The audit journal's "write" durability hands each decision to the operating system before
the statement is forwarded, so a crash of dbward cannot lose a record of something that ran.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

from dbward.audit.journal import iter_records
from dbward.audit.verify import verify_lines
from tests.conftest import PG_UPSTREAM_PASSWORD, PG_UPSTREAM_USER, pg_dsn
from tests.e2e.cli.conftest import Cli, Initialised, free_port

BIN = Path(sys.executable).parent


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dbward exited early with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"dbward did not listen on {port}")


def test_sigkill_under_load_loses_no_executed_statement(
    cli: Cli, initialised: Initialised, tmp_path: Path, pg_upstream: None
) -> None:
    d = initialised.data_dir
    table = f"crash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as c:
        c.execute(f"CREATE TABLE {table} (marker text)")
        c.execute(f"ALTER TABLE {table} OWNER TO {PG_UPSTREAM_USER}")
    port = free_port()
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"""\
version: 1
users:
  - username: loader
    password: env:LOADER_PW
connections:
  - name: pgc
    engine: postgres
    host: 127.0.0.1
    port: 5432
    database: dbward_test
    username: {PG_UPSTREAM_USER}
    password: env:UP_PW
    tls_mode: disable
    listen_port: {port}
grants:
  - name: loader-rw
    subject: user:loader
    connection: pgc
    privileges: [write]
"""
    )
    env = {**os.environ, "LOADER_PW": "loader-password-1", "UP_PW": PG_UPSTREAM_PASSWORD}
    assert cli("apply", "-f", policy, "--data-dir", d, env=env).code == 0
    up = [str(BIN / "dbward"), "up", "--data-dir", str(d)]
    proc = subprocess.Popen(up, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_port(port, proc)
        stop = threading.Event()
        errors: list[str] = []

        def load(worker: int) -> None:
            dsn = f"host=127.0.0.1 port={port} user=loader password=loader-password-1 dbname=dbward_test sslmode=disable"
            try:
                with psycopg.connect(dsn, autocommit=True) as c:
                    i = 0
                    while not stop.is_set():
                        c.execute(f"INSERT INTO {table} VALUES ('w{worker}-{i}')")
                        i += 1
            except psycopg.Error as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        shippers = _children(proc.pid, "dbward.audit.ship")
        assert shippers, "dbward up forwards the journal in a child process (audit.forwarding: process)"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the shipper notices that its parent is gone (its stdin closes) and exits by itself
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in shippers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{pid}").exists() for pid in shippers), "the shipper outlived dbward"
        stop.set()
        for t in threads:
            t.join(10)
        assert errors, "the clients must have noticed dbward going away"
    finally:
        if proc.poll() is None:
            proc.kill()
    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as c:
        executed = {r[0] for r in c.execute(f"SELECT marker FROM {table}").fetchall()}
        c.execute(f"DROP TABLE {table}")
    assert len(executed) > 20, "the load ran before the kill"
    journal = d / "audit" / "journal.jsonl"
    recorded = {
        rec["sql"].split("'")[1]
        for _, rec in iter_records(journal)
        if rec["type"] == "statement.decision"
        and rec.get("effect") == "allow"
        and table in rec.get("sql", "")
    }
    missing = executed - recorded
    assert not missing, f"executed on the target but not in the audit trail: {sorted(missing)[:5]}"
    # After a restart the journal continues a valid chain (a torn last line, if any, is cut).
    proc = subprocess.Popen(up, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_port(port, proc)
        dsn = f"host=127.0.0.1 port={port} user=loader password=loader-password-1 dbname=dbward_test sslmode=disable"
        with psycopg.connect(dsn, autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    records = [line for line, _ in iter_records(journal)]
    report = verify_lines(records)
    assert report.ok, report.problems
    # the shipper resumed from its cursor after the restart and drained at the stop: the
    # store's copy holds every record of the journal
    with sqlite3.connect(d / "dbward.db") as db:
        (stored,) = db.execute("SELECT count(*) FROM audit_events").fetchone()
    assert stored == len(records)


def _children(pid: int, marker: str) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and marker.encode() in cmdline:
            found.append(int(stat.parent.name))
    return found
