"""dbward's benchmark: dbward against a direct connection and a reference relay, in one run.

PostgreSQL: pgbench (select-only and ``SELECT 1``, simple and prepared, 1/8/32 clients)
through direct, pgbouncer (session pooling) and dbward. MariaDB: sysbench oltp_point_select
and oltp_read_only (1/8/32 threads) through direct, socat and dbward. Both suites also run
through ``bench/pyrelay.py``, a bare relay in Python (uvloop Protocols, as dbward's engines),
which shows what the language costs apart from dbward's work. Streaming: a
1,000,000-row (~100 MB) result through psql and the mariadb client: direct, dbward, and
dbward masking one column. Setups alternate within each cell and
every cell is repeated (``--repeat``, at least 3). CPU time per statement comes from each
relay process's own CPU counters (/proc/PID/stat, children included); for dbward it is also
split by part (its event loop, its other threads, worker processes, the audit shipper), thread
by thread, so that where the time goes is measured in every run.

Writes ``bench/results/<timestamp>.json`` and a Markdown report (also printed). No pass/fail:
the numbers are reported; people judge. Run with ``make bench`` (``make bench ARGS=--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
PG = ("127.0.0.1", 5432)
MY = ("127.0.0.1", 3306)
USER, PASSWORD = "bench", "bench-password-1"
MASKED_USER = "bench_masked"  # the same grants, with one column of the stream masked
UPSTREAM_USER, UPSTREAM_PASSWORD = "dbward_bench", "bench-upstream-1"
PG_DB, MY_DB = "dbward_bench", "sbtest"
PORTS = {
    "dbward-pg": 16432,
    "dbward-my": 13307,
    "pgbouncer": 16433,
    "socat": 13308,
    "python-relay-pg": 16434,
    "python-relay-my": 13309,
}
#: the reference relays of each suite: a C one, then bench/pyrelay.py (Python, nothing but bytes)
RELAY_PROCS = {"python-relay": {"postgres": "python-relay-pg", "mariadb": "python-relay-my"}}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def sh(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its live children (dbward's audit shipper runs in one):
    utime + stime + cutime + cstime of each, so children it has waited for count too."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a child that just exited
        total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK
    return total


#: dbward's parts, in the order the report shows them (see cpu_parts)
PARTS = ("proxy loop", "proxy threads", "workers", "shipper loop", "shipper threads")


def cpu_parts(pid: int) -> dict[tuple[str, int], float]:
    """CPU seconds of each thread of dbward (/proc/PID/task/TID/stat), by (part, thread id):
    the proxy's event loop (its main thread), its other threads (the journal's fsync thread,
    the store's threads), worker processes (``proxy.workers`` above 1), and the audit
    shipper's event loop and threads (its SQLite thread)."""
    threads: dict[tuple[str, int], float] = {}
    for p in [pid, *_children(pid)]:
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue  # a child that just exited
        shipper = b"dbward.audit.ship" in cmdline
        for task in tasks:
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
            main = task.name == str(p)
            if shipper:
                part = "shipper loop" if main else "shipper threads"
            elif p != pid:
                part = "workers"
            else:
                part = "proxy loop" if main else "proxy threads"
            threads[(part, int(task.name))] = seconds
    return threads


@dataclass
class CpuMark:
    """A relay's CPU counters at one moment (for dbward, also by part)."""

    total: float
    threads: dict[tuple[str, int], float] | None


def cpu_mark(relay: Proc | None) -> CpuMark | None:
    if relay is None:
        return None
    return CpuMark(cpu_seconds(relay.pid), cpu_parts(relay.pid) if relay.name == "dbward" else None)


