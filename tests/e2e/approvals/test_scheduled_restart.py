"""dbward killed (SIGKILL) while its executor runs a scheduled statement, then started again.

A real ``dbward up`` on a data directory. A scheduled UPDATE that sleeps on PostgreSQL is
approved, dbward runs it through its own proxy, and dbward is killed while the target is still
executing it; the orphaned backend is then ended on the target, so nothing committed. After
the restart the request ends ``failed`` with "outcome unknown" naming the statement id, it is
never left ``executing`` and never run again (the row is unchanged, one decision in the
audit journal). A second request whose claim was written to the store but never reached the
gate (what a crash between claim and connect leaves) is run after the restart, once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from sqlalchemy import update

from dbward.audit.journal import iter_records
from dbward.config import load_settings
from dbward.store.crypto import SecretBox, load_key
from dbward.store.db import Store
from dbward.store.models import ApprovalRequestRow
from tests.conftest import PG_UPSTREAM_PASSWORD, PG_UPSTREAM_USER, pg_dsn
from tests.e2e.cli.conftest import Cli, Initialised, free_port
from tests.integration.api.conftest import make_token

# these tests change the sample rows for real: put them back after each
pytestmark = pytest.mark.usefixtures("restore_customers")

BIN = Path(sys.executable).parent
#: a safety net against a hang, not a measurement
WAIT = 60.0


def _until(cond: Callable[[], Any], what: str, proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"dbward exited early with {proc.returncode}")
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _x(table: str, rid: int) -> int:
    with psycopg.connect(pg_dsn("dbward_test")) as c:
        row = c.execute(f"SELECT x FROM {table} WHERE id = %s", (rid,)).fetchone()
        assert row is not None
        return int(row[0])


def _sleeping_backends(marker: str) -> list[int]:
    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as c:
        rows = c.execute(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        ).fetchall()
    return [int(r[0]) for r in rows]


@pytest.fixture
def table() -> Iterator[str]:
    name = f"sched_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, x int NOT NULL)")
        c.execute(f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
        c.execute(f"ALTER TABLE {name} OWNER TO {PG_UPSTREAM_USER}")
    yield name
    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")


def test_a_scheduled_execution_survives_a_crash_of_dbward(
    cli: Cli, initialised: Initialised, tmp_path: Path, pg_upstream: None, table: str
) -> None:
    d = initialised.data_dir
    cfg = d / "dbward.yaml"
    values = yaml.safe_load(cfg.read_text())
    values["approvals"] = {
        "fallback_approvers": ["user:dave"],
        "executor_interval_seconds": 0.2,
        "execution_lease_seconds": 2,
    }
    cfg.write_text(yaml.safe_dump(values))
    port = free_port()
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"""\
version: 1
users:
  - username: carol
    password: env:CAROL_PW
  - username: dave
    password: env:DAVE_PW
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
  - name: carol-read
    subject: user:carol
    connection: pgc
    privileges: [read-only]
