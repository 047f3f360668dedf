"""Shared fixtures: real MariaDB and PostgreSQL, a real store, a real dbward node.

Nothing here mocks a database or a wire protocol. Addresses come from the environment with
the usual local defaults (DBWARD_TEST_MYSQL_HOST/PORT, DBWARD_TEST_PG_HOST/PORT).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import pytest
from argon2 import PasswordHasher

from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.domain import Target
from dbward.identity import secrets as _secrets
from dbward.node import Node
from dbward.store import migrate, repo
from dbward.store.crypto import SecretBox, generate_key
from dbward.store.db import Store
from dbward.store.directory import target_from_row

# Password hashes: production hashes with argon2id at argon2-cffi's default cost (RFC 9106's
# low-memory profile, about 130 ms a hash on a two-core machine), and so do the end-to-end
# tests, which run real `dbward` processes. The tests in this process create and sign in
# hundreds of users, which at that cost took about a minute of the suite; here they use
# argon2id with the lowest cost it allows. Each hash names its own parameters, so hashing and
# verifying run the same code either way.
_secrets._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

MYSQL_HOST = os.environ.get("DBWARD_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("DBWARD_TEST_MYSQL_PORT", "3306"))
PG_HOST = os.environ.get("DBWARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DBWARD_TEST_PG_PORT", "5432"))

#: the account dbward uses upstream on the test MariaDB (created by the session fixture)
MYSQL_UPSTREAM_USER = "dbward_upstream"
MYSQL_UPSTREAM_PASSWORD = "upstream-secret-1"
#: the account dbward uses upstream on the test PostgreSQL (trust auth on 127.0.0.1)
PG_UPSTREAM_USER = "dbward_upstream"
PG_UPSTREAM_PASSWORD = "upstream-secret-1"

#: the dbward user tests log in as
USER = "alice"
PASSWORD = "alice-password-1"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def pg_dsn(dbname: str = "postgres", user: str = "postgres") -> str:
    return f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{dbname}"


def mysql_root() -> pymysql.connections.Connection:
    return pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", ssl_disabled=True, autocommit=True
    )


@pytest.fixture(scope="session")
def mysql_upstream() -> Iterator[None]:
    """A dedicated upstream account on MariaDB, and a `dbward_test` database with sample data."""
    if not _port_open(MYSQL_HOST, MYSQL_PORT):
        pytest.fail(f"MariaDB is not answering on {MYSQL_HOST}:{MYSQL_PORT}; run `make services`")
    conn = mysql_root()
    with conn.cursor() as cur:
        # mariadb-install-db's anonymous accounts shadow user@% for logins from 127.0.0.1.
        cur.execute("SELECT user, host FROM mysql.user WHERE user = ''")
        for _, host in cur.fetchall():
            cur.execute(f"DROP USER ''@'{host}'")
        cur.execute(
            f"CREATE USER IF NOT EXISTS '{MYSQL_UPSTREAM_USER}'@'%' IDENTIFIED BY '{MYSQL_UPSTREAM_PASSWORD}'"
        )
        cur.execute(f"ALTER USER '{MYSQL_UPSTREAM_USER}'@'%' IDENTIFIED BY '{MYSQL_UPSTREAM_PASSWORD}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{MYSQL_UPSTREAM_USER}'@'%' WITH GRANT OPTION")
        cur.execute("CREATE DATABASE IF NOT EXISTS dbward_test")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS dbward_test.customers ("
            " id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200), phone VARCHAR(30),"
            " balance DECIMAL(12,2), created DATETIME)"
        )
    conn.close()
    reset_mysql_customers()
    yield


def reset_mysql_customers() -> None:
    """The sample rows of dbward_test.customers on MariaDB, as every test expects them."""
    conn = mysql_root()
    with conn.cursor() as cur:
        cur.execute("DELETE FROM dbward_test.customers")
        cur.execute(
            "INSERT INTO dbward_test.customers VALUES"
            " (1,'Kim Minji','minji@example.com','010-1234-5678',1200.50,'2024-01-02 03:04:05'),"
            " (2,'Lee Jun','jun@example.com','010-2222-3333',-5.00,'2024-02-03 04:05:06'),"
            " (3,'Park Ara',NULL,NULL,0.00,NULL)"
        )
    conn.close()


@pytest.fixture(scope="session")
def pg_upstream() -> Iterator[None]:
    """A dedicated upstream role on PostgreSQL and a `dbward_test` database with sample data."""
    import psycopg

    if not _port_open(PG_HOST, PG_PORT):
        pytest.fail(f"PostgreSQL is not answering on {PG_HOST}:{PG_PORT}; run `make services`")
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PG_UPSTREAM_USER,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {PG_UPSTREAM_USER} LOGIN SUPERUSER PASSWORD '{PG_UPSTREAM_PASSWORD}'")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'dbward_test'").fetchone():
            conn.execute(f"CREATE DATABASE dbward_test OWNER {PG_UPSTREAM_USER}")
    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS customers (id int PRIMARY KEY, name text, email text, phone text,"
            " balance numeric(12,2), created timestamptz)"
        )
        conn.execute("ALTER TABLE customers OWNER TO " + PG_UPSTREAM_USER)
    reset_pg_customers()
    yield


def reset_pg_customers() -> None:
    """The sample rows of dbward_test.customers on PostgreSQL, as every test expects them."""
    import psycopg

    with psycopg.connect(pg_dsn("dbward_test"), autocommit=True) as conn:
        conn.execute("DELETE FROM customers")
        conn.execute(
            "INSERT INTO customers VALUES"
            " (1,'Kim Minji','minji@example.com','010-1234-5678',1200.50,'2024-01-02 03:04:05+00'),"
            " (2,'Lee Jun','jun@example.com','010-2222-3333',-5.00,'2024-02-03 04:05:06+00'),"
            " (3,'Park Ara',NULL,NULL,0.00,NULL)"
        )


@pytest.fixture
def restore_customers(mysql_upstream: None, pg_upstream: None) -> Iterator[None]:
    """For tests that change the sample rows for real (approved statements): put them back."""
    yield
    reset_mysql_customers()
    reset_pg_customers()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(generate_key())


@pytest.fixture
async def sqlite_store(tmp_path: Path, box: SecretBox) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, box)
    yield store
    await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, box: SecretBox) -> AsyncIterator[Store]:
    """The metadata store on both supported backends (a fresh database each time)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
        await migrate.upgrade(url)
        store = Store.open(url, box)
        yield store
        await store.close()
        return
    import psycopg

    dbname = f"dbward_store_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{dbname}"
    try:
        await migrate.upgrade(url)
        store = Store.open(url, box)
        yield store
        await store.close()
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


