"""Every REST endpoint against a real store: results, errors, pagination, audit and authorization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.api.conftest import Api, make_token

CONN = {
    "name": "sales",
    "engine": "postgres",
    "host": "127.0.0.1",
    "port": 5432,
    "database": "sales",
    "username": "svc",
    "password": "Upstream-secret-9",
    "tls_mode": "disable",
}


def err(r: Any) -> dict[str, str]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return dict(body["error"])


async def test_health_needs_no_token(api: Api) -> None:
    r = await api.client.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_missing_bad_revoked_and_expired_tokens_are_refused_and_audited(api: Api) -> None:
    r = await api.client.get("/api/v1/users")
    assert r.status_code == 401 and err(r)["code"] == "authentication_required"
    r = await api.client.get("/api/v1/users", headers=api.h("dbwa_not-a-real-token"))
    assert r.status_code == 401 and err(r)["code"] == "authentication_failed"
    expired = await make_token(
        api.store, "old", "root", ["admin"], expires_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    r = await api.client.get("/api/v1/users", headers=api.h(expired))
    assert r.status_code == 401
    r = await api.client.delete("/api/v1/api-tokens/old", headers=api.h(api.admin_token))
    assert r.status_code == 204
    failures = api.journal.of_type("auth.signin_failed")
    assert [f["reason"] for f in failures] == ["unknown API token", "API token old expired"]
    assert all(f["surface"] == "api" and f["client_addr"] == "10.1.2.3" for f in failures)


async def test_token_ip_range_is_enforced(api: Api) -> None:
    ok = await make_token(api.store, "lan", "root", ["admin"], allowed_ips=["10.1.0.0/16"])
    far = await make_token(api.store, "far", "root", ["admin"], allowed_ips=["192.168.0.0/24"])
    assert (await api.client.get("/api/v1/users", headers=api.h(ok))).status_code == 200
    r = await api.client.get("/api/v1/users", headers=api.h(far))
    assert r.status_code == 403 and "10.1.2.3" in err(r)["message"]


async def test_users_crud_with_audit_and_pagination(api: Api) -> None:
    h = api.h(api.admin_token)
    r = await api.client.post(
        "/api/v1/users",
        headers=h,
        json={
            "username": "carol",
            "email": "carol@example.com",
            "password": "Temp-pass-for-C1",
            "allowed_ips": ["10.0.0.0/8"],
        },
    )
    assert r.status_code == 201, r.text
    carol = r.json()
    assert carol["has_password"] and carol["must_change_password"] and carol["allowed_ips"] == ["10.0.0.0/8"]
    assert "password" not in carol
    r = await api.client.post("/api/v1/users", headers=h, json={"username": "carol"})
    assert r.status_code == 409 and err(r)["code"] == "conflict"
    r = await api.client.post("/api/v1/users", headers=h, json={"username": "weak", "password": "short"})
    assert r.status_code == 422 and "at least 12 characters" in err(r)["message"]
    r = await api.client.post("/api/v1/users", headers=h, json={"username": "x", "bogus": 1})
    assert r.status_code == 422 and err(r)["message"] == "bogus: is not a known field"

    r = await api.client.patch(
        "/api/v1/users/carol", headers=h, json={"display_name": "Carol K", "admin": False}
    )
    assert r.status_code == 200 and r.json()["display_name"] == "Carol K"
    r = await api.client.post("/api/v1/users/carol/password", headers=h, json={"password": "Another-Pass-22"})
    assert r.status_code == 204

    page1 = (await api.client.get("/api/v1/users?limit=2", headers=h)).json()
    assert [u["username"] for u in page1["items"]] == ["bob", "carol"] and page1["next_cursor"]
    page2 = (await api.client.get(f"/api/v1/users?limit=2&cursor={page1['next_cursor']}", headers=h)).json()
    assert [u["username"] for u in page2["items"]] == ["root"] and page2["next_cursor"] is None
    r = await api.client.get("/api/v1/users?admin=true", headers=h)
    assert [u["username"] for u in r.json()["items"]] == ["root"]
    assert (await api.client.get("/api/v1/users?cursor=%%%", headers=h)).status_code == 422

    assert (await api.client.get("/api/v1/users/carol", headers=h)).json()["display_name"] == "Carol K"
    assert (await api.client.post("/api/v1/users/carol/unlock", headers=h)).status_code == 204
    assert (await api.client.delete("/api/v1/users/carol/totp", headers=h)).status_code == 204
    assert (await api.client.delete("/api/v1/users/carol", headers=h)).status_code == 204
    r = await api.client.get("/api/v1/users/carol", headers=h)
    assert r.status_code == 404 and err(r) == {"code": "not_found", "message": "user carol does not exist"}

    changes = [(c["object_type"], c["object_name"], c["action"]) for c in api.changes()]
    assert ("user", "carol", "create") in changes and ("user", "carol", "delete") in changes
    update = next(c for c in api.changes() if c["action"] == "update" and c["after"].get("display_name"))
    assert update["before"]["display_name"] is None and update["after"]["display_name"] == "Carol K"
    assert all(c["source"] == "api" and c["user"] == "root" for c in api.changes())
    assert "Temp-pass-for-C1" not in str(api.journal.records) and "Another-Pass-22" not in str(
        api.journal.records
    )


async def test_groups_and_roles(api: Api) -> None:
    h = api.h(api.admin_token)
    r = await api.client.post("/api/v1/groups", headers=h, json={"name": "analysts", "members": ["bob"]})
    assert r.status_code == 201 and r.json()["members"] == ["bob"]
    r = await api.client.post("/api/v1/groups", headers=h, json={"name": "ghosts", "members": ["nobody"]})
    assert r.status_code == 404 and "user nobody" in err(r)["message"]
    r = await api.client.patch("/api/v1/groups/analysts", headers=h, json={"description": "BI team"})
    assert r.json() == {"name": "analysts", "description": "BI team", "members": ["bob"]}
    assert (await api.client.get("/api/v1/groups", headers=h)).json()["items"][0]["name"] == "analysts"
    assert (await api.client.get("/api/v1/groups/analysts", headers=h)).status_code == 200
    r = await api.client.post("/api/v1/roles", headers=h, json={"name": "dba", "members": ["group:analysts"]})
    assert r.status_code == 201
    r = await api.client.patch("/api/v1/roles/dba", headers=h, json={"members": ["user:root"]})
    assert r.json()["members"] == ["user:root"]
    assert (await api.client.get("/api/v1/roles?q=db", headers=h)).json()["items"][0]["name"] == "dba"
    assert (await api.client.get("/api/v1/roles/dba", headers=h)).status_code == 200
    assert (await api.client.delete("/api/v1/roles/dba", headers=h)).status_code == 204
    assert (await api.client.delete("/api/v1/groups/analysts", headers=h)).status_code == 204
    assert (await api.client.delete("/api/v1/groups/analysts", headers=h)).status_code == 404


async def test_connections_password_is_write_only(api: Api) -> None:
    h = api.h(api.admin_token)
    r = await api.client.post("/api/v1/connections", headers=h, json=CONN)
    assert r.status_code == 201, r.text
    assert r.json()["has_password"] is True and "password" not in r.json()
    r = await api.client.patch(
        "/api/v1/connections/sales", headers=h, json={"port": 5433, "password": "New-secret-7"}
    )
    assert r.json()["port"] == 5433
    listed = (await api.client.get("/api/v1/connections?engine=postgres", headers=h)).json()
    assert [c["name"] for c in listed["items"]] == ["sales"]
    assert (await api.client.get("/api/v1/connections?engine=mysql", headers=h)).json()["items"] == []
    got = (await api.client.get("/api/v1/connections/sales", headers=h)).json()
    assert got["database"] == "sales"
    for secret in ("Upstream-secret-9", "New-secret-7"):
        assert secret not in str(api.journal.records)
        assert secret not in str(listed) + str(got)
    r = await api.client.post(
        "/api/v1/connections", headers=h, json={**CONN, "name": "bad", "engine": "oracle"}
    )
    assert r.status_code == 422 and err(r)["message"].startswith("engine:")
    assert (await api.client.delete("/api/v1/connections/sales", headers=h)).status_code == 204


async def test_connection_test_reports_each_step(api: Api) -> None:
    h = api.h(api.admin_token)
    await api.client.post("/api/v1/connections", headers=h, json={**CONN, "port": 1})
    r = await api.client.post("/api/v1/connections/sales/test", headers=h)
    steps = r.json()
    assert [s["name"] for s in steps] == ["reachable", "tls", "login"]
    assert steps[0]["status"] == "fail" and "127.0.0.1:1" in steps[0]["detail"]


async def test_grants(api: Api) -> None:
    h = api.h(api.admin_token)
    await api.client.post("/api/v1/connections", headers=h, json=CONN)
    grant = {"name": "bob-sales", "subject": "user:bob", "connection": "sales", "privileges": ["read-only"]}
    r = await api.client.post("/api/v1/grants", headers=h, json=grant)
    assert r.status_code == 201, r.text
    r = await api.client.post("/api/v1/grants", headers=h, json={**grant, "name": "x", "connection": "nope"})
    assert r.status_code == 404 and "connection nope" in err(r)["message"]
    r = await api.client.patch(
        "/api/v1/grants/bob-sales",
        headers=h,
        json={"conditions": {"weekdays": ["mon"], "hours": "09:00-18:00"}},
    )
    assert r.status_code == 200 and r.json()["conditions"]["hours"] == "09:00-18:00"
    r = await api.client.patch("/api/v1/grants/bob-sales", headers=h, json={"conditions": {"hours": "9-5"}})
    assert r.status_code == 422
    assert (await api.client.get("/api/v1/grants?subject=user:bob", headers=h)).json()["items"][0][
        "name"
    ] == "bob-sales"
    assert (await api.client.get("/api/v1/grants?connection=other", headers=h)).json()["items"] == []
    assert (await api.client.get("/api/v1/grants/bob-sales", headers=h)).status_code == 200

    # bob sees his connection with ready-to-copy settings, only through /me
    mine = (await api.client.get("/api/v1/me/connections", headers=api.h(api.bob_token))).json()
    assert [c["name"] for c in mine] == ["sales"] and mine[0]["privileges"] == ["read-only"]
    assert mine[0]["settings"]["cli"].startswith(
        "psql 'host=127.0.0.1 port=15432 dbname=sales/sales user=bob'"
    )
    assert mine[0]["settings"]["jdbc"].startswith("jdbc:postgresql://127.0.0.1:15432/sales%2Fsales")
    assert (await api.client.delete("/api/v1/grants/bob-sales", headers=h)).status_code == 204
    assert (await api.client.get("/api/v1/me/connections", headers=api.h(api.bob_token))).json() == []


async def test_a_users_token_reaches_only_their_own_data(api: Api) -> None:
    for token in (api.bob_token, api.bob_admin_scope_token):
        h = api.h(token)
        for method, path in (
            ("GET", "/api/v1/users"),
            ("GET", "/api/v1/users/root"),
            ("POST", "/api/v1/users/root/password"),
            ("GET", "/api/v1/connections"),
            ("GET", "/api/v1/grants"),
            ("GET", "/api/v1/api-tokens"),
            ("GET", "/api/v1/sessions"),
            ("GET", "/api/v1/audit/events"),
            ("GET", "/api/v1/audit/export"),
            ("DELETE", "/api/v1/groups/x"),
        ):
            r = await api.client.request(method, path, headers=h, json={"password": "Whatever-pass-12"})
            assert r.status_code == 403, (method, path, r.text)
            assert "bob is not an administrator" in err(r)["message"]
    me = (await api.client.get("/api/v1/me", headers=api.h(api.bob_token))).json()
    assert me["username"] == "bob" and me["admin"] is False and me["scopes"] == ["self"]


async def test_scopes_narrow_an_administrators_token(api: Api) -> None:
    reader = await make_token(api.store, "reader", "root", ["read"])
    users_only = await make_token(api.store, "users", "root", ["users:write"])
    assert (await api.client.get("/api/v1/connections", headers=api.h(reader))).status_code == 200
    r = await api.client.post("/api/v1/groups", headers=api.h(reader), json={"name": "g"})
    assert r.status_code == 403 and "users:write" in err(r)["message"]
    assert (
        await api.client.post("/api/v1/groups", headers=api.h(users_only), json={"name": "g"})
    ).status_code == 201
    assert (await api.client.get("/api/v1/connections", headers=api.h(users_only))).status_code == 403
    r = await api.client.post("/api/v1/me/proxy-tokens", headers=api.h(reader), json={"name": "x"})
    assert r.status_code == 403 and "scope self" in err(r)["message"]


async def test_api_tokens_are_shown_once_and_hashed(api: Api) -> None:
    h = api.h(api.admin_token)
    r = await api.client.post(
        "/api/v1/api-tokens", headers=h, json={"name": "hr-sync", "user": "root", "scopes": ["users:write"]}
    )
    assert r.status_code == 201
    token = r.json()["token"]
    assert token.startswith("dbwa_") and r.json()["prefix"] == token[:12]
    listed = (await api.client.get("/api/v1/api-tokens?user=root", headers=h)).json()["items"]
    assert {t["name"] for t in listed} == {"hr-sync", "root-admin"} and "token" not in listed[0]
    assert (await api.client.get("/api/v1/api-tokens/hr-sync", headers=h)).json()["scopes"] == ["users:write"]
    assert token not in str(api.journal.records)
    assert (await api.client.get("/api/v1/users", headers=api.h(token))).status_code == 200
    r = await api.client.post(
        "/api/v1/api-tokens", headers=h, json={"name": "bad", "user": "root", "scopes": ["root"]}
    )
    assert r.status_code == 422
    assert (await api.client.delete("/api/v1/api-tokens/hr-sync", headers=h)).status_code == 204
    assert (await api.client.get("/api/v1/users", headers=api.h(token))).status_code == 401
    assert (await api.client.get("/api/v1/api-tokens/nope", headers=h)).status_code == 404


async def test_my_proxy_tokens(api: Api) -> None:
    h = api.h(api.bob_token)
    r = await api.client.post("/api/v1/me/proxy-tokens", headers=h, json={"name": "laptop"})
    assert r.status_code == 201 and r.json()["token"].startswith("dbw_")
    first = r.json()["token"]
    rotated = (await api.client.post("/api/v1/me/proxy-tokens", headers=h, json={"name": "laptop"})).json()[
        "token"
    ]
    assert rotated != first
    listed = (await api.client.get("/api/v1/me/proxy-tokens", headers=h)).json()
    assert [t["name"] for t in listed] == ["laptop"] and "token" not in listed[0]
    assert (await api.client.delete("/api/v1/me/proxy-tokens/laptop", headers=h)).status_code == 204
    assert (await api.client.delete("/api/v1/me/proxy-tokens/nope", headers=h)).status_code == 404
    # root's token list is not bob's
    assert (await api.client.get("/api/v1/me/proxy-tokens", headers=api.h(api.admin_token))).json() == []
    assert first not in str(api.journal.records) and rotated not in str(api.journal.records)


async def test_sessions_list_and_kill_unknown(api: Api) -> None:
    h = api.h(api.admin_token)
    assert (await api.client.get("/api/v1/sessions", headers=h)).json() == []
    r = await api.client.delete("/api/v1/sessions/abc", headers=h)
    assert r.status_code == 404 and "test-node" in err(r)["message"]


async def test_audit_search_and_export(api: Api) -> None:
    h = api.h(api.admin_token)
    for name in ("g1", "g2", "g3"):
        await api.client.post("/api/v1/groups", headers=h, json={"name": name})
    await api.sync_audit()
    r = await api.client.get("/api/v1/audit/events?type=admin.&limit=2", headers=h)
    page = r.json()
    assert [e["object_name"] for e in page["items"]] == ["g1", "g2"] and page["next_cursor"]
    r = await api.client.get(
        f"/api/v1/audit/events?type=admin.&limit=2&cursor={page['next_cursor']}", headers=h
    )
    assert [e["object_name"] for e in r.json()["items"]] == ["g3"]
    r = await api.client.get("/api/v1/audit/events?text=g2", headers=h)
    assert len(r.json()["items"]) == 1
    r = await api.client.get("/api/v1/audit/export?type=admin.&format=csv", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0].startswith("time,code,type,user") and len(r.text.splitlines()) == 4
    r = await api.client.get("/api/v1/audit/export?format=jsonl&user=root", headers=h)
    assert r.status_code == 200 and len(r.text.splitlines()) >= 3
    exports = api.journal.of_type("data.export")
    assert exports[0]["rows"] == 3 and exports[0]["filters"] == {"type": "admin."}
    assert (await api.client.get("/api/v1/audit/export?format=xml", headers=h)).status_code == 422


async def test_unknown_route_and_method_keep_the_error_shape(api: Api) -> None:
    r = await api.client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = await api.client.put("/api/v1/health")
    assert r.status_code == 405 and err(r)["code"] == "method_not_allowed"


async def test_listen_port_conflict_names_the_other_connection(api: Api) -> None:
    h = api.h(api.admin_token)
    assert (
        await api.client.post("/api/v1/connections", headers=h, json={**CONN, "listen_port": 25432})
    ).status_code == 201
    r = await api.client.post(
        "/api/v1/connections", headers=h, json={**CONN, "name": "b", "listen_port": 25432}
    )
    assert (
        r.status_code == 409 and err(r)["message"] == "listen port 25432 is already used by connection sales"
    )
    r = await api.client.patch("/api/v1/users/bob", headers=h, json={"allowed_ips": None})
    assert r.status_code == 200


async def test_policies_privilege_types_and_query_rules(api: Api) -> None:
    h = api.h(api.admin_token)
    r = await api.client.post(
        "/api/v1/privilege-types",
        headers=h,
        json={"name": "reporting", "kinds": ["SELECT"], "description": "BI"},
    )
    assert r.status_code == 201, r.text
    r = await api.client.post("/api/v1/privilege-types", headers=h, json={"name": "read-only"})
    assert r.status_code == 422 and "built-in" in err(r)["message"]
    rule = {
        "id": "no-drop",
        "match": "regex",
        "pattern": "(?i)^drop ",
        "action": "deny",
        "message": "No DROP here.",
    }
    assert (await api.client.post("/api/v1/query-rules", headers=h, json=rule)).status_code == 201
    r = await api.client.patch("/api/v1/query-rules/no-drop", headers=h, json={"enabled": False})
    assert r.json()["enabled"] is False
    r = await api.client.patch("/api/v1/query-rules/no-drop", headers=h, json={"pattern": "(unclosed"})
    assert r.status_code == 422
    assert [x["id"] for x in (await api.client.get("/api/v1/query-rules", headers=h)).json()["items"]] == [
        "no-drop"
    ]
    assert (await api.client.get("/api/v1/privilege-types/reporting", headers=h)).json()["kinds"] == [
        "SELECT"
    ]
    assert (await api.client.delete("/api/v1/query-rules/no-drop", headers=h)).status_code == 204
    assert (await api.client.delete("/api/v1/privilege-types/reporting", headers=h)).status_code == 204
    kinds = {(c["object_type"], c["action"]) for c in api.changes()}
    assert {("query rule", "create"), ("query rule", "update"), ("privilege type", "delete")} <= kinds
