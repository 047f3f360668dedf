"""The console's approval screens (``web/approvals.py``) on a real node, store and proxy.

Pages render for the right people, every form needs the session's CSRF token, approvers
approve and reject with comments along a two-stage line, the requester cannot approve their
own request (and is told why), administrators manage approval lines, and the link in a proxy
refusal opens a prefilled "New request" page whose request, once approved, lets exactly that
statement through once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from urllib.parse import urlencode, urlsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from dbward.api.app import create_app
from dbward.store import repo
from tests.conftest import RunningNode, pg_dsn

# these tests change the sample rows for real: put them back after each
pytestmark = pytest.mark.usefixtures("restore_customers")

BASE = "http://console"
PASSWORDS = {
    "root": "Root-password-12!",
    "carol": "Carol-password-12!",
    "dave": "Dave-password-12!",
    "erin": "Erin-password-12!",
}
UPDATE = "UPDATE customers SET balance = 555.00 WHERE id = 2"


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def text(html: str) -> str:
    """The page's visible text, tags dropped and whitespace folded, for phrase checks."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@dataclass
class Person:
    name: str
    c: httpx.AsyncClient

    async def page(self, path: str) -> httpx.Response:
        return await self.c.get(path)

    async def submit(self, path: str, page: str, data: dict[str, str | list[str]]) -> httpx.Response:
        """Post a form the way the browser does: with the CSRF token of the page it is on."""
        html = (await self.c.get(page)).text
        return await self.c.post(path, data={**data, "csrf_token": csrf(html)})


@dataclass
class World:
    node: RunningNode
    app: FastAPI
    people: dict[str, Person]

    def __getitem__(self, who: str) -> Person:
        return self.people[who]


@pytest.fixture
async def world(dbward_node: RunningNode) -> AsyncIterator[World]:
    store = dbward_node.store
    async with store.transaction() as s:
        for name, pw in PASSWORDS.items():
            await repo.create_user(s, store.box, name, password=pw, is_admin=name == "root")
        await repo.create_grant(
            s,
            "carol-pg",
            subject_type="user",
            subject_name="carol",
            connection="pg",
            privileges=["read-only"],
        )
        await repo.create_group(s, "dba")
        await repo.set_group_members(s, "dba", ["erin"])
    settings = dbward_node.node.settings
    settings.api.totp_required = "off"  # sign-in itself is tested in test_console_signin.py
    settings.api.public_url = BASE  # the address the proxy's refusals link to
    app = create_app(dbward_node.node)
    clients: list[httpx.AsyncClient] = []
    people: dict[str, Person] = {}
    for name, pw in PASSWORDS.items():
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 41000 + len(clients))), base_url=BASE
        )
        clients.append(c)
        page = await c.get("/login")
        r = await c.post("/login", data={"username": name, "password": pw, "csrf_token": csrf(page.text)})
        assert r.status_code == 303, r.text
        people[name] = Person(name, c)
    try:
        yield World(dbward_node, app, people)
    finally:
        for c in clients:
            await c.aclose()
        await app.state.editor.close_all()


TWO_STAGES: dict[str, str | list[str]] = {
    "original": "",
    "name": "writes",
    "priority": "10",
    "description": "data changes need a team lead and a DBA",
    "enabled": "on",
    "connections": "pg, maria",
    "request_types": ["sql"],
    "statement_kinds": ["UPDATE", "DELETE"],
    "ledger": "",
    "stage1_name": "team lead",
    "stage1_mode": "any",
    "stage1_approvers": "user:dave",
    "stage2_name": "dba",
    "stage2_mode": "any",
    "stage2_approvers": "group:dba",
}


async def add_line(w: World, form: dict[str, str | list[str]] = TWO_STAGES) -> None:
    r = await w["root"].submit("/admin/approval-lines", "/admin/approval-lines", form)
    assert r.status_code == 303, text(r.text)


