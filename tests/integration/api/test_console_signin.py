"""Console sign-in against a real store: password policy, lockout, TOTP with recovery codes,
CSRF, first-login password change, and address rules working together with TOTP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pyotp
import pytest

from dbward.api.app import create_app
from dbward.audit.journal import MemoryJournal
from dbward.node import Node
from dbward.store import repo
from dbward.store.db import Store
from tests.integration.api.conftest import node_settings

ADMIN_PW = "First-admin-pass-1"
NEW_PW = "Chosen-by-me-77!"


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


class Browser:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.c = client

    async def login(self, username: str, password: str) -> httpx.Response:
        page = await self.c.get("/login")
        return await self.c.post(
            "/login", data={"username": username, "password": password, "csrf_token": csrf(page.text)}
        )

    async def post(self, path: str, page: str, **data: str) -> httpx.Response:
        html = (await self.c.get(page)).text
        return await self.c.post(path, data={**data, "csrf_token": csrf(html)})


async def make(
    tmp_path: Path, store: Store, client_ip: str = "10.0.0.5", **api: object
) -> tuple[Browser, MemoryJournal, httpx.AsyncClient]:
    journal = MemoryJournal()
    node = Node(settings=node_settings(tmp_path, **api), store=store, journal=journal, name="n1")
    app = create_app(node)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(client_ip, 40000)), base_url="http://console"
    )
    return Browser(client), journal, client


@pytest.fixture
async def admin_store(sqlite_store: Store) -> Store:
    async with sqlite_store.transaction() as s:
        await repo.create_user(
            s, sqlite_store.box, "admin", password=ADMIN_PW, is_admin=True, must_change_password=True
        )
        await repo.create_user(s, sqlite_store.box, "dora", password="Dora-password-12")
    return sqlite_store


async def test_first_admin_enrolls_totp_then_must_change_password(tmp_path: Path, admin_store: Store) -> None:
    b, journal, client = await make(tmp_path, admin_store)
    async with client:
        r = await b.login("admin", ADMIN_PW)
        assert r.status_code == 303 and r.headers["location"] == "/login/enroll"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        # nothing else is reachable before the second factor
        assert (await client.get("/admin")).headers["location"] == "/login/enroll"
        page = await client.get("/login/enroll")
        secret = re.search(r'id="totp-secret" class="secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
        r = await client.post("/login/enroll", data={"code": "000000", "csrf_token": csrf(page.text)})
        assert "does not match" in r.text
        r = await b.post("/login/enroll", "/login/enroll", code=pyotp.TOTP(secret).now())
        codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", r.text)
        assert len(codes) == 10 and 'href="/account/password"' in r.text
        assert (await client.get("/admin")).headers["location"] == "/account/password"
        r = await b.post(
            "/account/password", "/account/password", current=ADMIN_PW, new="short", repeat="short"
        )
        assert r.status_code == 422 and "password policy" in r.text
        r = await b.post(
            "/account/password", "/account/password", current=ADMIN_PW, new=NEW_PW, repeat=NEW_PW
        )
        assert r.status_code == 303
        r = await client.get("/admin")
        assert r.status_code == 200 and "Dashboard" in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert r.headers["x-frame-options"] == "DENY"
        # sign out and in again: TOTP is asked now; a recovery code works once
        await b.post("/logout", "/admin")
        r = await b.login("admin", NEW_PW)
        assert r.headers["location"] == "/login/totp"
        r = await b.post("/login/totp", "/login/totp", code=codes[0])
        assert r.status_code == 303 and r.headers["location"] == "/"
        await b.post("/logout", "/admin")
        await b.login("admin", NEW_PW)
        r = await b.post("/login/totp", "/login/totp", code=codes[0])
        assert r.status_code == 401 and "already used" in r.text
    methods = [e["method"] for e in journal.of_type("auth.signin")]
    assert methods == ["password+totp", "password+recovery_code"]
    assert (
        ADMIN_PW not in str(journal.records)
        and NEW_PW not in str(journal.records)
        and secret not in str(journal.records)
    )


async def test_lockout_after_repeated_failures(tmp_path: Path, admin_store: Store) -> None:
    b, journal, client = await make(tmp_path, admin_store, lockout_failures=3, lockout_minutes=5)
    async with client:
        for _ in range(2):
            r = await b.login("dora", "wrong-password")
            assert r.status_code == 401 and "user name or password is wrong" in r.text
        r = await b.login("dora", "wrong-password")
        assert r.status_code == 429 and "locked" in r.text
        r = await b.login("dora", "Dora-password-12")  # even the right password waits
        assert r.status_code == 429
        # unknown users get the same answers (no user enumeration)
        r = await b.login("nobody", "x")
        assert r.status_code == 401 and "user name or password is wrong" in r.text
    reasons = [e["reason"] for e in journal.of_type("auth.signin_failed") if e["user"] == "dora"]
    assert reasons[0] == "wrong user name or password" and "locked for 5 minutes" in reasons[2]
    assert reasons[3] == "user name is locked"
    async with admin_store.transaction() as s:
        await repo.clear_lockout(s, "dora")
    b2, _, client2 = await make(tmp_path, admin_store)
    async with client2:
        r = await b2.login("dora", "Dora-password-12")
        assert r.status_code == 303 and r.headers["location"] == "/"


async def test_csrf_is_required_on_every_form(tmp_path: Path, admin_store: Store) -> None:
    b, _, client = await make(tmp_path, admin_store)
    async with client:
        r = await client.post(
            "/login", data={"username": "dora", "password": "Dora-password-12", "csrf_token": "forged"}
        )
        assert r.status_code == 403 and "did not come from this console" in r.text
        assert (await b.login("dora", "Dora-password-12")).status_code == 303
        r = await client.post("/tokens", data={"name": "x", "csrf_token": "forged"})
        assert r.status_code == 403
        r = await client.post("/tokens", data={"name": "x"})
        assert r.status_code == 403
        r = await b.post("/tokens", "/tokens", name="laptop")
        assert r.status_code == 200 and "dbw_" in r.text


async def test_user_cannot_reach_admin_pages(tmp_path: Path, admin_store: Store) -> None:
    b, _, client = await make(tmp_path, admin_store)
    async with client:
        await b.login("dora", "Dora-password-12")
        assert (await client.get("/connections")).status_code == 200
        for path in ("/admin", "/admin/users", "/admin/audit", "/admin/api-tokens", "/admin/sessions"):
            r = await client.get(path)
            assert r.status_code == 403 and "for administrators" in r.text


async def test_ip_rules_and_totp_work_together(tmp_path: Path, admin_store: Store) -> None:
    """Both stay enforced: a good address does not skip TOTP, and TOTP does not lift the address rules."""
    async with admin_store.transaction() as s:
        user = await repo.get_user(s, "dora")
        assert user is not None
        await repo.set_user_ip_rules(s, user.id, ["10.0.0.0/24"])
    b, _journal, client = await make(
        tmp_path, admin_store, totp_required="everyone", admin_allowed_ips=["192.168.1.0/24"]
    )
    async with client:
        r = await b.login("dora", "Dora-password-12")
        assert r.headers["location"] == "/login/enroll"  # TOTP still asked from the allowed range
        page = await client.get("/login/enroll")
        secret = re.search(r'id="totp-secret" class="secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
        await b.post("/login/enroll", "/login/enroll", code=pyotp.TOTP(secret).now())
        assert (await client.get("/connections")).status_code == 200
    # the same person from another address: refused before and after TOTP
    b2, journal2, client2 = await make(tmp_path, admin_store, client_ip="10.0.9.9", totp_required="everyone")
    async with client2:
        r = await b2.login("dora", "Dora-password-12")
        assert r.status_code == 403 and "10.0.9.9" in r.text
    assert journal2.of_type("auth.signin_failed")[0]["reason"].startswith("address 10.0.9.9")
    # admin pages have their own range, checked after a full TOTP sign-in too
    async with admin_store.transaction() as s:
        admin = await repo.require_user(s, "admin")
        admin.must_change_password = False
    b3, _, client3 = await make(
        tmp_path, admin_store, totp_required="everyone", admin_allowed_ips=["192.168.1.0/24"]
    )
    async with client3:
        await b3.login("admin", ADMIN_PW)
        page = await client3.get("/login/enroll")
        secret = re.search(r'id="totp-secret" class="secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
        await b3.post("/login/enroll", "/login/enroll", code=pyotp.TOTP(secret).now())
        r = await client3.get("/admin/users")
        assert r.status_code == 403 and "administration pages are not open" in r.text
        assert (await client3.get("/connections")).status_code == 200


async def test_totp_code_cannot_be_replayed(tmp_path: Path, admin_store: Store) -> None:
    b, _, client = await make(tmp_path, admin_store, totp_required="everyone")
    async with client:
        await b.login("dora", "Dora-password-12")
        page = await client.get("/login/enroll")
        secret = re.search(r'id="totp-secret" class="secret">([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
        code = pyotp.TOTP(secret).now()
        await b.post("/login/enroll", "/login/enroll", code=code)
        await b.post("/logout", "/connections")
        await b.login("dora", "Dora-password-12")
        r = await b.post("/login/totp", "/login/totp", code=code)
        assert r.status_code == 401
