"""No administrator can lock themselves (or everyone) out: own admin rights, own account, last admin.

API and console against a real store; the refusal is a 409 whose sentence says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dbward.api import service
from dbward.api.context import Actor, ApiContext
from dbward.errors import ConflictError
from dbward.store import repo
from dbward.store.db import Store
from tests.integration.api.conftest import Api, make_token
from tests.integration.api.test_console_signin import csrf, make


def err(r: Any) -> dict[str, str]:
    body = r.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


async def test_api_admin_cannot_demote_disable_or_delete_themselves(api: Api) -> None:
    h = api.h(api.admin_token)
    for method, body in (("PATCH", {"admin": False}), ("PATCH", {"disabled": True}), ("DELETE", None)):
        r = await api.client.request(method, "/api/v1/users/root", headers=h, json=body)
        assert r.status_code == 409, r.text
        e = err(r)
        assert e["code"] == "conflict"
        assert "your own account (root)" in e["message"] and "Another administrator" in e["message"]
    user = (await api.client.get("/api/v1/users/root", headers=h)).json()
    assert user["admin"] is True and user["disabled"] is False
    assert api.changes() == []  # nothing was changed, so nothing was audited as a change


async def test_api_admin_may_change_other_administrators_and_harmless_own_fields(api: Api) -> None:
    h = api.h(api.admin_token)
    r = await api.client.patch("/api/v1/users/root", headers=h, json={"display_name": "Root"})
    assert r.status_code == 200 and r.json()["admin"] is True
    r = await api.client.post(
        "/api/v1/users", headers=h, json={"username": "carol", "admin": True, "password": "Temp-pass-for-C1"}
    )
    assert r.status_code == 201
    carol = await make_token(api.store, "carol-admin", "carol", ["admin"])
    # carol (another active administrator) may demote root; root may then not demote carol back
    r = await api.client.patch("/api/v1/users/root", headers=api.h(carol), json={"admin": False})
    assert r.status_code == 200 and r.json()["admin"] is False
    r = await api.client.patch("/api/v1/users/carol", headers=h, json={"admin": False})
    assert r.status_code == 403  # root is no administrator any more
    r = await api.client.delete("/api/v1/users/carol", headers=api.h(carol))
    assert r.status_code == 409 and "your own account (carol)" in err(r)["message"]


async def test_last_active_administrator_is_kept_whoever_asks(api: Api) -> None:
    """A caller that is not itself a stored administrator (a sync job, a script) hits the rule
    that the last active administrator stays; through the API the self rule answers first."""
    ctx = _ctx(api)
    sync = Actor(user_id=0, username="hr-sync", is_admin=True, surface="api", client_ip="10.9.9.9")
    for call in (
        service.update(ctx, sync, "users", "root", {"disabled": True}),
        service.update(ctx, sync, "users", "root", {"admin": False}),
        service.delete(ctx, sync, "users", "root"),
    ):
        with pytest.raises(ConflictError) as info:
            await call
        assert "last active administrator" in info.value.message
        assert "Make another user an administrator first" in info.value.message
    # a second, disabled administrator does not count
    async with api.store.transaction() as s:
        (await repo.create_user(s, api.store.box, "old-admin", is_admin=True)).disabled = True
    with pytest.raises(ConflictError):
        await service.update(ctx, sync, "users", "root", {"admin": False})
    # once another administrator is active, root may go
    await service.update(ctx, sync, "users", "old-admin", {"disabled": False})
    await service.update(ctx, sync, "users", "root", {"admin": False})


def _ctx(api: Api) -> ApiContext:
    from dbward.api.app import context_from_node

    return context_from_node(api.node)


@pytest.fixture
async def two_admins(sqlite_store: Store) -> Store:
    async with sqlite_store.transaction() as s:
        await repo.create_user(s, sqlite_store.box, "admin", password="Admin-pass-1234", is_admin=True)
        await repo.create_user(s, sqlite_store.box, "erin", password="Erin-pass-12345", is_admin=True)
    return sqlite_store


async def test_console_refuses_own_lockout_with_409(tmp_path: Path, two_admins: Store) -> None:
    b, journal, client = await make(tmp_path, two_admins, totp_required="off")
    async with client:
        r = await b.login("admin", "Admin-pass-1234")
        assert r.status_code == 303
        page = await client.get("/admin/users")
        assert "Remove admin" in page.text
        token = csrf(page.text)
        for action, words in (
            ("revoke-admin", "remove the administrator rights of your own account"),
            ("disable", "disable your own account"),
            ("delete", "delete your own account"),
        ):
            r = await client.post(f"/admin/users/admin/{action}", data={"csrf_token": token})
            assert r.status_code == 409, (action, r.status_code)
            assert words in r.text and "Another administrator must make this change" in r.text
            assert 'role="alert"' in r.text
        # another administrator's rights can be removed from the console
        r = await client.post("/admin/users/erin/revoke-admin", data={"csrf_token": token})
        assert r.status_code == 303
    async with two_admins.session() as s:
        me, erin = await repo.get_user(s, "admin"), await repo.get_user(s, "erin")
        assert me is not None and me.is_admin and not me.disabled
        assert erin is not None and not erin.is_admin
    assert [c["object_name"] for c in journal.of_type("admin.change")] == ["erin"]