async def file_sql(w: World, sql: str = UPDATE, **extra: str) -> int:
    form: dict[str, str | list[str]] = {
        "type": "sql",
        "connection": "pg",
        "database": "dbward_test",
        "sql": sql,
        "reason": "ticket 42: fix a balance",
        "uses": "1",
        **extra,
    }
    r = await w["carol"].submit("/console/requests/new", "/console/requests/new", form)
    assert r.status_code == 303, text(r.text)
    m = re.match(r"/console/requests/(\d+)\?ok=", r.headers["location"])
    assert m, r.headers["location"]
    return int(m.group(1))


async def balance() -> object:
    async with await psycopg.AsyncConnection.connect(pg_dsn("dbward_test")) as c:
        cur = await c.execute("SELECT balance FROM customers WHERE id = 2")
        row = await cur.fetchone()
        assert row is not None
        return row[0]


async def proxy_run(w: World, sql: str) -> str | None:
    """Run ``sql`` through the node's proxy as carol; the error message, or None on success."""
    port = await w.node.listen("pg")
    async with await psycopg.AsyncConnection.connect(
        host="127.0.0.1",
        port=port,
        user="carol",
        password=PASSWORDS["carol"],
        dbname="dbward_test",
        sslmode="disable",
        autocommit=True,
    ) as c:
        try:
            await c.execute(sql)
        except psycopg.Error as exc:
            return str(exc)
    return None


async def test_pages_render_for_the_right_people(world: World) -> None:
    carol, root = world["carol"], world["root"]
    for path in ("/console/requests/new", "/console/requests", "/console/approvals"):
        r = await carol.page(path)
        assert r.status_code == 200, (path, r.text)
        assert 'href="/console/requests"' in r.text and 'href="/console/approvals"' in r.text  # navigation
    assert "Nothing waits for you." in text((await carol.page("/console/approvals")).text)
    for t in ("sql", "access", "unmask", "export"):
        page = await carol.page(f"/console/requests/new?type={t}")
        assert f'name="type" value="{t}"' in page.text
    assert 'name="privileges"' in (await carol.page("/console/requests/new?type=access")).text
    assert 'name="columns"' in (await carol.page("/console/requests/new?type=unmask")).text
    assert 'name="max_rows"' in (await carol.page("/console/requests/new?type=export")).text
    # approval lines: administrators only, and only they get the navigation link
    r = await carol.page("/admin/approval-lines")
    assert r.status_code == 403 and "for administrators" in r.text
    assert "/admin/approval-lines" not in (await carol.page("/console/requests")).text
    r = await root.page("/admin/approval-lines")
    assert r.status_code == 200 and "No approval lines yet" in text(r.text)
    # signed out: to the sign-in page
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url=BASE) as anon:
        for path in ("/console/requests/new", "/console/requests/1", "/console/approvals"):
            r = await anon.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/login", path


async def test_forms_need_the_csrf_token(world: World) -> None:
    await add_line(world)
    rid = await file_sql(world)
    carol, dave, root = world["carol"], world["dave"], world["root"]
    r = await carol.c.post(
        "/console/requests/new",
        data={"type": "sql", "connection": "pg", "sql": UPDATE, "reason": "no token"},
    )
    assert r.status_code == 403 and "did not come from this console" in r.text
    r = await dave.c.post(f"/console/requests/{rid}/approve", data={"comment": "ok", "csrf_token": "forged"})
    assert r.status_code == 403
    r = await root.c.post("/admin/approval-lines/writes/disable", data={})
    assert r.status_code == 403
    r = await root.c.post("/admin/approval-lines", data={k: v for k, v in TWO_STAGES.items() if k != "name"})
    assert r.status_code == 403
    # nothing changed
    page = text((await dave.page(f"/console/requests/{rid}")).text)
    assert "pending" in page and "approved" not in page.split("Timeline")[1]
    mine = await carol.page("/console/requests")
    assert mine.text.count('class="req') == 1


