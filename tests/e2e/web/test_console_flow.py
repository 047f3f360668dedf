"""The console end to end in a real browser, through the real proxy to the real MariaDB.

An administrator signs in (TOTP enrolment, then a TOTP sign-in), adds a connection, tests it,
grants a user read-only access and masks a column; that user runs a query in the SQL editor,
exports the result as CSV, never sees the masked column in clear, and is refused a DELETE with
the policy's reason; the administrator then finds all of it in the audit view. Screenshots of the main pages go to tests/e2e/web/artifacts/.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pyotp

from dbward.store import repo
from tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_UPSTREAM_PASSWORD, MYSQL_UPSTREAM_USER
from tests.e2e.web.conftest import ARTIFACTS, WebNode

ADMIN_PW = "Init-one-time-pw-9"
ADMIN_NEW = "Chosen-strong-pw-42!"
ANA_PW = "Ana-password-2026!"


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Any, base: str, user: str, password: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("button.primary")


async def test_admin_grants_user_queries_is_refused_exports_and_admin_audits(
    web_node: WebNode, browser: Any, mysql_upstream: None
) -> None:
    store = web_node.store
    async with store.transaction() as s:
        await repo.create_user(
            s, store.box, "admin", password=ADMIN_PW, is_admin=True, must_change_password=True
        )
        await repo.create_user(s, store.box, "ana", password=ANA_PW, display_name="Ana Analyst")
    base = web_node.url

    # ---------------------------------------------------------------- administrator, first sign-in
    admin_ctx = await browser.new_context(accept_downloads=True)
    admin = await admin_ctx.new_page()
    await sign_in(admin, base, "admin", ADMIN_PW)
    await admin.wait_for_url(f"{base}/login/enroll")
    secret = (await admin.text_content("#totp-secret") or "").strip()
    await shot(admin, "01-totp-enrolment")
    await admin.fill("input[name=code]", pyotp.TOTP(secret).now())
    await admin.click("button.primary")
    await admin.wait_for_selector("#recovery-codes")
    await shot(admin, "02-recovery-codes")
    await admin.click("text=I have saved them")
    await admin.wait_for_url(f"{base}/account/password")
    await admin.fill("input[name=current]", ADMIN_PW)
    await admin.fill("input[name=new]", ADMIN_NEW)
    await admin.fill("input[name=repeat]", ADMIN_NEW)
    await admin.click("button.primary")
    await admin.wait_for_url(f"{base}/admin")

    # sign out and in again with a TOTP code (the next time step: codes never work twice)
    await admin.click("text=Sign out")
    await admin.wait_for_url(f"{base}/login")
    await sign_in(admin, base, "admin", ADMIN_NEW)
    await admin.wait_for_url(f"{base}/login/totp")
    await shot(admin, "03-totp-sign-in")
    await admin.fill("input[name=code]", pyotp.TOTP(secret).at(time.time() + 30))
    await admin.click("button.primary")
    await admin.wait_for_url(f"{base}/admin")

    # ---------------------------------------------------------------- connection and grant
    await admin.goto(f"{base}/admin/connections")
    form = admin.locator("#add-connection")
    await form.locator("input[name=name]").fill("shop")
    await form.locator("select[name=engine]").select_option("mysql")
    await form.locator("input[name=host]").fill(MYSQL_HOST)
    await form.locator("input[name=port]").fill(str(MYSQL_PORT))
    await form.locator("input[name=database]").fill("dbward_test")
    await form.locator("input[name=username]").fill(MYSQL_UPSTREAM_USER)
    await form.locator("input[name=password]").fill(MYSQL_UPSTREAM_PASSWORD)
    await form.locator("select[name=tls_mode]").select_option("disable")
    await form.locator("input[name=export_max_rows]").fill("2")
    await form.locator("button.primary").click()
    await admin.wait_for_selector("text=Connection shop was added.")
    assert MYSQL_UPSTREAM_PASSWORD not in await admin.content()
    await admin.click(".test-button")
    await admin.wait_for_selector("table.steps tr.pass >> text=login")
    await shot(admin, "04-connections-with-test")

    await admin.goto(f"{base}/admin/grants")
    g = admin.locator("#add-grant")
    await g.locator("input[name=name]").fill("ana-shop-read")
    await g.locator("select[name=subject]").select_option("user:ana")
    await g.locator("select[name=connection]").select_option("shop")
    await g.locator("select[name=privileges]").select_option(["read-only"])
    await g.locator("button.primary").click()
    await admin.wait_for_selector("text=Grant ana-shop-read was created.")
    await asyncio.sleep(1.2)  # see below: the node picks up policy changes within a second
    await shot(admin, "05-grants")

    # ---------------------------------------------------------------- the user
    user_ctx = await browser.new_context(accept_downloads=True)
    ana = await user_ctx.new_page()
    await sign_in(ana, base, "ana", ANA_PW)
    await ana.wait_for_url(f"{base}/connections")
    assert "mysql -h 127.0.0.1" in (await ana.text_content("main") or "")
    await shot(ana, "06-my-connections")

    await ana.goto(f"{base}/editor?connection=shop")
    await ana.fill("#sql", "SELECT id, name, email FROM customers ORDER BY id")
    await ana.click("#run-button")
    await ana.wait_for_selector("table.data >> text=Kim Minji")
    await ana.click("text=Load tables and columns")
    await ana.wait_for_selector("#schema-tree >> text=customers")
    await shot(ana, "07-editor-result")

    async with ana.expect_download() as dl:
        await ana.click("#export-csv")
    download = await dl.value
    csv_text = (await download.path()).read_text()  # type: ignore[union-attr]
    # the connection's export limit (2 rows) applies to the CSV
    assert csv_text.splitlines() == [
        "id,name,email",
        "1,Kim Minji,minji@example.com",
        "2,Lee Jun,jun@example.com",
    ]

    # the administrator masks the phone column for everyone on this connection
    await admin.goto(f"{base}/admin/grants")
    mform = admin.locator("#add-masking")
    await mform.locator("input[name=name]").fill("phones")
    await mform.locator("select[name=connection]").select_option("shop")
    await mform.locator("input[name=table]").fill("customers")
    await mform.locator("input[name=column]").fill("phone")
    await mform.locator("select[name=pattern]").select_option("phone")
    await mform.locator("button.primary").click()
    await admin.wait_for_selector("text=Masking rule phones was created.")
    await asyncio.sleep(
        1.2
    )  # policy changes reach a node within a second (StorePolicyProvider.check_interval)
    await shot(admin, "05b-masking-rule")
    await ana.fill("#sql", "SELECT id, phone FROM customers ORDER BY id")
    await ana.click("#run-button")
    await ana.locator("#result .statement-error, #result table.data th:has-text('phone')").first.wait_for()
    masked_view = await ana.text_content("#result") or ""
    # never the clear value: masked, or refused because the engine cannot mask yet (fail closed)
    assert "010-1234-5678" not in masked_view, masked_view
    assert "fails closed" in masked_view or "010-" in masked_view, masked_view
    await shot(ana, "07b-editor-masked-column")

    await ana.fill("#sql", "DELETE FROM customers WHERE id = 2")
    await ana.click("#run-button")
    await ana.wait_for_selector(".statement-error")
    refusal = await ana.text_content(".statement-error") or ""
    assert "read-only" in refusal, refusal
    await shot(ana, "08-editor-refused-delete")

    # ---------------------------------------------------------------- the administrator audits it
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        await admin.goto(f"{base}/admin/audit?user=ana")
        text = await admin.text_content("table.audit") or ""
        if "DELETE FROM customers" in text and "data.export" in text:
            break
        await asyncio.sleep(0.5)
    assert "DELETE FROM customers WHERE id = 2" in text and "deny" in text
    assert "SELECT id, name, email FROM customers" in text
    assert "dbward-console" in text and "result as csv, 2 rows" in text
    await shot(admin, "09-audit")
    await admin.goto(f"{base}/admin/audit?user=ana&effect=deny")
    assert "DELETE FROM customers" in (await admin.text_content("table.audit") or "")
    await admin.goto(f"{base}/admin")
    await shot(admin, "10-dashboard")
    await admin.goto(f"{base}/admin/users")
    await shot(admin, "11-users")
    await admin.goto(f"{base}/admin/sessions")
    await admin.wait_for_selector("text=dbward-console")  # ana's editor session is live
    await shot(admin, "12-sessions")
    await admin_ctx.close()
    await user_ctx.close()
