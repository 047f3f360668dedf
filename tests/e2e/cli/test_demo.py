"""`dbward demo` in a subprocess: embedded PostgreSQL, sample data, dbward in front of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from dbward.demo import ANALYST_PASSWORD, luhn_is_valid, rrn_is_valid
from dbward.node import load_engines
from dbward.proxy.engine import ENGINES
from tests.e2e.cli.conftest import free_port


@pytest.mark.slow
def test_demo_starts_serves_and_cleans_up(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "250", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbward.cli", "demo", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    out = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while "dbward demo is ready" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert "dbward demo is ready" in out, out
        direct = re.search(r"direct \(bypassing dbward\): (postgresql://\S+)", out)
        assert direct, out
        assert f'psql "host=127.0.0.1 port={port} dbname=shop user=analyst"' in out
        with psycopg.connect(direct.group(1), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, email, phone, rrn, card_number FROM customers ORDER BY id"
            ).fetchall()
        assert len(rows) == 40
        assert any(re.fullmatch(r"[가-힣]{2,4}", r[0]) for r in rows)  # Korean names
        assert any(re.fullmatch(r"[A-Za-zÀ-ÿ' ]+", r[0]) for r in rows)  # Latin names
        assert all(rrn_is_valid(r[3]) for r in rows if r[3] is not None)
        assert all(luhn_is_valid(r[4]) for r in rows)

        load_engines()
        if "postgres" in ENGINES:
            dsn = f"host=127.0.0.1 port={port} dbname=shop user=analyst password={ANALYST_PASSWORD} sslmode=disable"
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                assert conn.execute("SELECT count(*) FROM orders").fetchone() == (120,)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        out += rest
        assert proc.returncode == 0, out
        assert "dbward stopped" in rest
        assert not (data_dir / "postgres" / "postmaster.pid").exists()  # PostgreSQL was stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