async def test_two_stage_approval_with_comments_and_no_self_approval(world: World) -> None:
    await add_line(world)
    rid = await file_sql(world)
    carol, dave, erin = world["carol"], world["dave"], world["erin"]

    # the requester: listed with its state, no approve button, and the service's refusal shown
    mine = await carol.page("/console/requests")
    assert f'href="/console/requests/{rid}"' in mine.text and "st-pending" in mine.text
    own = await carol.page(f"/console/requests/{rid}")
    assert 'id="approve"' not in own.text and 'id="reject"' not in own.text
    assert "You filed this request, so you cannot approve it" in text(own.text)
    r = await carol.submit(
        f"/console/requests/{rid}/approve", f"/console/requests/{rid}", {"comment": "mine"}
    )
    assert r.status_code == 403
    assert f"Request #{rid} was not approved: nobody approves their own request" in text(r.text)

    # stage 1: dave's inbox has it, erin's (stage 2) does not yet
    assert f'href="/console/requests/{rid}"' in (await dave.page("/console/approvals")).text
    assert f'href="/console/requests/{rid}"' not in (await erin.page("/console/approvals")).text
    page = await dave.page(f"/console/requests/{rid}")
    assert 'id="approve"' in page.text and UPDATE in page.text
    r = await dave.submit(
        f"/console/requests/{rid}/approve", f"/console/requests/{rid}", {"comment": "team lead: fine"}
    )
    assert r.status_code == 303, text(r.text)
    assert "pending" in unescape(r.headers["location"])

    # dave approves once; stage 2 is erin's (through group dba)
    r = await dave.submit(
        f"/console/requests/{rid}/approve", f"/console/requests/{rid}", {"comment": "again"}
    )
    assert r.status_code == 403 and "a person approves a request once" in text(r.text)
    assert f'href="/console/requests/{rid}"' in (await erin.page("/console/approvals")).text
    r = await erin.submit(f"/console/requests/{rid}/reject", f"/console/requests/{rid}", {"comment": ""})
    assert r.status_code == 422 and "say why in the comment" in text(r.text)
    r = await erin.submit(
        f"/console/requests/{rid}/approve", f"/console/requests/{rid}", {"comment": "dba: checked the row"}
    )
    assert r.status_code == 303, text(r.text)
    done = await carol.page(f"/console/requests/{rid}")
    page = text(done.text)
    assert "st-approved" in done.text and 'id="open-in-editor"' in done.text
    timeline = page.split("Timeline")[1]
    for who, what, comment in (
        ("carol", "filed", "ticket 42: fix a balance"),
        ("dave", "approved", "team lead: fine"),
        ("erin", "approved", "dba: checked the row"),
    ):
        assert f"{who} {what}" in timeline and comment in timeline, timeline
    assert "Stage 1: team lead" in page and "approved by dave" in page and "approved by erin" in page
    assert f'href="/console/requests/{rid}"' not in (await erin.page("/console/approvals")).text

    # the decisions are audited as approval steps made in the console
    steps = [e for e in world.node.journal.of_type("approval.step") if e["request_id"] == str(rid)]
    assert [s["action"] for s in steps] == ["requested", "stage_approved", "approved"]


async def test_the_link_in_a_proxy_refusal_opens_a_prefilled_request_that_runs_once(world: World) -> None:
    await add_line(world)
    before = await balance()
    refusal = await proxy_run(world, UPDATE)
    assert refusal is not None and "needs an approved SQL request" in refusal, refusal
    link = re.search(r"(http://\S+/console/requests/new\?connection=\S+?)(?=\s|\(|$)", refusal)
    assert link, refusal
    url = urlsplit(link.group(1))
    assert f"{url.scheme}://{url.netloc}" == BASE and url.query == "connection=pg"
    carol = world["carol"]
    page = await carol.page(f"{url.path}?{url.query}")
    assert page.status_code == 200
    assert '<option value="pg" selected>' in page.text
    # the link may also carry the statement and the database: both prefilled
    page = await carol.page(f"{url.path}?{url.query}&{urlencode({'database': 'dbward_test', 'sql': UPDATE})}")
    assert f">{UPDATE}</textarea>" in page.text and 'value="dbward_test"' in page.text

    rid = await file_sql(world)
    waiting = await proxy_run(world, UPDATE)
    assert (
        waiting is not None
        and f"Request #{rid} for this statement is waiting for approval by user dave (stage 1)" in waiting
    )
    for who, comment in (("dave", "ok"), ("erin", "ok too")):
        r = await world[who].submit(
            f"/console/requests/{rid}/approve", f"/console/requests/{rid}", {"comment": comment}
        )
        assert r.status_code == 303, text(r.text)
    assert await proxy_run(world, UPDATE) is None
    assert await balance() != before
    again = await proxy_run(world, UPDATE)
    assert again is not None and "needs an approved SQL request" in again
    page = await carol.page(f"/console/requests/{rid}")
    assert "st-executed" in page.text
    outcome = text(page.text)
    assert "Rows affected 1" in outcome and "executed 1 row affected" in outcome.split("Timeline")[1]