def cpu_per_statement(
    relay: Proc | None, before: CpuMark | None, n: int
) -> tuple[float | None, dict[str, float] | None]:
    """(CPU us per statement over a run, and by part for dbward) from the mark taken before it."""
    after = cpu_mark(relay)
    if after is None or before is None or not n:
        return None, None
    parts = None
    if after.threads is not None and before.threads is not None:
        # per thread: one that started during the run counts from 0; one that ended during
        # it is missing, so the parts may add up to a little less than the total
        seconds = dict.fromkeys(PARTS, 0.0)
        for (part, tid), cpu in after.threads.items():
            seconds[part] += cpu - before.threads.get((part, tid), 0.0)
        parts = {k: round(v * 1e6 / n, 1) for k, v in seconds.items()}
    return (after.total - before.total) * 1e6 / n, parts


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its live children (the audit shipper)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


# --------------------------------------------------------------------------- setup
def prepare_databases(scale: int, sb_rows: int) -> None:
    import psycopg
    import pymysql

    with psycopg.connect(f"host={PG[0]} port={PG[1]} user=postgres dbname=postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname=%s", (UPSTREAM_USER,)).fetchone():
            c.execute(f"CREATE ROLE {UPSTREAM_USER} LOGIN SUPERUSER PASSWORD '{UPSTREAM_PASSWORD}'")
        if not c.execute("SELECT 1 FROM pg_database WHERE datname=%s", (PG_DB,)).fetchone():
            c.execute(f"CREATE DATABASE {PG_DB} OWNER {UPSTREAM_USER}")
    sh(["pgbench", "-i", "-q", "-s", str(scale), "-h", PG[0], "-p", str(PG[1]), "-U", "postgres", PG_DB])
    with psycopg.connect(f"host={PG[0]} port={PG[1]} user=postgres dbname={PG_DB}", autocommit=True) as c:
        # the streaming runs read a real table, so that a masking rule can apply to a column
        c.execute(
            "CREATE TABLE IF NOT EXISTS stream_rows AS SELECT g AS id, md5(g::text) || md5((g+1)::text)"
            " || repeat('x', 30) AS payload FROM generate_series(1, 1000000) g"
        )
        c.execute(f"ALTER TABLE stream_rows OWNER TO {UPSTREAM_USER}")
    m = pymysql.connect(host=MY[0], port=MY[1], user="root", password="", ssl_disabled=True, autocommit=True)
    with m.cursor() as cur:
        cur.execute("SELECT host FROM mysql.user WHERE user = ''")
        for (host,) in cur.fetchall():
            cur.execute(f"DROP USER ''@'{host}'")
        cur.execute(f"CREATE USER IF NOT EXISTS '{UPSTREAM_USER}'@'%' IDENTIFIED BY '{UPSTREAM_PASSWORD}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{UPSTREAM_USER}'@'%'")
        cur.execute(f"DROP DATABASE IF EXISTS {MY_DB}")
        cur.execute(f"CREATE DATABASE {MY_DB}")
        cur.execute(
            f"CREATE TABLE {MY_DB}.stream_rows (id BIGINT PRIMARY KEY, payload VARCHAR(100))"
            f" SELECT seq AS id, concat(md5(seq), md5(seq+1), repeat('x', 30)) AS payload FROM {MY_DB}.seq_1_to_1000000"
        )
    m.close()
    sh([*sysbench_base("oltp_read_only", MY[1], "root", "", 1, sb_rows), "prepare"])


