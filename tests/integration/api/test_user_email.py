"""Users' e-mail addresses through the API: set, changed, cleared and shown, and refused with
a clear reason when they are not addresses (approval notices are sent to them)."""

from __future__ import annotations

from tests.integration.api.conftest import Api


async def test_email_is_validated_stored_and_shown(api: Api) -> None:
    h = api.h(api.admin_token)
    r = await api.client.post(
        "/api/v1/users", headers=h, json={"username": "dave", "email": "dave@example.com"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "dave@example.com"

    bad = await api.client.post("/api/v1/users", headers=h, json={"username": "erin", "email": "erin"})
    assert bad.status_code == 422, bad.text
    assert "'erin' is not an e-mail address" in bad.text
    assert (await api.client.get("/api/v1/users/erin", headers=h)).status_code == 404

    r = await api.client.patch("/api/v1/users/dave", headers=h, json={"email": "d.kim@mail.example.org"})
    assert r.status_code == 200 and r.json()["email"] == "d.kim@mail.example.org"
    bad = await api.client.patch("/api/v1/users/dave", headers=h, json={"email": "dave@localhost"})
    assert bad.status_code == 422 and "'dave@localhost' is not an e-mail address" in bad.text
    assert (await api.client.get("/api/v1/users/dave", headers=h)).json()["email"] == "d.kim@mail.example.org"

    r = await api.client.patch("/api/v1/users/dave", headers=h, json={"email": None})
    assert r.status_code == 200 and r.json()["email"] is None
    change = [c for c in api.changes() if c["object_name"] == "dave"]
    assert [c["action"] for c in change] == ["create", "update", "update"]