async def test_administrator_creates_edits_disables_and_deletes_a_line(world: World) -> None:
    root = world["root"]
    await add_line(world)
    page = await root.page("/admin/approval-lines")
    listed = text(page.text)
    assert "writes" in listed and "connections pg, maria" in listed and "UPDATE, DELETE" in listed
    assert "any of user:dave" in listed and "any of group:dba" in listed
    # edit: the form comes prefilled, the name is kept; the second stage becomes "all of"
    form = await root.page("/admin/approval-lines?edit=writes")
    assert 'name="original" value="writes"' in form.text and 'value="group:dba"' in form.text
    edited = {
        **TWO_STAGES,
        "original": "writes",
        "stage2_mode": "all",
        "stage2_approvers": "group:dba, user:root",
    }
    r = await root.submit("/admin/approval-lines", "/admin/approval-lines?edit=writes", edited)
    assert r.status_code == 303, text(r.text)
    assert "all of group:dba, user:root" in text((await root.page("/admin/approval-lines")).text)
    # refusals are shown with the form kept
    bad = {**TWO_STAGES, "name": "empty", "stage1_approvers": "", "stage2_approvers": ""}
    r = await root.submit("/admin/approval-lines", "/admin/approval-lines", bad)
    assert r.status_code == 422 and "needs at least one stage with approvers" in text(r.text)
    assert 'value="empty"' in r.text
    bad = {**TWO_STAGES, "name": "odd", "stage1_approvers": "dave"}
    r = await root.submit("/admin/approval-lines", "/admin/approval-lines", bad)
    assert r.status_code == 422 and "type:name" in text(r.text)
    dup = await root.submit("/admin/approval-lines", "/admin/approval-lines", TWO_STAGES)
    assert dup.status_code == 409 and "was not saved" in text(dup.text)
    # disabled: no line serves a SQL request any more, and filing says so
    r = await root.submit("/admin/approval-lines/writes/disable", "/admin/approval-lines", {})
    assert r.status_code == 303
    assert "disabled" in text((await root.page("/admin/approval-lines")).text)
    refused = await world["carol"].submit(
        "/console/requests/new",
        "/console/requests/new",
        {"type": "sql", "connection": "pg", "sql": UPDATE, "reason": "r"},
    )
    assert refused.status_code == 422
    assert "The request was not filed: no approval line serves a sql request on connection pg" in text(
        refused.text
    )
    assert UPDATE in refused.text  # what was typed is kept
    r = await root.submit("/admin/approval-lines/writes/delete", "/admin/approval-lines", {})
    assert r.status_code == 303
    assert "No approval lines yet" in text((await root.page("/admin/approval-lines")).text)
    changes = [e for e in world.node.journal.of_type("admin.change") if e["object_type"] == "approval_line"]
    assert [c["action"] for c in changes] == ["create", "update", "update", "delete"]
    assert (
        changes[1]["before"]["stages"][1]["mode"] == "any"
        and changes[1]["after"]["stages"][1]["mode"] == "all"
    )


