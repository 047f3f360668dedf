"""Failed API token authentication is throttled per client address (429, Retry-After), audited
once when the refusal starts, and a valid token from another address keeps working."""

from __future__ import annotations

from pathlib import Path

import httpx

from dbward.api.app import context_from_node, create_app_from
from dbward.audit.journal import MemoryJournal
from dbward.node import Node
from dbward.store import repo
from dbward.store.db import Store
from tests.integration.api.conftest import make_token, node_settings


async def test_invalid_tokens_from_one_address_are_throttled(tmp_path: Path, sqlite_store: Store) -> None:
    store = sqlite_store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "root", password="Admin-password-1!", is_admin=True)
    good = await make_token(store, "root-admin", "root", ["admin"])
    journal = MemoryJournal()
    settings = node_settings(tmp_path, token_failures=3, token_failure_window_seconds=3600)
    node = Node(settings=settings, store=store, journal=journal, name="n1")
    app = create_app_from(context_from_node(node), console=False)

    def client(ip: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(ip, 5000)), base_url="http://api"
        )

    bad = {"authorization": "Bearer dbwa_guessed-token-000"}
    async with client("198.51.100.7") as attacker, client("10.1.2.3") as office:
        for _ in range(3):
            r = await attacker.get("/api/v1/users", headers=bad)
            assert r.status_code == 401 and r.json()["error"]["code"] == "authentication_failed"
        for headers in (bad, bad, {"authorization": f"Bearer {good}"}):
            r = await attacker.get("/api/v1/users", headers=headers)
            assert r.status_code == 429
            assert r.json() == {"error": {"code": "rate_limited", "message": r.json()["error"]["message"]}}
            msg = r.json()["error"]["message"]
            assert "198.51.100.7 sent 3 invalid API tokens within 3600 seconds" in msg
            assert "api.token_failures" in msg
            assert 3500 <= int(r.headers["retry-after"]) <= 3600
        # the valid token from another address is unaffected
        r = await office.get("/api/v1/users", headers={"authorization": f"Bearer {good}"})
        assert r.status_code == 200
        r = await office.get("/api/v1/users", headers=bad)
        assert r.status_code == 401
    failures = journal.of_type("auth.signin_failed")
    from_attacker = [f for f in failures if f["client_addr"] == "198.51.100.7"]
    # three failures, the third one announcing the refusal; the refused requests are not audited
    assert len(from_attacker) == 3
    assert ["refused until" in f["reason"] for f in from_attacker] == [False, False, True]
    assert [f["client_addr"] for f in failures if f not in from_attacker] == ["10.1.2.3"]
