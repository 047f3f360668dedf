"""The target catalog provider (``proxy/catalog.py``) against the real PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from dbward.config import Settings
from dbward.domain import ClientAddress, EngineType, Principal, SessionInfo, Statement, Target, TlsMode
from dbward.policy.evaluator import PolicyEvaluator, StaticPolicySetProvider
from dbward.policy.model import Grant, PolicySet, Subject, SubjectType
from dbward.proxy.catalog import CatalogUnavailable, TargetCatalog, TargetCatalogs
from tests.conftest import (
    MYSQL_HOST,
    MYSQL_PORT,
    MYSQL_UPSTREAM_PASSWORD,
    MYSQL_UPSTREAM_USER,
    PG_HOST,
    PG_PORT,
    PG_UPSTREAM_PASSWORD,
    PG_UPSTREAM_USER,
    mysql_root,
    pg_dsn,
)

DB = "dbward_catalog_test"


class Directory:
    def __init__(self, password: str | None) -> None:
        self.password = password

    async def by_listen_port(self, port: int) -> Target | None:
        return None

    async def by_name(self, name: str) -> Target | None:
        return None

    async def upstream_password(self, target: Target) -> str | None:
        return self.password


def _target(engine: str, *, port: int | None = None, id_: int = 1) -> Target:
    pg = engine == "postgres"
    return Target(
        id=id_,
        name=f"cat-{engine}",
        engine=EngineType(engine),
        host=PG_HOST if pg else MYSQL_HOST,
        port=port or (PG_PORT if pg else MYSQL_PORT),
        username=PG_UPSTREAM_USER if pg else MYSQL_UPSTREAM_USER,
        tls_mode=TlsMode.DISABLE,
        database=DB if pg else None,
    )


def _session(target: Target, database: str | None = DB) -> SessionInfo:
    return SessionInfo(
        principal=Principal(username="alice", user_id=1),
        target=target,
        client=ClientAddress(host="127.0.0.1", port=5),
        database=database,
    )


@pytest.fixture
def pg_db(pg_upstream: None) -> Iterator[None]:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB} OWNER {PG_UPSTREAM_USER}")
    with psycopg.connect(pg_dsn(DB), autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA crm; CREATE TABLE crm.people (id int, phone text, dropped int, email text);"
            "ALTER TABLE crm.people DROP COLUMN dropped;"
            "SET search_path = crm; CREATE VIEW crm.v AS SELECT id, phone FROM people;"
        )
    yield
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture
async def catalogs() -> AsyncIterator[TargetCatalogs]:
    c = TargetCatalogs(Directory(PG_UPSTREAM_PASSWORD), Settings())
    yield c
    await c.close()


async def test_postgres_catalog(pg_db: None, catalogs: TargetCatalogs) -> None:
    session = _session(_target("postgres"))
    cat = await catalogs.catalog(session)
    assert isinstance(cat, TargetCatalog)
    assert cat.database == DB
    assert cat.tables[("crm", "people")] == ("id", "phone", "email")  # the dropped column is gone
    assert cat.tables[("crm", "v")] == ("id", "phone")
    # names in view definitions come qualified (read under an empty search_path)
    assert "crm.people" in cat.views[("crm", "v")]
    # system catalogs, so GUI metadata queries resolve
    assert ("pg_catalog", "pg_class") in cat.tables and ("information_schema", "columns") in cat.tables
    with psycopg.connect(pg_dsn(DB)) as conn:
        row = conn.execute("SELECT 'crm.people'::regclass::oid").fetchone()
    assert row is not None
    assert cat.origin(int(row[0]), 4) == ("crm", "people", "email")  # attnum 4: after the dropped one
    assert cat.origin(int(row[0]), 3) is None
    # the same content gives the same version; nothing is read again until asked
    assert await catalogs.catalog(session) is cat and catalogs.loads == 1
    assert catalogs.watching(session) is cat
    assert catalogs.watching(_session(_target("postgres"), DB)) is None  # another session: no rule asked
    # a schema change and an invalidation (as after DDL through dbward): a new version
    with psycopg.connect(pg_dsn(DB), autocommit=True) as conn:
        conn.execute("ALTER TABLE crm.people RENAME TO contacts")
    catalogs.invalidate(session.target, DB)
    cat2 = await catalogs.catalog(session)
    assert cat2.version != cat.version and ("crm", "contacts") in cat2.tables
    catalogs.invalidate(session.target, DB)
    assert (await catalogs.catalog(session)).version == cat2.version  # same content, same version


async def test_catalog_nowait_answers_only_from_a_fresh_catalog(
    pg_db: None, catalogs: TargetCatalogs
) -> None:
    """The gate's synchronous path reads the catalog only when no target read is due."""
    session = _session(_target("postgres"))
    assert catalogs.catalog_nowait(session) is None and catalogs.loads == 0  # never read: wait for it
    cat = await catalogs.catalog(session)
    assert catalogs.catalog_nowait(session) is cat and catalogs.loads == 1
    other = _session(_target("postgres"), DB)
    assert catalogs.catalog_nowait(other) is cat
    assert catalogs.watching(other) is cat  # a session answered synchronously is watched too
    catalogs.invalidate(session.target, DB)  # DDL ran: the next decision must re-read it
    assert catalogs.catalog_nowait(session) is None
    assert (await catalogs.catalog(session)).version == cat.version and catalogs.loads == 2


