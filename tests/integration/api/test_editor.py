"""The console SQL editor through the node's real proxy, against the real MariaDB and PostgreSQL.

The editor logs in to the proxy as the signed-in user with a one-login token; the audit trail
must show its statements (program dbward-console, auth method web_session), refusals must come
back with the policy's reason, and cancel must stop the statement on the target.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from dbward.api.app import create_app
from dbward.store import repo
from tests.conftest import RunningNode

RO_USER, RO_PASSWORD = "reader", "Reader-password-1"


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m
    return m.group(1)


@pytest.fixture
async def console(dbward_node: RunningNode) -> AsyncIterator[httpx.AsyncClient]:
    store = dbward_node.store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, RO_USER, password=RO_PASSWORD)
        for conn in ("maria", "pg"):
            await repo.create_grant(
                s,
                f"reader-{conn}",
                subject_type="user",
                subject_name=RO_USER,
                connection=conn,
                privileges=["read-only"],
            )
    app = create_app(dbward_node.node)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
        page = await client.get("/login")
        r = await client.post(
            "/login", data={"username": RO_USER, "password": RO_PASSWORD, "csrf_token": csrf(page.text)}
        )
        assert r.status_code == 303, r.text
        client.headers["x-csrf-token"] = csrf((await client.get("/editor")).text)
        yield client
    await app.state.editor.close_all()


async def run(client: httpx.AsyncClient, conn: str, sql: str) -> str:
    r = await client.post("/editor/run", data={"connection": conn, "sql": sql})
    assert r.status_code == 200
    return r.text


@pytest.mark.parametrize("conn", ["maria", "pg"])
async def test_query_refusal_export_and_audit(
    console: httpx.AsyncClient, dbward_node: RunningNode, conn: str
) -> None:
    html = await run(console, conn, "SELECT id, name, email FROM customers ORDER BY id")
    assert "Kim Minji" in html and "Park Ara" in html and ">NULL<" in html
    rid = re.search(r'href="/editor/export/([^"]+)"', html).group(1)  # type: ignore[union-attr]
    html = await run(console, conn, "DELETE FROM customers WHERE id = 1")
    assert "Refused or failed" in html and ("42501" in html or "1142" in html)
    assert "read-only" in html  # the policy's reason reaches the person
    csv_ = await console.get(f"/editor/export/{rid}")
    assert csv_.status_code == 200 and csv_.text.splitlines()[0] == "id,name,email"
    assert len(csv_.text.splitlines()) == 4
    schema = await console.get(f"/editor/schema?connection={conn}")
    assert "customers" in schema.text and "email" in schema.text
    j = dbward_node.journal
    starts = [e for e in j.of_type("session.start") if e["user"] == RO_USER]
    assert (
        starts
        and starts[0]["auth_method"] == "web_session"
        and starts[0]["client_program"] == "dbward-console"
    )
    decisions = [e for e in j.of_type("statement.decision") if e["user"] == RO_USER]
    deny = next(e for e in decisions if e["sql"].startswith("DELETE"))
    assert deny["effect"] == "deny" and deny["client_program"] == "dbward-console"
    export = j.of_type("data.export")[0]
    assert export["what"] == "result" and export["rows"] == 3 and export["connection"] == conn
    assert len(dbward_node.node.ephemeral) == 0  # every one-login token is gone


async def test_pages_of_a_large_result(console: httpx.AsyncClient) -> None:
    html = await run(console, "pg", "SELECT g AS n FROM generate_series(1, 250) AS g")
    assert "Page 1 of 2 or more" in html  # streamed: the total is known only at the end
    rid = re.search(r'/editor/result/([^"?]+)\?page=1', html).group(1)  # type: ignore[union-attr]
    page3 = (await console.get(f"/editor/result/{rid}?page=2")).text
    assert "Page 3 of 3" in page3 and ">250<" in page3 and ">100<" not in page3


async def on_target(conn: str, sql: str) -> bool:
    """Whether ``sql`` is running on the real target right now."""
    if conn == "pg":
        import psycopg

        from tests.conftest import pg_dsn

        async with await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True) as c:
            cur = await c.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s", (sql,))
            row = await cur.fetchone()
            return bool(row and row[0])
    from tests.conftest import mysql_root

    def _check() -> bool:
        with mysql_root() as c, c.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.processlist WHERE info = %s", (sql,))
            row = cur.fetchone()
            return bool(row and row[0])

    return await asyncio.to_thread(_check)


async def until_on_target(conn: str, sql: str) -> None:
    for _ in range(300):
        if await on_target(conn, sql):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{sql} never reached the target")


async def test_cancel_from_the_browser_stops_the_statement(console: httpx.AsyncClient) -> None:
    running = asyncio.create_task(run(console, "pg", "SELECT pg_sleep(30)"))
    await until_on_target("pg", "SELECT pg_sleep(30)")
    r = await console.post("/editor/cancel", data={"connection": "pg"})
    assert r.text == "Cancel sent."
    html = await asyncio.wait_for(running, 10)
    assert "cancel" in html.lower()
    # the connection stays usable
    assert ">1<" in await run(console, "pg", "SELECT 1 AS one")


async def test_mysql_cancel_closes_and_reopens(console: httpx.AsyncClient) -> None:
    running = asyncio.create_task(run(console, "maria", "SELECT SLEEP(30)"))
    await until_on_target("maria", "SELECT SLEEP(30)")
    assert (await console.post("/editor/cancel", data={"connection": "maria"})).text == "Cancel sent."
    html = await asyncio.wait_for(running, 10)
    assert "Refused or failed" in html
    assert ">1<" in await run(console, "maria", "SELECT 1 AS one")


async def test_unknown_connection_and_engine_message(console: httpx.AsyncClient) -> None:
    html = await run(console, "nope", "SELECT 1")
    assert "connection nope does not exist" in html


async def test_closing_the_tab_stops_the_statement_on_the_target(dbward_node: RunningNode) -> None:
    """A browser that goes away mid-statement: the editor closes its proxy session, and the proxy
    cancels the query on PostgreSQL (checked in pg_stat_activity on the target itself)."""
    import psycopg

    from dbward.api.server import ApiServer
    from tests.conftest import pg_dsn

    store = dbward_node.store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, RO_USER, password=RO_PASSWORD)
        await repo.create_grant(
            s,
            "reader-pg",
            subject_type="user",
            subject_name=RO_USER,
            connection="pg",
            privileges=["read-only"],
        )
    api = ApiServer(dbward_node.node)
    await api.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{api.port}"
    marker = "SELECT pg_sleep(31) AS tab_close_probe"

    async def running_on_target() -> bool:
        async with await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True) as c:
            cur = await c.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s", (marker,))
            row = await cur.fetchone()
            return bool(row and row[0])

    try:
        async with httpx.AsyncClient(base_url=base) as client:
            page = await client.get("/login")
            await client.post(
                "/login", data={"username": RO_USER, "password": RO_PASSWORD, "csrf_token": csrf(page.text)}
            )
            token = csrf((await client.get("/editor")).text)
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        form = str(httpx.QueryParams({"connection": "pg", "sql": marker}))
        _reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(
            (
                "POST /editor/run HTTP/1.1\r\nHost: x\r\n"
                f"Cookie: {cookie}\r\nX-CSRF-Token: {token}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(form)}\r\n\r\n{form}"
            ).encode()
        )
        await writer.drain()
        for _ in range(50):
            if await running_on_target():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the statement never reached the target")
        writer.close()  # the tab closes
        for _ in range(50):
            if not await running_on_target():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the statement still runs on the target after the browser went away")
    finally:
        await api.stop()


@pytest.mark.parametrize(
    "conn",
    [
        "maria",
        "pg",
    ],
)
async def test_masking_rules_reach_the_editor(
    console: httpx.AsyncClient, dbward_node: RunningNode, conn: str
) -> None:
    """A masking rule made through the API's path masks the editor's results (same proxy path)."""
    from dbward.declarative.sections import SECTIONS, Context

    if "masking_rules" not in SECTIONS:
        pytest.skip("masking rules are not part of this build yet")
    store = dbward_node.store
    rule = SECTIONS["masking_rules"].item.model_validate(
        {"name": "emails", "connection": conn, "table": "customers", "column": "email", "pattern": "email"}
    )
    async with store.transaction() as s:
        await SECTIONS["masking_rules"].create(Context(session=s, box=store.box), rule, None)
        await repo.bump_policy_version(s)
    html = await run(console, conn, "SELECT id, email FROM customers ORDER BY id")
    decision = [
        e
        for e in dbward_node.journal.of_type("statement.decision")
        if e["user"] == RO_USER and e["sql"].startswith("SELECT id, email")  # not the cursor's BEGIN/COMMIT
    ][-1]
    assert "masking:emails" in decision["rule_ids"], decision
    # never the clear value: either masked (and audited as such), or refused (fail closed)
    assert "minji@example.com" not in html, html
    if "Refused or failed" in html:
        assert "fails closed" in html
    else:
        masked = [e for e in dbward_node.journal.of_type("statement.masked") if e["user"] == RO_USER]
        assert masked and masked[0]["columns"][0]["column"] == "email"


async def test_api_lists_and_kills_the_editors_live_session(
    console: httpx.AsyncClient, dbward_node: RunningNode
) -> None:
    from tests.integration.api.conftest import make_token

    store = dbward_node.store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "root", password="Root-password-123", is_admin=True)
    token = await make_token(store, "ops", "root", ["sessions:write"])
    await run(console, "pg", "SELECT 1 AS one")
    h = {"authorization": f"Bearer {token}"}
    live = (await console.get("/api/v1/sessions?user=reader", headers=h)).json()
    assert len(live) == 1 and live[0]["client_program"] == "dbward-console" and live[0]["connection"] == "pg"
    assert (await console.delete(f"/api/v1/sessions/{live[0]['id']}", headers=h)).status_code == 204
    for _ in range(50):
        if not (await console.get("/api/v1/sessions", headers=h)).json():
            break
        await asyncio.sleep(0.1)
    ends = [e for e in dbward_node.journal.of_type("session.end") if e["user"] == RO_USER]
    assert ends and "killed by administrator root" in ends[-1]["reason"]
    kill = [e for e in dbward_node.journal.of_type("admin.change") if e["object_type"] == "session"]
    assert kill and kill[0]["user"] == "root" and kill[0]["source"] == "api"
    # the editor notices and opens a new session for the next statement
    assert ">1<" in await run(console, "pg", "SELECT 1 AS one")