"""
    )
    env = {
        **os.environ,
        "CAROL_PW": "carol-password-1",
        "DAVE_PW": "dave-password-1",
        "UP_PW": PG_UPSTREAM_PASSWORD,
    }
    r = cli("apply", "-f", policy, "--data-dir", d, env=env)
    assert r.code == 0, r.out

    settings = load_settings(data_dir=d)

    async def tokens() -> dict[str, str]:
        store = Store.open(
            settings.resolved_store_url, SecretBox(load_key(settings.encryption_key, settings.key_file))
        )
        try:
            return {u: await make_token(store, f"{u}-api", u, ["self"]) for u in ("carol", "dave")}
        finally:
            await store.close()

    tok = asyncio.run(tokens())
    api = f"http://127.0.0.1:{initialised.ports['api']}/api/v1"

    def h(who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {tok[who]}"}

    def file_and_approve(sql: str, **extra: Any) -> int:
        r = httpx.post(
            f"{api}/approvals/requests",
            json={"type": "sql", "connection": "pgc", "sql": sql, "reason": "ticket OPS-9", **extra},
            headers=h("carol"),
        )
        assert r.status_code == 201, r.text
        rid = int(r.json()["id"])
        r = httpx.post(f"{api}/approvals/requests/{rid}/approve", json={"comment": "ok"}, headers=h("dave"))
        assert r.status_code == 200 and r.json()["state"] == "approved", r.text
        return rid

    def get(rid: int) -> dict[str, Any]:
        r = httpx.get(f"{api}/approvals/requests/{rid}", headers=h("carol"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    up = [str(BIN / "dbward"), "up", "--data-dir", str(d)]
    proc = subprocess.Popen(up, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    slow = f"UPDATE {table} SET x = x + 1 WHERE id = 1 AND pg_sleep(30) IS NOT NULL"
    try:
        _until(lambda: _listening(initialised.ports["api"]) and _listening(port), "dbward to listen", proc)
        # the resume case: an approved request, not scheduled (dbward leaves it alone for now)
        resumed = file_and_approve(f"UPDATE {table} SET x = x + 1 WHERE id = 2")
        killed = file_and_approve(slow, scheduled_at=datetime.now(UTC).isoformat())
        # dbward's executor claims it, the gate takes its use, the target runs it
        running = _until(
            lambda: (g := get(killed))["execution_state"] == "running" and g,
            "the scheduled run to start",
            proc,
        )
        assert running["state"] == "executing"
        sid = running["statement_id"]
        pids = _until(
            lambda: _sleeping_backends(f"{table} SET x = x + 1 WHERE id = 1"), "the target to run it"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # the target still runs the orphaned statement; end it there, so nothing committed
    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as c:
        for pid in pids:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
    _until(lambda: not _sleeping_backends(f"{table} SET x = x + 1 WHERE id = 1"), "the backend to end")
    assert _x(table, 1) == 0

    # a crash between claim and connect: the claim is in the store, nothing reached the gate
    async def claim_left_behind() -> None:
        store = Store.open(
            settings.resolved_store_url, SecretBox(load_key(settings.encryption_key, settings.key_file))
        )
        try:
            async with store.transaction() as s:
                await s.execute(
                    update(ApprovalRequestRow)
                    .where(ApprovalRequestRow.id == resumed)
                    .values(
                        state="executing",
                        execution_state="claimed",
                        claimed_by="another-node#0badc0de",
                        claimed_at=datetime.now(UTC) - timedelta(minutes=5),
                        attempt=1,
                    )
                )
        finally:
            await store.close()

    asyncio.run(claim_left_behind())

    proc = subprocess.Popen(up, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _until(lambda: _listening(initialised.ports["api"]), "dbward to listen again", proc)
        failed = _until(
            lambda: (g := get(killed))["state"] != "executing" and g, "the run to be resolved", proc
        )
        done = _until(lambda: (g := get(resumed))["state"] != "executing" and g, "the resumed run", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    assert failed["state"] == "failed" and failed["execution_state"] == "unknown", failed
    assert failed["statement_id"] == sid
    err = failed["outcome"]["error"]
    assert err.startswith("outcome unknown:") and f"statement {sid}" in err, err
    assert "dbward does not run it again" in err
    assert _x(table, 1) == 0 and not _sleeping_backends(f"{table} SET x = x + 1 WHERE id = 1")

    assert done["state"] == "executed" and done["outcome"]["rows_affected"] == 1, done
    assert done["outcome"]["node"].startswith(socket.gethostname() + "#"), done["outcome"]
    assert _x(table, 2) == 1

    # the journal: each statement decided once, both by dbward-scheduler as carol
    records = [rec for _, rec in iter_records(d / "audit" / "journal.jsonl")]
    for rid in (killed, resumed):
        decided = [
            rec
            for rec in records
            if rec["type"] == "statement.decision" and f"approval:{rid}" in (rec.get("rule_ids") or [])
        ]
        assert len(decided) == 1, (rid, decided)
        assert decided[0]["client_program"] == "dbward-scheduler" and decided[0]["user"] == "carol"
    assert any(
        rec["type"] == "approval.step"
        and rec["request_id"] == str(killed)
        and rec["action"] == "executed"
        and rec.get("statement_id") == sid
        for rec in records
    )