BENCH_POLICY = """\
version: 1
users:
  - username: {user}
    password: env:DBWARD_BENCH_PASSWORD
  - username: {masked_user}
    password: env:DBWARD_BENCH_PASSWORD
connections:
  - name: bench-pg
    engine: postgres
    host: 127.0.0.1
    port: 5432
    database: {pg_db}
    username: {up_user}
    password: env:DBWARD_BENCH_UPSTREAM
    tls_mode: disable
    listen_port: {pg_port}
    policy:
      approval_required: [DROP, TRUNCATE, UPDATE WITHOUT WHERE, DELETE WITHOUT WHERE]
  - name: bench-maria
    engine: mysql
    host: 127.0.0.1
    port: 3306
    database: {my_db}
    username: {up_user}
    password: env:DBWARD_BENCH_UPSTREAM
    tls_mode: disable
    listen_port: {my_port}
    policy:
      approval_required: [DROP, TRUNCATE, UPDATE WITHOUT WHERE, DELETE WITHOUT WHERE]
grants:
  - name: bench-pg-rw
    subject: user:{user}
    connection: bench-pg
    privileges: [read, write]
  - name: bench-maria-rw
    subject: user:{user}
    connection: bench-maria
    privileges: [read, write]
  - name: bench-pg-masked
    subject: user:{masked_user}
    connection: bench-pg
    privileges: [read]
  - name: bench-maria-masked
    subject: user:{masked_user}
    connection: bench-maria
    privileges: [read]
# The streaming run's "dbward, one masked column" setup: the second user reads the same rows
# with one column masked (a partial mask keeps the value's length, so the bytes are alike);
# the first user is exempt, so every other run is unmasked.
masking_rules:
  - name: bench-mask-payload-pg
    connection: bench-pg
    table: stream_rows
    column: payload
    algorithm: partial:4:4
    exempt: [user:{user}]
  - name: bench-mask-payload-maria
    connection: bench-maria
    table: stream_rows
    column: payload
    algorithm: partial:4:4
    exempt: [user:{user}]
# A few query rules as a real deployment has them; regex rules read every statement's text.
rules:
  - id: no-drop-database
    priority: 10
    match: regex
    pattern: 'drop\\s+(database|schema)'
    action: deny
    message: databases and schemas are dropped by the DBA team only
  - id: no-sleep
    priority: 20
    match: regex
    pattern: '(pg_sleep|sleep)\\s*\\('
    action: deny
  - id: truncate-needs-approval
    priority: 30
    match: regex
    pattern: '^\\s*truncate\\b'
    action: require_approval
"""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def start_dbward(work: Path, workers: int = 1) -> Proc:
    data = work / "dbward"
    env = {
        **os.environ,
        # proxy.workers: 1 is dbward's default; 0 is one proxy process per CPU core
        "DBWARD_PROXY__WORKERS": str(workers),
        "DBWARD_BENCH_PASSWORD": PASSWORD,
        "DBWARD_BENCH_UPSTREAM": UPSTREAM_PASSWORD,
        "DBWARD_LOG_LEVEL": "WARNING",
    }
    sh([str(BIN / "dbward"), "init", "--data-dir", str(data)], env=env)
    policy = work / "bench-policy.yaml"
    policy.write_text(
        BENCH_POLICY.format(
            user=USER,
            masked_user=MASKED_USER,
            pg_db=PG_DB,
            my_db=MY_DB,
            up_user=UPSTREAM_USER,
            pg_port=PORTS["dbward-pg"],
            my_port=PORTS["dbward-my"],
        )
    )
    sh([str(BIN / "dbward"), "apply", "-f", str(policy), "--data-dir", str(data)], env=env)
    log = work / "dbward.log"
    p = subprocess.Popen(
        [str(BIN / "dbward"), "up", "--data-dir", str(data)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_port(PORTS["dbward-pg"])
    wait_port(PORTS["dbward-my"])
    return Proc("dbward", p, log)


def start_pgbouncer(work: Path) -> Proc:
    ini = work / "pgbouncer.ini"
    users = work / "userlist.txt"
    users.write_text(f'"postgres" ""\n"{USER}" ""\n')
    ini.write_text(
        f"""[databases]
{PG_DB} = host={PG[0]} port={PG[1]} dbname={PG_DB} user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {PORTS["pgbouncer"]}
auth_type = trust
auth_file = {users}
pool_mode = session
max_client_conn = 200
default_pool_size = 40
unix_socket_dir =
logfile = {work / "pgbouncer.log"}
pidfile = {work / "pgbouncer.pid"}
"""
    )
    log = work / "pgbouncer.out"
    cmd = ["pgbouncer", str(ini)]
    if os.geteuid() == 0:
        cmd = ["pgbouncer", "-u", "postgres", str(ini)]
        shutil.chown(work, "postgres")
        for f in (ini, users):
            shutil.chown(f, "postgres")
    p = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_port(PORTS["pgbouncer"])
    return Proc("pgbouncer", p, log)


def start_socat(work: Path) -> Proc:
    log = work / "socat.log"
    p = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{PORTS['socat']},bind=127.0.0.1,reuseaddr,fork,nodelay",
            f"TCP:{MY[0]}:{MY[1]},nodelay",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_port(PORTS["socat"])
    return Proc("socat", p, log)


def start_pyrelay(work: Path, name: str, target: int) -> Proc:
    """bench/pyrelay.py: a bare uvloop relay, what Python alone costs (no governance)."""
    log = work / f"{name}.log"
    p = subprocess.Popen(
        [str(BIN / "python"), str(ROOT / "bench" / "pyrelay.py"), str(PORTS[name]), str(target)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_port(PORTS[name])
    return Proc(name, p, log)


# --------------------------------------------------------------------------- workloads
@dataclass
class Sample:
    suite: str
    workload: str
    clients: int
    setup: str
    rep: int
    tps: float
    statements: int
    seconds: float
    cpu_us_per_statement: float | None = None
    errors: int = 0
    #: dbward only: CPU us per statement of each of its parts (see cpu_parts)
    cpu_parts_us: dict[str, float] | None = None
    #: pgbench only: the latency tail of the run's transactions, in ms (see latency_tail)
    latency_ms: dict[str, float] | None = None


@dataclass
class Report:
    started: str
    machine: dict[str, Any]
    args: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def pg_target(setup: str) -> tuple[int, str, dict[str, str]]:
    # Plain TCP everywhere: the local PostgreSQL and pgbouncer offer no TLS, so comparing a
    # TLS session through dbward with plain ones would measure TLS, not the relay.
    plain = {"PGSSLMODE": "disable"}
    if setup == "direct":
        return PG[1], "postgres", plain
    if setup == "pgbouncer":
        return PORTS["pgbouncer"], "postgres", plain
    if setup == "python-relay":
        return PORTS["python-relay-pg"], "postgres", plain
    user = MASKED_USER if setup == "dbward-masked" else USER
    return PORTS["dbward-pg"], user, {"PGPASSWORD": PASSWORD, **plain}


def latency_tail(logs: list[Path]) -> dict[str, float] | None:
    """p99, p99.9 and the maximum of every transaction's latency in pgbench's per-transaction
    logs (``-l``: the third column, in us), in ms; the logs are removed. A stall of the relay
    (a pause of its event loop) shows here, not in throughput or CPU."""
    lat: list[int] = []
    for f in logs:
        with f.open() as fh:
            lat.extend(int(line.split()[2]) for line in fh)
        f.unlink()
    if not lat:
        return None
    lat.sort()
    n = len(lat)
    return {
        "p99": round(lat[min(n - 1, int(n * 0.99))] / 1000, 2),
        "p99.9": round(lat[min(n - 1, int(n * 0.999))] / 1000, 2),
        "max": round(lat[-1] / 1000, 2),
    }


def run_pgbench(
    workload: str, mode: str, clients: int, setup: str, duration: int, work: Path
) -> tuple[int, float, int, dict[str, float] | None]:
    port, user, env = pg_target(setup)
    prefix = work / f"pgbench-latency-{setup}"
    args = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-M", mode]
    args += ["-c", str(clients), "-j", str(min(clients, 2)), "-T", str(duration)]
    args += ["-l", "--log-prefix", str(prefix)]
    if workload == "select-only":
        args.append("-S")
    else:
        script = work / "select1.sql"
        script.write_text("SELECT 1;\n")
        args += ["-f", str(script)]
    args.append(PG_DB)
    out = subprocess.run(args, text=True, capture_output=True, env={**os.environ, **env})
    text = out.stdout + out.stderr
    done = re.search(r"number of transactions actually processed: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    tail = latency_tail(sorted(work.glob(f"{prefix.name}.*")))
    if out.returncode != 0 or not done or not tps:
        raise RuntimeError(f"pgbench through {setup} failed:\n{text[-2000:]}")
    return int(done.group(1)), float(tps.group(1)), int(failed.group(1)) if failed else 0, tail


def sysbench_base(test: str, port: int, user: str, password: str, threads: int, rows: int) -> list[str]:
    return [
        "sysbench",
        test,
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={port}",
        f"--mysql-user={user}",
        f"--mysql-password={password}",
        f"--mysql-db={MY_DB}",
        "--mysql-ssl=off",
        "--tables=2",
        f"--table-size={rows}",
        f"--threads={threads}",
    ]


def run_sysbench(test: str, threads: int, setup: str, duration: int, rows: int) -> tuple[int, float, int]:
    if setup in ("dbward", "dbward-masked"):
        port, password = PORTS["dbward-my"], PASSWORD
        user = MASKED_USER if setup == "dbward-masked" else USER
    else:
        port = {"direct": MY[1], "socat": PORTS["socat"], "python-relay": PORTS["python-relay-my"]}[setup]
        user, password = "root", ""
    cmd = [
        *sysbench_base(test, port, user, password, threads, rows),
        f"--time={duration}",
        "--report-interval=0",
        "run",
    ]
    out = subprocess.run(cmd, text=True, capture_output=True)
    text = out.stdout + out.stderr
    q = re.search(r"queries:\s+(\d+)\s+\(([\d.]+) per sec", text)
    errs = re.search(r"ignored errors:\s+(\d+)", text)
    if out.returncode != 0 or not q:
        raise RuntimeError(f"sysbench through {setup} failed:\n{text[-2000:]}")
    return int(q.group(1)), float(q.group(2)), int(errs.group(1)) if errs else 0


def stream_pg(setup: str) -> float:
    port, user, env = pg_target(setup)
    sql = "SELECT id, payload FROM stream_rows"
    t0 = time.perf_counter()
    subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            PG_DB,
            "-c",
            sql,
            "-o",
            "/dev/null",
        ],
        check=True,
        env={**os.environ, **env},
        capture_output=True,
    )
    return time.perf_counter() - t0


def stream_mysql(setup: str) -> float:
    if setup in ("dbward", "dbward-masked"):
        port, password = PORTS["dbward-my"], PASSWORD
        user = MASKED_USER if setup == "dbward-masked" else USER
    else:
        port, user, password = (MY[1] if setup == "direct" else PORTS["socat"]), "root", ""
    sql = "SELECT id, payload FROM stream_rows"
    t0 = time.perf_counter()
    subprocess.run(
        [
            "mariadb",
            "--skip-ssl",
            "-h",
            "127.0.0.1",
            "-P",
            str(port),
            "-u",
            user,
            f"-p{password}" if password else "--skip-password",
            "-N",
            "-B",
            MY_DB,
            "-e",
            sql,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - t0


def idle_sessions(dbward: Proc, count: int) -> dict[str, float]:
    """RSS of dbward with ``count`` idle authenticated PostgreSQL sessions, and the connect rate."""
    import psycopg

    # Every client session holds one target session; the target's max_connections bounds how
    # many can be open (PostgreSQL's default is 100). Measure what fits and extrapolate.
    with psycopg.connect(f"host={PG[0]} port={PG[1]} user=postgres dbname=postgres") as c:
        row = c.execute("SHOW max_connections").fetchone()
        used = c.execute("SELECT count(*) FROM pg_stat_activity").fetchone()
    assert row is not None and used is not None
    requested = count
    count = max(10, min(count, int(row[0]) - int(used[0]) - 10))
    # Warm up first: the first sessions of a fresh node load code, caches and the policy, which
    # is not per-session memory. Few, so that little freed memory is left for the measured
    # sessions to reuse.
    for _ in range(5):
        with psycopg.connect(
            host="127.0.0.1", port=PORTS["dbward-pg"], user=USER, password=PASSWORD, dbname=PG_DB
        ) as c:
            c.execute("SELECT 1").fetchone()
    time.sleep(0.5)
    before = rss_kib(dbward.pid)
    conns = []
    t0 = time.perf_counter()
    for _ in range(count):
        conns.append(
            psycopg.connect(
                host="127.0.0.1", port=PORTS["dbward-pg"], user=USER, password=PASSWORD, dbname=PG_DB
            )
        )
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)
    after = rss_kib(dbward.pid)
    for c in conns:
        c.close()
    per_session_kib = (after - before) / count
    return {
        "sessions_requested": requested,
        "sessions_open": count,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_session": round(per_session_kib, 1),
        "mib_for_1000_sessions_extrapolated": round(per_session_kib * 1000 / 1024, 1),
        "connects_per_second": round(count / elapsed, 1),
    }


# --------------------------------------------------------------------------- report
def median_table(report: Report) -> str:
    cells: dict[tuple[str, str, int], dict[str, list[Sample]]] = {}
    for s in report.samples:
        cells.setdefault((s.suite, s.workload, s.clients), {}).setdefault(s.setup, []).append(s)
    lines = [
        "| suite | workload | clients | setup | tps median | min-max | ratio to direct | ratio to relay | CPU us/stmt | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (suite, workload, clients), by_setup in cells.items():
        med = {k: statistics.median(x.tps for x in v) for k, v in by_setup.items()}
        relay = "pgbouncer" if suite == "postgres" else "socat"
        for setup, samples in by_setup.items():
            cpu = [x.cpu_us_per_statement for x in samples if x.cpu_us_per_statement is not None]
            lines.append(
                f"| {suite} | {workload} | {clients} | {setup} | {med[setup]:.0f} | "
                f"{min(x.tps for x in samples):.0f}-{max(x.tps for x in samples):.0f} | "
                f"{med[setup] / med.get('direct', float('nan')):.2f} | "
                f"{(med[setup] / med[relay]) if relay in med else float('nan'):.2f} | "
                f"{statistics.median(cpu):.1f} | {sum(x.errors for x in samples)} |"
                if cpu
                else f"| {suite} | {workload} | {clients} | {setup} | {med[setup]:.0f} | "
                f"{min(x.tps for x in samples):.0f}-{max(x.tps for x in samples):.0f} | "
                f"{med[setup] / med.get('direct', float('nan')):.2f} | "
                f"{(med[setup] / med[relay]) if relay else float('nan'):.2f} | - | {sum(x.errors for x in samples)} |"
            )
    return "\n".join(lines)


def runs_by_cell(
    report: Report,
    measure: Callable[[Sample], dict[str, float] | None],
    cell: Callable[[Sample], tuple[Any, ...]],
) -> dict[tuple[Any, ...], list[dict[str, float]]]:
    """One per-run measure of the samples (those without it left out), grouped by cell."""
    cells: dict[tuple[Any, ...], list[dict[str, float]]] = {}
    for smp in report.samples:
        value = measure(smp)
        if value is not None:
            cells.setdefault(cell(smp), []).append(value)
    return cells


def parts_table(report: Report) -> str:
    """Medians of dbward's CPU per statement by part, per cell ('' when none was measured)."""
    cells = runs_by_cell(report, lambda s: s.cpu_parts_us, lambda s: (s.suite, s.workload, s.clients))
    if not cells:
        return ""
    lines = [
        "| suite | workload | clients | " + " | ".join(PARTS) + " |",
        "|---|---|---|" + "---|" * len(PARTS),
    ]
    for (suite, workload, clients), runs in cells.items():
        medians = " | ".join(f"{statistics.median(r[k] for r in runs):.1f}" for k in PARTS)
        lines.append(f"| {suite} | {workload} | {clients} | {medians} |")
    return "\n".join(lines)


def latency_table(report: Report) -> str:
    """Medians over the runs of each pgbench cell's latency tail, by setup ('' when none)."""
    cells = runs_by_cell(report, lambda s: s.latency_ms, lambda s: (s.workload, s.clients, s.setup))
    if not cells:
        return ""
    lines = [
        "| workload | clients | setup | p99 ms | p99.9 ms | max ms (median of runs) | max ms (worst run) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (workload, clients, setup), runs in cells.items():
        lines.append(
            f"| {workload} | {clients} | {setup} | {statistics.median(r['p99'] for r in runs):.2f} | "
            f"{statistics.median(r['p99.9'] for r in runs):.2f} | {statistics.median(r['max'] for r in runs):.1f} | "
            f"{max(r['max'] for r in runs):.1f} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": sh(["psql", "--version"]).stdout.strip(),
        "mariadb": sh(["mariadb", "--version"]).stdout.strip(),
    }


def markdown(report: Report) -> str:
    m = report.machine
    out = [
        f"# dbward performance ({report.started[:10]})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, Linux {m['kernel']}, Python {m['python']}; "
        f"{m['postgres']}; {m['mariadb']}. Everything (clients, relays, databases) shares these cores.",
        "",
        f"Run: `python bench/run.py {' '.join(report.args.get('argv', []))}`; each cell repeated "
        f"{report.args['repeat']} times with the setups alternating, {report.args['duration']} s per run. "
        "tps = transactions (pgbench) or queries (sysbench) per second; CPU us/stmt = the relay "
        "process's own CPU time over the run divided by the statements it carried.",
        "",
        median_table(report),
        "",
    ]
    parts = parts_table(report)
    if parts:
        out += [
            "**dbward's CPU us/stmt by part** (medians; thread by thread, so a thread that ended "
            "during a run is missing: the parts may add up to a little less than the total above)",
            "",
            parts,
            "",
        ]
    latency = latency_table(report)
    if latency:
        out += [
            "**PostgreSQL latency tail** (pgbench's per-transaction log; a pause of a relay's "
            "event loop shows here and hardly in throughput)",
            "",
            latency,
            "",
        ]
    for key, value in report.extra.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            cols = list(value[0])
            out += [f"**{key}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in value]
        else:
            out.append(f"**{key}**: `{json.dumps(value)}`")
        out.append("")
    return "\n".join(out)


@contextlib.contextmanager
def relays(work: Path, want: set[str], workers: int = 1) -> Iterator[dict[str, Proc]]:
    procs: dict[str, Proc] = {}
    try:
        if "dbward" in want:
            procs["dbward"] = start_dbward(work, workers)
        if "pgbouncer" in want:
            procs["pgbouncer"] = start_pgbouncer(work)
        if "socat" in want:
            procs["socat"] = start_socat(work)
        if "python-relay" in want:
            procs["python-relay-pg"] = start_pyrelay(work, "python-relay-pg", PG[1])
            procs["python-relay-my"] = start_pyrelay(work, "python-relay-my", MY[1])
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer cells and shorter runs, for a first look")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--suites", default="pg,mysql,stream,sessions", help="comma-separated: pg,mysql,stream,sessions"
    )
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="dbward's proxy.workers (default 1, dbward's own default; 0: one process per CPU core, "
        "which pays off only with cores to spare beside the clients and the databases)",
    )
    args = ap.parse_args()
    if args.quick:
        args.duration, args.clients = min(args.duration, 3), "1,8"
    if args.repeat < 3:
        ap.error("--repeat must be at least 3: a cell needs three runs to have a median worth reading")
    clients = [int(c) for c in args.clients.split(",")]
    suites = set(args.suites.split(","))
    report = Report(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        args={**vars(args), "out": str(args.out), "argv": sys.argv[1:]},
    )
    prepare_databases(scale=10, sb_rows=10000)
    with tempfile.TemporaryDirectory(prefix="dbward-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        with relays(work, {"dbward", "pgbouncer", "socat", "python-relay"}, args.workers) as procs:
            if "pg" in suites:
                for workload in ("select-only", "select-1"):
                    for mode in ("simple", "prepared"):
                        for c in clients:
                            for rep in range(args.repeat):
                                order = ["direct", "pgbouncer", "python-relay", "dbward"]
                                order = order[rep % 4 :] + order[: rep % 4]
                                for setup in order:
                                    relay = procs.get(RELAY_PROCS.get(setup, {}).get("postgres", setup))
                                    mark = cpu_mark(relay)
                                    try:
                                        n, tps, errs, tail = run_pgbench(
                                            workload, mode, c, setup, args.duration, work
                                        )
                                    except RuntimeError as exc:
                                        report.extra.setdefault("failed runs", []).append(str(exc)[:300])
                                        print(f"pg {workload} {mode} c={c} {setup}: FAILED", flush=True)
                                        continue
                                    cpu, parts = cpu_per_statement(relay, mark, n)
                                    report.samples.append(
                                        Sample(
                                            "postgres",
                                            f"{workload} {mode}",
                                            c,
                                            setup,
                                            rep,
                                            tps,
                                            n,
                                            args.duration,
                                            cpu,
                                            errs,
                                            parts,
                                            tail,
                                        )
                                    )
                                    print(f"pg {workload} {mode} c={c} {setup}: {tps:.0f} tps", flush=True)
            if "mysql" in suites:
                for test in ("oltp_point_select", "oltp_read_only"):
                    for c in clients:
                        for rep in range(args.repeat):
                            order = ["direct", "socat", "python-relay", "dbward"]
                            order = order[rep % 4 :] + order[: rep % 4]
                            for setup in order:
                                relay = procs.get(RELAY_PROCS.get(setup, {}).get("mariadb", setup))
                                mark = cpu_mark(relay)
                                try:
                                    n, qps, errs = run_sysbench(test, c, setup, args.duration, 10000)
                                except RuntimeError as exc:
                                    report.extra.setdefault("failed runs", []).append(str(exc)[:300])
                                    print(f"mysql {test} t={c} {setup}: FAILED", flush=True)
                                    continue
                                cpu, parts = cpu_per_statement(relay, mark, n)
                                report.samples.append(
                                    Sample(
                                        "mariadb",
                                        test,
                                        c,
                                        setup,
                                        rep,
                                        qps,
                                        n,
                                        args.duration,
                                        cpu,
                                        errs,
                                        parts,
                                    )
                                )
                                print(f"mysql {test} t={c} {setup}: {qps:.0f} qps", flush=True)
            if "stream" in suites:
                stream: dict[str, dict[str, list[float]]] = {"psql": {}, "mariadb": {}}
                dbw = procs["dbward"]
                rss: list[int] = []
                for _ in range(args.repeat):
                    for setup in ("direct", "dbward", "dbward-masked"):
                        stream["psql"].setdefault(setup, []).append(stream_pg(setup))
                        rss.append(rss_kib(dbw.pid))
                        stream["mariadb"].setdefault(setup, []).append(stream_mysql(setup))
                        rss.append(rss_kib(dbw.pid))
                summary: dict[str, Any] = {}
                for client, by_setup in stream.items():
                    med = {k: statistics.median(v) for k, v in by_setup.items()}
                    summary[client] = {
                        "seconds_median": {k: round(v, 2) for k, v in med.items()},
                        "throughput_ratio_to_direct": {
                            k: round(med["direct"] / v, 2) for k, v in med.items()
                        },
                    }
                summary["dbward_rss_mib_during_streams"] = [round(x / 1024, 1) for x in rss]
                report.extra["1M-row stream (psql, mariadb)"] = summary
            if "sessions" in suites:
                report.extra["1,000 idle sessions"] = idle_sessions(
                    procs["dbward"], 1000 if not args.quick else 200
                )
    bench_audit = subprocess.run(
        [str(BIN / "python"), str(ROOT / "bench" / "bench_audit.py"), "--events", "20000"],
        text=True,
        capture_output=True,
    )
    if bench_audit.returncode == 0:
        report.extra["audit journal (events/s, added latency)"] = json.loads(bench_audit.stdout)
    decisions = subprocess.run(
        [str(BIN / "python"), str(ROOT / "bench" / "bench_decisions.py"), "--json"],
        text=True,
        capture_output=True,
    )
    if decisions.returncode == 0:
        report.extra["decisions through the gate (us median, statements/s)"] = json.loads(decisions.stdout)
    else:
        print(f"bench_decisions.py failed: {decisions.stderr.strip()[-500:]}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = report.started.replace(":", "").replace("-", "")
    (args.out / f"{stamp}.json").write_text(json.dumps(asdict(report), indent=2))
    md = markdown(report)
    (args.out / f"{stamp}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
