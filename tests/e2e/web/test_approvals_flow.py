"""Approvals end to end in a real browser, through the real proxy to the real MariaDB.

An administrator defines a two-stage approval line in the console; a read-only user is refused
an UPDATE in the SQL editor with a message that links to a request, opens the link and files
the SQL request; two approvers sign in and approve it with comments (one stage each); the user
opens the approved statement in the editor and it runs once, a second run is refused again, and
the request's page shows the whole timeline and the outcome. Screenshots (new-request page,
inbox, request page with its timeline, approval lines) go to tests/e2e/web/artifacts/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from dbward.store import repo
from tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_UPSTREAM_PASSWORD, MYSQL_UPSTREAM_USER, mysql_root
from tests.e2e.web.conftest import ARTIFACTS, WebNode

# these tests change the sample rows for real: put them back after each
pytestmark = pytest.mark.usefixtures("restore_customers")

PASSWORDS = {
    "admin": "Admin-password-2026!",
    "ana": "Ana-password-2026!",
    "dave": "Dave-password-2026!",
    "erin": "Erin-password-2026!",
}
UPDATE = "UPDATE customers SET balance = 4321.00 WHERE id = 3"


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(browser: Any, base: str, user: str) -> Any:
    ctx = await browser.new_context()
    page = await ctx.new_page()
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORDS[user])
    await page.click("button.primary")
    await page.wait_for_url(f"{base}/admin" if user == "admin" else f"{base}/connections")
    return page


def balance_of_3() -> Any:
    conn = mysql_root()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT balance FROM dbward_test.customers WHERE id = 3")
            row = cur.fetchone()
            assert row is not None
            return row[0]
    finally:
        conn.close()


async def test_refused_update_is_requested_approved_in_two_stages_and_runs_once(
    web_node: WebNode, browser: Any, mysql_upstream: None
) -> None:
    store = web_node.store
    async with store.transaction() as s:
        for name, pw in PASSWORDS.items():
            await repo.create_user(s, store.box, name, password=pw, is_admin=name == "admin")
        await repo.create_connection(
            s,
            store.box,
            "shop",
            engine="mysql",
            host=MYSQL_HOST,
            port=MYSQL_PORT,
            username=MYSQL_UPSTREAM_USER,
            password=MYSQL_UPSTREAM_PASSWORD,
            database="dbward_test",
            tls_mode="disable",
        )
        await repo.create_grant(
            s,
            "ana-shop",
            subject_type="user",
            subject_name="ana",
            connection="shop",
            privileges=["read-only"],
        )
    base = web_node.url
    settings = web_node.node.settings
    settings.api.public_url = base  # what the proxy's refusals link to, as in a deployment
    settings.api.totp_required = "off"  # TOTP sign-in has its own browser test (test_console_flow.py)
    before = balance_of_3()

    # ---------------------------------------------------------------- the administrator's line
    admin = await sign_in(browser, base, "admin")
    await admin.click("text=Approval lines")
    await admin.wait_for_url(f"{base}/admin/approval-lines")
    form = admin.locator("#line")
    await form.locator("input[name=name]").fill("shop-writes")
    await form.locator("input[name=connections]").fill("shop")
    await form.locator("input[name=request_types][value=sql]").check()
    await form.locator("input[name=stage1_name]").fill("team lead")
    await form.locator("input[name=stage1_approvers]").fill("user:dave")
    await form.locator("input[name=stage2_name]").fill("dba")
    await form.locator("input[name=stage2_approvers]").fill("user:erin")
    await form.locator("#save-line").click()
    await admin.wait_for_selector("text=Approval line shop-writes was created.")
    assert "any of user:erin" in (await admin.text_content("#approval-lines") or "")
    await shot(admin, "20-approval-lines")

    # ---------------------------------------------------------------- refused, with a link to a request
    ana = await sign_in(browser, base, "ana")
    await ana.goto(f"{base}/editor?connection=shop")
    await ana.fill("#sql", UPDATE)
    await ana.click("#run-button")
    await ana.wait_for_selector(".statement-error")
    refusal = await ana.text_content(".statement-error") or ""
    assert "read-only" in refusal and "needs an approved SQL request" in refusal, refusal
    link = re.search(r"(http://\S+/console/requests/new\?connection=[\w.-]+)", refusal)
    assert link and link.group(1).startswith(base), refusal
    await shot(ana, "21-editor-refused-with-request-link")

    await ana.goto(link.group(1))
    assert await ana.locator("select[name=connection]").input_value() == "shop"
    await ana.fill("#request-sql", UPDATE)
    await ana.fill("textarea[name=reason]", "INC-1234: the balance of customer 3 was booked twice")
    await shot(ana, "22-new-request")
    await ana.click("#file-request")
    await ana.wait_for_selector("text=was filed. It waits for its approvers.")
    rid = int(re.search(r"/console/requests/(\d+)", ana.url).group(1))  # type: ignore[union-attr]
    assert "You filed this request, so you cannot approve it" in (await ana.text_content("#stages") or "")
    assert await ana.locator("#approve").count() == 0

    # ---------------------------------------------------------------- two approvers, one stage each
    for who, comment, after in (
        ("dave", "team lead: the double booking is confirmed in INC-1234", "pending"),
        ("erin", "dba: one row, by primary key; go ahead", "approved"),
    ):
        page = await sign_in(browser, base, who)
        await page.click("text=To approve")
        await page.wait_for_url(f"{base}/console/approvals")
        row = page.locator(f"#inbox a[href='/console/requests/{rid}']").first
        await row.wait_for()
        if who == "dave":
            await shot(page, "23-inbox")
        await row.click()
        await page.wait_for_url(f"{base}/console/requests/{rid}")
        await page.fill("#decide textarea[name=comment]", comment)
        await page.click("#approve")
        await page.wait_for_selector(f"text=Request #{rid} was approved by {who}; it is now {after}.")
        await page.context.close()

    # ---------------------------------------------------------------- the approved statement, once
    await ana.goto(f"{base}/console/requests/{rid}")
    await ana.click("#open-in-editor")
    await ana.wait_for_url(re.compile(r".*/editor\?.*"))
    assert (await ana.input_value("#sql")).strip() == UPDATE
    await ana.click("#run-button")
    await ana.locator("#result .result-head .status, #result .statement-error").first.wait_for()
    assert await ana.locator("#result .statement-error").count() == 0, await ana.text_content("#result")
    assert balance_of_3() != before and str(balance_of_3()) == "4321.00"
    await ana.click("#run-button")
    await ana.wait_for_selector("#result .statement-error")
    assert "needs an approved SQL request" in (await ana.text_content("#result .statement-error") or "")

    await ana.goto(f"{base}/console/requests/{rid}")
    timeline = await ana.text_content("#timeline") or ""
    for expected in (
        "INC-1234: the balance of customer 3 was booked twice",
        "team lead: the double booking is confirmed in INC-1234",
        "dba: one row, by primary key; go ahead",
        "1 row affected",
    ):
        assert expected in timeline, timeline
    assert "executed" in (await ana.text_content("h1") or "")
    assert "1" in (await ana.text_content("#outcome") or "")
    await shot(ana, "24-request-timeline")
    await ana.goto(f"{base}/console/requests?state=all")
    await shot(ana, "25-my-requests")
    await ana.context.close()
    await admin.context.close()
