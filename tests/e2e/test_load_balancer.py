"""Behind a TCP load balancer: the PROXY protocol header gives the real client address, only
from configured trusted ranges, and the audit trail says how the address was learned."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pymysql
import pytest

from dbward.audit.journal import MemoryJournal
from dbward.config import ProxySettings, Settings
from dbward.node import Node
from dbward.wire.proxy_protocol import build_v1, build_v2
from tests.conftest import PASSWORD, USER, RunningNode


@contextlib.asynccontextmanager
async def balancer(target_port: int, header: bytes | None) -> AsyncIterator[int]:
    """A stand-in for an AWS NLB: accepts, sends ``header`` upstream first, then relays."""

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
        if header is not None:
            uw.write(header)
        await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@pytest.fixture
async def trusting_node(dbward_node: RunningNode, tmp_path: object) -> AsyncIterator[RunningNode]:
    """The same store, but a node that trusts PROXY headers from 127.0.0.1."""
    settings = Settings(
        data_dir=dbward_node.node.settings.data_dir, proxy=ProxySettings(trusted_proxies=["127.0.0.0/8"])
    )
    journal = MemoryJournal()
    node = Node(settings=settings, store=dbward_node.store, journal=journal, name="lb-node")
    running = RunningNode(node=node, journal=journal, store=dbward_node.store, targets=dbward_node.targets)
    yield running
    await node.proxy.drain(timeout=5)


async def test_postgres_client_address_from_proxy_v2(trusting_node: RunningNode) -> None:
    port = await trusting_node.listen("pg")
    header = build_v2(("203.0.113.7", 51000), ("10.0.0.5", port))
    async with balancer(port, header) as lb:

        def go() -> tuple[object, ...] | None:
            dsn = (
                f"host=127.0.0.1 port={lb} user={USER} password={PASSWORD} dbname=dbward_test sslmode=disable"
            )
            with psycopg.connect(dsn) as c:
                return c.execute("SELECT 1").fetchone()

        assert await asyncio.to_thread(go) == (1,)
    start = trusting_node.journal.of_type("session.start")[-1]
    assert (start["client_addr"], start["client_addr_source"]) == ("203.0.113.7", "proxy-v2")
    decision = trusting_node.journal.of_type("statement.decision")[-1]
    assert decision["client_addr"] == "203.0.113.7"


async def test_mysql_client_address_from_proxy_v1(trusting_node: RunningNode) -> None:
    port = await trusting_node.listen("maria")
    header = build_v1(("198.51.100.9", 40001), ("10.0.0.5", port))
    async with balancer(port, header) as lb:

        def go() -> tuple[object, ...] | None:
            with (
                pymysql.connect(
                    host="127.0.0.1",
                    port=lb,
                    user=USER,
                    password=PASSWORD,
                    database="dbward_test",
                    ssl_disabled=True,
                ) as c,
                c.cursor() as cur,
            ):
                cur.execute("SELECT 1")
                return cur.fetchone()

        assert await asyncio.to_thread(go) == (1,)
    start = trusting_node.journal.of_type("session.start")[-1]
    assert (start["client_addr"], start["client_addr_source"]) == ("198.51.100.9", "proxy-v1")


async def test_a_header_from_an_untrusted_peer_is_not_believed(dbward_node: RunningNode) -> None:
    """dbward_node trusts no balancer: a PROXY header is garbage there and ends the session."""
    port = await dbward_node.listen("pg")
    header = build_v2(("203.0.113.7", 51000), ("10.0.0.5", port))
    async with balancer(port, header) as lb:

        def go() -> None:
            dsn = (
                f"host=127.0.0.1 port={lb} user={USER} password={PASSWORD} dbname=dbward_test sslmode=disable"
            )
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(dsn, connect_timeout=5)

        await asyncio.to_thread(go)
    assert not [e for e in dbward_node.journal.of_type("session.start") if e["client_addr"] == "203.0.113.7"]


async def test_a_trusted_balancer_must_send_the_header(trusting_node: RunningNode) -> None:
    port = await trusting_node.listen("pg")
    async with balancer(port, None) as lb:

        def go() -> None:
            dsn = (
                f"host=127.0.0.1 port={lb} user={USER} password={PASSWORD} dbname=dbward_test sslmode=disable"
            )
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(dsn, connect_timeout=10)

        await asyncio.to_thread(go)
    assert not trusting_node.journal.of_type("session.start")