async def test_access_unmask_and_export_requests_from_the_form(world: World) -> None:
    await add_line(
        world,
        {
            "name": "other",
            "priority": "50",
            "enabled": "on",
            "request_types": ["access", "unmask", "export"],
            "stage1_approvers": "user:dave",
            "stage1_mode": "any",
        },
    )
    carol, dave = world["carol"], world["dave"]
    forms: list[dict[str, str | list[str]]] = [
        {
            "type": "access",
            "connection": "pg",
            "privileges": ["read-write"],
            "tables": "customers",
            "period_hours": "2",
        },
        {"type": "unmask", "connection": "pg", "columns": "customers.email\npublic.customers.phone"},
        {"type": "export", "connection": "pg", "max_rows": "50000", "period_hours": "1"},
    ]
    ids = []
    for f in forms:
        r = await carol.submit(
            "/console/requests/new", f"/console/requests/new?type={f['type']}", {**f, "reason": "audit"}
        )
        assert r.status_code == 303, text(r.text)
        ids.append(int(r.headers["location"].split("/")[3].split("?")[0]))
    page = text((await carol.page(f"/console/requests/{ids[0]}")).text)
    assert "read-write" in page and "tables: customers" in page and "2.0 hours" in page
    page = text((await carol.page(f"/console/requests/{ids[1]}")).text)
    assert "*.*.customers.email" in page and "*.public.customers.phone" in page
    assert "up to 50000" in text((await carol.page(f"/console/requests/{ids[2]}")).text)
    r = await dave.submit(
        f"/console/requests/{ids[0]}/approve", f"/console/requests/{ids[0]}", {"comment": "2h"}
    )
    assert r.status_code == 303
    page = text((await carol.page(f"/console/requests/{ids[0]}")).text)
    assert f"approval-{ids[0]}" in page  # the grant it became, which ends by itself
    # the requester cancels one; the service's refusals reach the form as sentences
    r = await carol.submit(
        f"/console/requests/{ids[2]}/cancel", f"/console/requests/{ids[2]}", {"comment": "not needed"}
    )
    assert r.status_code == 303 and "st-cancelled" in (await carol.page(f"/console/requests/{ids[2]}")).text
    r = await carol.submit(
        "/console/requests/new",
        "/console/requests/new?type=access",
        {"type": "access", "connection": "pg", "privileges": ["no-such"], "reason": "x"},
    )
    assert r.status_code == 422 and "unknown privilege type 'no-such'" in text(r.text)
    r = await carol.submit(
        "/console/requests/new",
        "/console/requests/new?type=unmask",
        {"type": "unmask", "connection": "pg", "columns": "email", "reason": "x"},
    )
    assert r.status_code == 422 and "table.column" in text(r.text)
    # another user cannot see carol's request (root, an administrator, can)
    assert (await world["erin"].page(f"/console/requests/{ids[0]}")).status_code == 404
    assert (await world["root"].page(f"/console/requests/{ids[0]}")).status_code == 200


async def test_urgent_request_runs_first_is_flagged_and_reviewed(world: World) -> None:
    await add_line(world, {**TWO_STAGES, "allow_urgent": "on"})
    carol, dave = world["carol"], world["dave"]
    page = await carol.page("/console/requests/new?connection=pg")
    assert 'name="urgent"' in page.text
    rid = await file_sql(world, urgent="on")
    mine = await carol.page("/console/requests")
    assert "flag-urgent" in mine.text and "st-approved" in mine.text
    detail = await carol.page(f"/console/requests/{rid}")
    assert 'id="urgent-flag"' in detail.text and "must still review it" in text(detail.text)
    assert await proxy_run(world, UPDATE) is None
    mine = await carol.page("/console/requests?state=all")
    assert "flag-review" in mine.text and "review required" in text(mine.text)
    # any approver of the line reviews it from the inbox; the requester cannot
    r = await carol.submit(f"/console/requests/{rid}/review", f"/console/requests/{rid}", {"comment": "fine"})
    assert r.status_code == 403 and "nobody reviews their own urgent request" in text(r.text)
    assert f'href="/console/requests/{rid}"' in (await dave.page("/console/approvals")).text
    page = await dave.page(f"/console/requests/{rid}")
    assert 'id="review"' in page.text and 'id="approve"' not in page.text
    r = await dave.submit(
        f"/console/requests/{rid}/review", f"/console/requests/{rid}", {"comment": "reviewed after the fact"}
    )
    assert r.status_code == 303, text(r.text)
    done = await carol.page(f"/console/requests/{rid}")
    assert "st-executed" in done.text and "flag-review" not in done.text and "flag-urgent" in done.text
    assert "dave reviewed reviewed after the fact" in text(done.text).split("Timeline")[1]