async def test_suspect_is_rate_limited(pg_db: None, catalogs: TargetCatalogs) -> None:
    session = _session(_target("postgres"))
    await catalogs.catalog(session)
    assert catalogs.suspect(session, "an unknown table") is True
    await catalogs.catalog(session)
    assert catalogs.loads == 2
    # right after a re-read, another suspicion waits for the end of the interval
    assert catalogs.suspect(session, "another unknown table") is False
    await catalogs.catalog(session)
    assert catalogs.loads == 2


@pytest.fixture
def maria_db(mysql_upstream: None) -> Iterator[None]:
    conn = mysql_root()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"CREATE TABLE {DB}.people (id INT, phone VARCHAR(20), email VARCHAR(80))")
        cur.execute(f"CREATE VIEW {DB}.v AS SELECT id, phone FROM {DB}.people")
    yield
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
    conn.close()


async def test_mysql_catalog(maria_db: None) -> None:
    catalogs = TargetCatalogs(Directory(MYSQL_UPSTREAM_PASSWORD), Settings())
    try:
        session = _session(_target("mysql", id_=2), database=None)
        cat = await catalogs.catalog(session)
        assert cat.tables[(DB, "people")] == ("id", "phone", "email")
        assert cat.tables[(DB, "v")] == ("id", "phone")
        assert "people" in cat.views[(DB, "v")]
        assert not any(s in ("mysql", "performance_schema", "sys") for s, _ in cat.tables)
        assert (("dbward_test", "customers")) in cat.tables
        # one catalog for every database of the target
        assert await catalogs.catalog(_session(session.target, database="dbward_test")) is cat
    finally:
        await catalogs.close()


async def test_unreadable_catalog_denies_with_a_clear_sentence(pg_db: None) -> None:
    catalogs = TargetCatalogs(Directory("wrong"), Settings())
    # nothing listens on port 1: the catalog cannot be read
    target = _target("postgres", port=1)
    session = _session(target)
    with pytest.raises(CatalogUnavailable) as err:
        await catalogs.catalog(session)
    assert "the catalog of connection cat-postgres could not be read" in err.value.message
    policy = PolicySet(
        grants=(
            Grant(
                name="g",
                subject=Subject(type=SubjectType.USER, name="alice"),
                connection="*",
                privileges=("read-only",),
            ),
        ),
        masking_rules=({"name": "p", "column": "phone", "pattern": "phone"},),  # type: ignore[arg-type]
    )
    evaluator = PolicyEvaluator(StaticPolicySetProvider(policy), catalog=catalogs)
    d = await evaluator.decide_statement(session, Statement(sql="SELECT phone FROM crm.people", database=DB))
    assert not d.allowed
    assert "could not be read" in d.message and "cannot tell which result columns to mask" in d.message
    await catalogs.close()
