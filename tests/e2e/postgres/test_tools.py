"""pgbench, pg_dump | pg_restore and a large result through dbward (memory stays bounded)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import USER, RunningNode, pg_dsn
from tests.e2e.postgres.conftest import completions, decisions, pg_env


async def run(*cmd: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env or pg_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def conn_args(port: int, db: str) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", db]


@pytest.fixture
def scratch_dbs(pg_upstream: None) -> Iterator[tuple[str, str]]:
    src, dst = "dbward_dump_src", "dbward_dump_dst"
    with psycopg.connect(pg_dsn(), autocommit=True) as c:
        for db in (src, dst):
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {db} OWNER dbward_upstream")
    with psycopg.connect(pg_dsn(src), autocommit=True) as c:
        c.execute("SET ROLE dbward_upstream")
        c.execute("CREATE TABLE events (id int PRIMARY KEY, kind smallint NOT NULL, note text)")
        c.execute("INSERT INTO events SELECT g, g % 7, 'n' || g FROM generate_series(1, 200000) g")
        c.execute("CREATE TABLE tags (id serial PRIMARY KEY, event_id int REFERENCES events, tag text)")
        c.execute("INSERT INTO tags (event_id, tag) SELECT g, 't' || g FROM generate_series(1, 1000) g")
        c.execute("CREATE VIEW kinds AS SELECT kind, count(*) FROM events GROUP BY kind")
    yield src, dst
    with psycopg.connect(pg_dsn(), autocommit=True) as c:
        for db in (src, dst):
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


async def test_pg_dump_and_restore_round_trip(
    dbward_node: RunningNode, scratch_dbs: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = scratch_dbs
    port = await dbward_node.listen("pg")
    dump = tmp_path / "db.dump"
    started = time.monotonic()
    rc, _, err = await run("pg_dump", "-Fc", "-f", str(dump), *conn_args(port, src))
    assert rc == 0, err
    rc, _, err = await run("pg_restore", "--no-owner", *conn_args(port, dst), str(dump))
    assert rc == 0, err
    elapsed = time.monotonic() - started
    with psycopg.connect(pg_dsn(dst)) as c:
        assert c.execute("SELECT count(*), sum(id), sum(kind) FROM events").fetchone() == (
            200000,
            200000 * 200001 // 2,
            sum(g % 7 for g in range(1, 200001)),
        )
        assert c.execute("SELECT count(*) FROM tags").fetchone() == (1000,)
        assert c.execute("SELECT sum(count) FROM kinds").fetchone() == (200000,)
    stmts = dbward_node.statements()
    assert any(s.startswith("COPY public.events") and "TO stdout" in s for s in stmts)
    assert any(s.startswith("COPY public.events") and "FROM stdin" in s for s in stmts)
    copied = [c for c in completions(dbward_node) if c["rows"] == 200000]
    assert len(copied) == 2
    print(
        f"pg_dump | pg_restore of 201k rows through dbward: {elapsed:.2f}s, dump {dump.stat().st_size} bytes"
    )


async def test_pgbench_simple_and_prepared(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    rc, _, err = await run("pgbench", "-i", "-s", "1", "-q", *conn_args(port, "dbward_test"))
    assert rc == 0, err
    for mode in ("simple", "extended", "prepared"):
        rc, out, err = await run(
            "pgbench", "-n", "-M", mode, "-c", "2", "-t", "30", *conn_args(port, "dbward_test")
        )
        assert rc == 0, err + out
        assert "number of transactions actually processed: 60/60" in out, out
        failed = re.search(r"number of failed transactions: (\d+)", out)
        assert failed is None or failed.group(1) == "0", out
        tps = re.search(r"tps = ([\d.]+)", out)
        print(f"pgbench -M {mode}: {tps.group(1) if tps else '?'} tps")
    seen = decisions(dbward_node)
    updates = [d for d in seen if d["sql"].startswith("UPDATE pgbench_accounts")]
    assert sum(1 for d in updates if d["origin"] == "query") == 60
    assert sum(1 for d in updates if d["origin"] == "execute") == 120
    assert all(d["params"] for d in updates if d["origin"] == "execute")
    assert not [c for c in completions(dbward_node) if c["error"]]


def _reset_rss_peak() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS and return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_peak_kib()


def _rss_peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


async def test_large_result_streams_with_bounded_memory(dbward_node: RunningNode) -> None:
    port = await dbward_node.listen("pg")
    sql = "SELECT g FROM generate_series(1, 1000000) g"
    # warm up the code paths first, then reset the peak RSS counter of this process (the proxy)
    rc, _, err = await run("psql", "-X", "-c", "SELECT 1", "-o", "/dev/null", *conn_args(port, "dbward_test"))
    assert rc == 0, err
    before = _reset_rss_peak()
    rc, _, err = await run(
        "psql", "-X", "-A", "-t", "-c", sql, "-o", "/dev/null", *conn_args(port, "dbward_test")
    )
    assert rc == 0, err
    growth_kib = _rss_peak_kib() - before
    done = [c for c in completions(dbward_node) if c["rows"] == 1_000_000]
    assert len(done) == 1
    result_kib = done[0]["bytes_sent"] // 1024
    print(f"1M rows: {result_kib} KiB relayed, proxy peak RSS growth {growth_kib} KiB")
    assert result_kib > 15_000
    assert growth_kib < result_kib / 4
