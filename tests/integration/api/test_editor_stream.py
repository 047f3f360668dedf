"""The SQL editor carries the browser's address to the proxy (PROXY v2 from its own socket only)
and streams large results page by page, with a streamed CSV export; real node, MariaDB, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import AsyncIterator

import httpx
import pytest

from dbward.api.app import create_app
from dbward.store import repo
from dbward.web.editor import PAGE_SIZE, EditorManager
from dbward.wire import proxy_protocol
from tests.conftest import RunningNode

USER, PASSWORD = "walt", "Walt-password-12"
BROWSER = "203.0.113.9"
BIG = {
    "pg": "SELECT g AS n, repeat('x', 50) AS pad FROM generate_series(1, 30000) AS g",
    "maria": "SELECT seq AS n, REPEAT('x', 50) AS pad FROM seq_1_to_30000",  # MariaDB's SEQUENCE engine
}


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m
    return m.group(1)


@contextlib.asynccontextmanager
async def signed_in(app: object, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 41000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        page = await client.get("/login")
        r = await client.post(
            "/login", data={"username": USER, "password": PASSWORD, "csrf_token": csrf(page.text)}
        )
        assert r.status_code == 303, r.text
        client.headers["x-csrf-token"] = csrf((await client.get("/editor")).text)
        yield client


@pytest.fixture
async def app(dbward_node: RunningNode) -> AsyncIterator[object]:
    store = dbward_node.store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, USER, password=PASSWORD)
        for conn in ("maria", "pg"):
            await repo.create_grant(
                s,
                f"walt-{conn}",
                subject_type="user",
                subject_name=USER,
                connection=conn,
                privileges=["read-only"],
                conditions={"client_ips": ["203.0.113.0/24"]},
            )
    app = create_app(dbward_node.node)
    yield app
    await app.state.editor.close_all()


async def run(client: httpx.AsyncClient, conn: str, sql: str) -> str:
    r = await client.post("/editor/run", data={"connection": conn, "sql": sql})
    assert r.status_code == 200
    return r.text


@pytest.mark.parametrize("conn", ["pg", "maria"])
async def test_editor_statements_carry_the_browsers_address(
    app: object, dbward_node: RunningNode, conn: str
) -> None:
    async with signed_in(app, BROWSER) as browser:
        assert ">1<" in await run(browser, conn, "SELECT 1 AS one")
    j = dbward_node.journal
    start = next(e for e in j.of_type("session.start") if e["user"] == USER)
    assert start["client_addr"] == BROWSER and start["client_addr_source"] == "web"
    decision = next(e for e in j.of_type("statement.decision") if e["user"] == USER)
    assert decision["client_addr"] == BROWSER and decision["effect"] == "allow"


@pytest.mark.parametrize("conn", ["pg", "maria"])
async def test_a_grant_for_another_address_range_refuses_the_editor(
    app: object, dbward_node: RunningNode, conn: str
) -> None:
    # the console itself is open to 198.51.100.20, but walt's grants only cover 203.0.113.0/24
    async with signed_in(app, "198.51.100.20") as browser:
        html = await run(browser, conn, "SELECT 1 AS one")
    assert "Refused or failed" in html and ">1<" not in html
    rejected = [e for e in dbward_node.journal.of_type("session.rejected") if e["user"] == USER]
    assert rejected and rejected[0]["client_addr"] == "198.51.100.20"
    assert not [e for e in dbward_node.journal.of_type("session.start") if e["user"] == USER]


async def test_an_outside_local_program_cannot_claim_an_address(dbward_node: RunningNode) -> None:
    """The editor's trust is not a loopback exemption: a PROXY header from any other local socket
    is not believed (no trusted_proxies), so the session never starts under the claimed address."""
    port = await dbward_node.listen("pg")
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    startup = struct.pack("!ii", 196608, 0)  # a StartupMessage header as psql would follow with
    await loop.sock_sendall(sock, proxy_protocol.build_v2((BROWSER, 1234), ("127.0.0.1", port)) + startup)
    try:
        async with asyncio.timeout(10):
            while await loop.sock_recv(sock, 4096):
                pass
    except (ConnectionError, TimeoutError):
        pass
    finally:
        sock.close()
    claimed = [e for e in dbward_node.journal.records if e.get("client_addr") == BROWSER]
    assert claimed == []
    assert len(dbward_node.node.proxy.local_dialers) == 0


@pytest.mark.parametrize("conn", ["pg", "maria"])
async def test_large_results_stream_by_page_and_export_streams(
    app: object, dbward_node: RunningNode, conn: str
) -> None:
    editor: EditorManager = app.state.editor  # type: ignore[attr-defined]
    async with signed_in(app, BROWSER) as browser:
        html = await run(browser, conn, BIG[conn])
        assert "rows read so far" in html and "Page 1 of 2 or more" in html and ">100<" in html
        rid = re.search(r'id="result-([^"]+)"', html).group(1)  # type: ignore[union-attr]
        ((_, res),) = [(o, r) for o, r in editor.results.values() if r.id == rid]
        assert len(res.rows) == PAGE_SIZE + 1  # one row ahead, not the whole result
        page = (await browser.get(f"/editor/result/{rid}?page=4")).text
        assert ">500<" in page and "Page 5 of 6 or more" in page
        assert len(res.rows) == 5 * PAGE_SIZE + 1 and res.source is not None
        # the export reads on from the cursor up to the export limit (default 10,000 rows)
        async with browser.stream("GET", f"/editor/export/{rid}") as r:
            assert r.status_code == 200
            lines = [line async for line in r.aiter_lines() if line]
        assert lines[0] == "n,pad" and len(lines) == 10_001 and lines[-1].startswith("10000,")
        assert len(res.rows) <= dbward_node.node.settings.api.editor_max_rows
        # the connection is usable afterwards
        assert ">7<" in await run(browser, conn, "SELECT 7 AS seven")
    export = [e for e in dbward_node.journal.of_type("data.export") if e["user"] == USER]
    assert export and export[0]["rows"] == 10_000 and export[0]["filters"]["streamed"] is True


async def test_a_new_statement_closes_the_open_cursor(app: object, dbward_node: RunningNode) -> None:
    async with signed_in(app, BROWSER) as browser:
        html = await run(browser, "pg", BIG["pg"])
        rid = re.search(r'id="result-([^"]+)"', html).group(1)  # type: ignore[union-attr]
        assert ">3<" in await run(browser, "pg", "SELECT 3 AS three")
        # the first result keeps what was read; its cursor is closed (and its transaction ended)
        page = (await browser.get(f"/editor/result/{rid}?page=3")).text
        assert "Page 2 of 2" in page and ">101<" in page and "only the first 101 rows are kept" in page
        assert ">4<" in await run(browser, "pg", "SELECT 4 AS four")
    sqls = [e["sql"] for e in dbward_node.journal.of_type("statement.decision") if e["user"] == USER]
    assert "COMMIT;" in sqls or "COMMIT" in sqls