@dataclass
class RunningNode:
    """A real dbward node on an ephemeral port, with the audit journal kept in memory."""

    node: Node
    journal: MemoryJournal
    store: Store
    targets: dict[str, Target] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    async def listen(self, connection: str) -> int:
        if connection not in self.ports:
            lst = await self.node.listen_for(self.targets[connection], port=0)
            self.ports[connection] = lst.bound_port
        return self.ports[connection]

    def statements(self) -> list[str]:
        """Every SQL text the gate decided, in order."""
        return [e["sql"] for e in self.journal.of_type("statement.decision")]


@pytest.fixture
async def dbward_node(
    tmp_path: Path, sqlite_store: Store, mysql_upstream: None, pg_upstream: None
) -> AsyncIterator[RunningNode]:
    """A dbward node with user alice, two connections and grants, deciding with the real policy.

    Connections: ``maria`` (MariaDB, database dbward_test) and ``pg`` (PostgreSQL, dbward_test),
    both granted to alice with the ``admin`` privilege type (every statement kind the analyser
    recognises; unknown statements are still refused). Also user ``bob`` with a password and
    no grant at all. Policy tests add narrower grants of their own.
    """
    store = sqlite_store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, USER, password=PASSWORD)
        await repo.create_user(s, store.box, "bob", password="bob-password-1")
        maria = await repo.create_connection(
            s,
            store.box,
            "maria",
            engine="mysql",
            host=MYSQL_HOST,
            port=MYSQL_PORT,
            username=MYSQL_UPSTREAM_USER,
            password=MYSQL_UPSTREAM_PASSWORD,
            database="dbward_test",
            tls_mode="disable",
        )
        pg = await repo.create_connection(
            s,
            store.box,
            "pg",
            engine="postgres",
            host=PG_HOST,
            port=PG_PORT,
            username=PG_UPSTREAM_USER,
            password=PG_UPSTREAM_PASSWORD,
            database="dbward_test",
            tls_mode="disable",
        )
        await repo.create_grant(
            s,
            "alice-maria",
            subject_type="user",
            subject_name=USER,
            connection="maria",
            privileges=["admin"],
        )
        await repo.create_grant(
            s, "alice-pg", subject_type="user", subject_name=USER, connection="pg", privileges=["admin"]
        )
        targets = {"maria": target_from_row(maria), "pg": target_from_row(pg)}
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    journal = MemoryJournal()
    node = Node(settings=settings, store=store, journal=journal, name="test-node")
    running = RunningNode(node=node, journal=journal, store=store, targets=targets)
    yield running
    await node.proxy.drain(timeout=5)
    await asyncio.sleep(0)
