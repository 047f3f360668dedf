"""PolicyEvaluator: grants, conditions, rules, connection settings, cache and explain."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest

from dbward.domain import ClientAddress, EngineType, Principal, SessionInfo, Statement, Target
from dbward.policy.evaluator import CompiledPolicy, PolicyEvaluator, StaticPolicySetProvider, explain
from dbward.policy.model import Effect, PolicySet, TimeWindow

# Wednesday 2026-01-07 12:00 UTC
NOON = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)

BOB = Principal(user_id=1, username="bob", roles=frozenset({"analyst"}))
ANN = Principal(user_id=2, username="ann", groups=frozenset({"dba"}))
EVE = Principal(user_id=3, username="eve")


def policy(**kw: Any) -> PolicySet:
    data: dict[str, Any] = {
        "version": 1,
        "grants": [
            {
                "name": "analysts-ro",
                "subject": "role:analyst",
                "connection": "prod",
                "privileges": ["read-only"],
                "scope": {"databases": ["sales"]},
            },
            {"name": "dba-all", "subject": "group:dba", "connection": "*", "privileges": ["admin"]},
        ],
        "connections": [
            {"connection": "prod", "engine": "mysql"},
            {"connection": "pg", "engine": "postgres"},
        ],
    }
    data.update(kw)
    return PolicySet.model_validate(data)


def target(name: str = "prod", engine: EngineType = EngineType.MYSQL) -> Target:
    return Target(id=1, name=name, engine=engine, host="db", port=3306, username="svc")


def session(
    p: Principal,
    *,
    conn: str = "prod",
    db: str | None = "sales",
    host: str = "10.1.2.3",
    engine: EngineType = EngineType.MYSQL,
    **attrs: str,
) -> SessionInfo:
    return SessionInfo(
        principal=p,
        target=target(conn, engine),
        client=ClientAddress(host=host, port=5000),
        database=db,
        attributes=dict(attrs),
    )


def decide(
    ps: PolicySet,
    p: Principal,
    sql: str,
    *,
    conn: str = "prod",
    db: str | None = "sales",
    host: str = "10.1.2.3",
    now: datetime = NOON,
    dialect: Any = "mysql",
    search_path: tuple[str, ...] = (),
) -> Any:
    e = explain(
        ps,
        principal=p,
        connection=conn,
        sql=sql,
        dialect=dialect,
        database=db,
        client_host=host,
        now=now,
        search_path=search_path,
    )
    return e.decision


# ---------------------------------------------------------------------------- grants


def test_read_only_role_reads_and_is_refused_writes_with_a_sentence() -> None:
    ps = policy()
    d = decide(ps, BOB, "SELECT * FROM orders")
    assert d.effect is Effect.ALLOW and d.rule_ids == ("grant:analysts-ro",)
    d = decide(ps, BOB, "DELETE FROM orders WHERE id = 1")
    assert d.effect is Effect.DENY
    assert (
        d.message
        == "denied: role analyst has read-only on sales; DELETE on table sales.orders needs read-write"
    )
    assert d.rule_ids == ("grant:analysts-ro",)
    for sql in (
        "INSERT INTO orders VALUES (1)",
        "UPDATE orders SET a = 1 WHERE id = 1",
        "DROP TABLE orders",
        "CREATE TABLE x (id INT)",
        "TRUNCATE orders",
        "CALL p()",
        "GRANT ALL ON *.* TO x",
    ):
        assert decide(ps, BOB, sql).effect is Effect.DENY, sql


def test_writes_hidden_anywhere_are_refused() -> None:
    ps = policy()
    for sql in (
        "SELECT 1; DELETE FROM orders WHERE id = 1",
        "SELECT 1 /*!50000 ; DELETE FROM orders */",
        "EXPLAIN ANALYZE DELETE FROM orders",
        "PREPARE s FROM 'DELETE FROM orders'",
        "SELECT my_func(1) FROM orders",
    ):
        assert decide(ps, BOB, sql).effect is Effect.DENY, sql
    assert (
        decide(
            ps,
            BOB,
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            conn="pg",
            db="sales",
            dialect="postgres",
        ).effect
        is Effect.DENY
    )


def test_read_of_an_ungranted_database_is_refused() -> None:
    d = decide(policy(), BOB, "SELECT * FROM hr.salaries")
    assert d.effect is Effect.DENY
    assert "no grant of user bob on connection prod covers table hr.salaries" in d.message


def test_objectless_statements_need_the_kind_somewhere() -> None:
    ps = policy()
    for sql in ("SELECT 1", "BEGIN", "SET NAMES utf8mb4", "SHOW TABLES", "USE sales", "COMMIT"):
        assert decide(ps, BOB, sql).effect is Effect.ALLOW, sql
    assert decide(ps, BOB, "USE hr").effect is Effect.DENY
    d = decide(ps, BOB, "SET GLOBAL max_connections = 1")
    assert d.effect is Effect.DENY and "SET GLOBAL" in d.message and "admin" in d.message


def test_no_grant_is_default_deny() -> None:
    d = decide(policy(), EVE, "SELECT 1")
    assert d.effect is Effect.DENY and d.rule_ids == ("default:deny",)
    assert "user eve has no grant on connection prod" in d.message


def test_every_object_of_a_multi_object_statement_must_be_covered() -> None:
    ps = policy(
        grants=[
            {
                "name": "rw-sales",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-write"],
                "scope": {"databases": ["sales"]},
            },
            {
                "name": "ro-crm",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-only"],
                "scope": {"databases": ["crm"]},
            },
        ]
    )
    d = decide(ps, BOB, "INSERT INTO sales.copy SELECT * FROM crm.customers")
    assert d.effect is Effect.ALLOW and set(d.rule_ids) == {"grant:rw-sales", "grant:ro-crm"}
    d = decide(ps, BOB, "INSERT INTO crm.customers SELECT * FROM sales.orders")
    assert d.effect is Effect.DENY and "INSERT on table crm.customers needs read-write" in d.message


def test_glob_patterns_for_databases_schemas_and_tables() -> None:
    ps = policy(
        grants=[
            {
                "name": "g-db",
                "subject": "user:bob",
                "connection": "prod*",
                "privileges": ["read-only"],
                "scope": {"databases": ["sales_*"]},
            },
            {
                "name": "g-tab",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-write"],
                "scope": {"tables": ["app.audit_*", "scratch"]},
            },
            {
                "name": "g-schema",
                "subject": "user:bob",
                "connection": "pg",
                "privileges": ["read-only"],
                "scope": {"databases": ["appdb"], "schemas": ["report?"]},
            },
        ]
    )
    assert decide(ps, BOB, "SELECT * FROM sales_eu.orders").effect is Effect.ALLOW
    assert decide(ps, BOB, "SELECT * FROM SALES_EU.orders").effect is Effect.ALLOW  # case-insensitive
    assert decide(ps, BOB, "SELECT * FROM sales.orders").effect is Effect.DENY
    assert decide(ps, BOB, "SELECT * FROM sales_eu.orders", conn="prod-replica").effect is Effect.ALLOW
    assert decide(ps, BOB, "INSERT INTO app.audit_2026 VALUES (1)").effect is Effect.ALLOW
    assert decide(ps, BOB, "INSERT INTO app.orders VALUES (1)").effect is Effect.DENY
    assert decide(ps, BOB, "DELETE FROM other.scratch WHERE id = 1").effect is Effect.ALLOW  # bare name
    assert decide(ps, BOB, "USE app").effect is Effect.ALLOW  # table grants allow USE of their database
    pg: dict[str, Any] = {"conn": "pg", "db": "appdb", "dialect": "postgres"}
    assert decide(ps, BOB, "SELECT * FROM report1.t", **pg).effect is Effect.ALLOW
    assert decide(ps, BOB, "SELECT * FROM t", search_path=("report2",), **pg).effect is Effect.ALLOW
    assert decide(ps, BOB, "SELECT * FROM t", **pg).effect is Effect.DENY  # public
    assert (
        decide(ps, BOB, "SELECT * FROM report1.t", conn="pg", db="otherdb", dialect="postgres").effect
        is Effect.DENY
    )


def test_custom_privilege_types() -> None:
    ps = policy(
        privilege_types=[
            {"name": "append-only", "kinds": ["INSERT", "select"]},
            {"name": "ops", "includes": ["read-only"], "kinds": ["MAINTENANCE", "set_global"]},
        ],
        grants=[
            {"name": "g1", "subject": "user:bob", "connection": "prod", "privileges": ["append-only"]},
            {"name": "g2", "subject": "user:ann", "connection": "prod", "privileges": ["ops"]},
        ],
    )
    assert decide(ps, BOB, "INSERT INTO log VALUES (1)").effect is Effect.ALLOW
    d = decide(ps, BOB, "UPDATE log SET a = 1 WHERE id = 1")
    assert d.effect is Effect.DENY and "user bob has append-only on the whole connection" in d.message
    assert decide(ps, ANN, "OPTIMIZE TABLE t").effect is Effect.ALLOW
    assert decide(ps, ANN, "SET GLOBAL x = 1").effect is Effect.ALLOW
    assert decide(ps, ANN, "SELECT * FROM t").effect is Effect.ALLOW
    with pytest.raises(ValueError, match="unknown privilege type"):
        policy(grants=[{"name": "g", "subject": "user:x", "connection": "c", "privileges": ["nope"]}])
    with pytest.raises(ValueError, match="unknown statement kind"):
        policy(privilege_types=[{"name": "x", "kinds": ["FLY"]}])


def test_opaque_statements_need_the_whole_connection() -> None:
    ps = policy(
        grants=[
            {
                "name": "ddl-sales",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-write", "ddl"],
                "scope": {"databases": ["sales"]},
            },
        ]
    )
    assert decide(ps, BOB, "CREATE TABLE t (id INT)").effect is Effect.ALLOW
    d = decide(ps, BOB, "OPTIMIZE TABLE t")  # objects not read: needs the whole connection
    assert d.effect is Effect.DENY and "whole connection prod" in d.message


# ---------------------------------------------------------------------------- conditions


def test_expiry_and_validity() -> None:
    ps = policy(
        grants=[
            {
                "name": "temp",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-only"],
                "conditions": {"valid_from": "2026-01-01T00:00:00Z", "valid_until": "2026-01-07T11:00:00Z"},
            },
        ]
    )
    d = decide(ps, BOB, "SELECT 1")
    assert d.effect is Effect.DENY and "grant temp expired at 2026-01-07T11:00:00+00:00" in d.message
    assert d.rule_ids == ("grant:temp",)
    assert decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 5, tzinfo=UTC)).effect is Effect.ALLOW
    d = decide(ps, BOB, "SELECT 1", now=datetime(2025, 12, 31, tzinfo=UTC))
    assert d.effect is Effect.DENY and "not valid before" in d.message
    cp = CompiledPolicy(ps)
    from dbward.policy.evaluator import decide_connection

    assert decide_connection(cp, BOB, "prod", "1.2.3.4", NOON).effect is Effect.DENY
    assert (
        decide_connection(cp, BOB, "prod", "1.2.3.4", datetime(2026, 1, 5, tzinfo=UTC)).effect is Effect.ALLOW
    )


def test_time_window_in_a_time_zone() -> None:
    # 09:00-17:00 on weekdays in New York (UTC-5 in January)
    ps = policy(
        grants=[
            {
                "name": "office",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-only"],
                "conditions": {
                    "windows": [
                        {
                            "weekdays": "mon,tue,wed,thu,fri",
                            "start": "09:00",
                            "end": "17:00",
                            "timezone": "America/New_York",
                        }
                    ]
                },
            },
        ]
    )
    assert decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 7, 14, 30, tzinfo=UTC)).effect is Effect.ALLOW
    d = decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 7, 13, 59, tzinfo=UTC))  # 08:59 in New York
    assert (
        d.effect is Effect.DENY
        and "applies only mon,tue,wed,thu,fri 09:00-17:00 America/New_York" in d.message
    )
    assert decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 7, 21, 59, tzinfo=UTC)).effect is Effect.ALLOW
    assert decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 7, 22, 0, tzinfo=UTC)).effect is Effect.DENY
    # Saturday noon in New York
    assert decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 10, 17, 0, tzinfo=UTC)).effect is Effect.DENY


def test_time_window_end_is_exclusive() -> None:
    w = TimeWindow(start=time(9), end=time(17), timezone="America/New_York")
    assert not w.contains(datetime(2026, 1, 7, 22, 0, tzinfo=UTC))  # 17:00 New York
    assert w.contains(datetime(2026, 1, 7, 21, 59, tzinfo=UTC))


def test_time_window_crossing_midnight() -> None:
    # Monday 22:00 to Tuesday 06:00 in Tokyo (UTC+9)
    w = TimeWindow.model_validate(
        {"weekdays": ["mon"], "start": time(22), "end": time(6), "timezone": "Asia/Tokyo"}
    )
    from zoneinfo import ZoneInfo

    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2026, 1, day, hour, minute, tzinfo=ZoneInfo("Asia/Tokyo"))

    assert at(5, 12).weekday() == 0  # 5 January 2026 is a Monday
    assert w.contains(at(5, 22, 0))  # Monday 22:00
    assert w.contains(at(5, 23, 59))
    assert w.contains(at(6, 0, 0))  # Tuesday 00:00
    assert w.contains(at(6, 5, 59))
    assert not w.contains(at(6, 6, 0))  # Tuesday 06:00: closed
    assert not w.contains(at(6, 22, 30))  # Tuesday night is not in the window
    assert not w.contains(at(5, 21, 59))
    assert not w.contains(at(5, 3, 0))  # Monday early morning belongs to Sunday's night
    # the same moments seen from UTC
    assert w.contains(datetime(2026, 1, 5, 14, 0, tzinfo=UTC))  # Monday 23:00 Tokyo
    ps = policy(
        grants=[
            {
                "name": "night",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-only"],
                "conditions": {"windows": [w.model_dump()]},
            },
        ]
    )
    assert decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 5, 14, 0, tzinfo=UTC)).effect is Effect.ALLOW
    assert decide(ps, BOB, "SELECT 1", now=datetime(2026, 1, 5, 23, 0, tzinfo=UTC)).effect is Effect.DENY


def test_whole_day_window_and_bad_time_zone() -> None:
    w = TimeWindow(weekdays=(6,))
    assert w.contains(datetime(2026, 1, 11, 23, 59, tzinfo=UTC))  # Sunday
    assert not w.contains(datetime(2026, 1, 12, 0, 0, tzinfo=UTC))
    with pytest.raises(ValueError, match="unknown time zone"):
        TimeWindow(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="unknown weekday"):
        TimeWindow.model_validate({"weekdays": ["funday"]})


def test_client_ip_ranges() -> None:
    ps = policy(
        grants=[
            {
                "name": "vpn",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-only"],
                "conditions": {"client_ips": ["10.0.0.0/8", "2001:db8::/32"]},
            },
        ]
    )
    assert decide(ps, BOB, "SELECT 1", host="10.9.8.7").effect is Effect.ALLOW
    assert decide(ps, BOB, "SELECT 1", host="::ffff:10.9.8.7").effect is Effect.ALLOW
    assert decide(ps, BOB, "SELECT 1", host="2001:db8::1").effect is Effect.ALLOW
    d = decide(ps, BOB, "SELECT 1", host="192.168.1.1")
    assert (
        d.effect is Effect.DENY
        and "applies only from 10.0.0.0/8, 2001:db8::/32; the client is 192.168.1.1" in d.message
    )
    assert decide(ps, BOB, "SELECT 1", host="not-an-ip").effect is Effect.DENY
    cp = CompiledPolicy(ps)
    from dbward.policy.evaluator import decide_connection

    assert decide_connection(cp, BOB, "prod", "192.168.1.1", NOON).effect is Effect.DENY
    assert decide_connection(cp, BOB, "prod", "10.0.0.1", NOON).effect is Effect.ALLOW
    assert decide_connection(cp, EVE, "prod", "10.0.0.1", NOON).rule_ids == ("default:deny",)


# ---------------------------------------------------------------------------- rules


def test_rules_in_priority_order_first_match_wins() -> None:
    ps = policy(
        rules=[
            {
                "id": "deny-secrets",
                "priority": 20,
                "match": "regex",
                "pattern": r"\bsecrets?\b",
                "action": "deny",
                "message": "secrets are off limits",
            },
            {
                "id": "allow-health",
                "priority": 10,
                "match": "exact",
                "pattern": "SELECT * FROM secret_health",
                "action": "allow",
            },
            {
                "id": "approve-big",
                "priority": 30,
                "match": "fingerprint",
                "pattern": "SELECT * FROM orders WHERE id IN (?+)",
                "action": "require_approval",
            },
        ]
    )
    d = decide(ps, BOB, "SELECT * FROM secrets")
    assert d.effect is Effect.DENY and d.rule_ids == ("rule:deny-secrets",)
    assert d.message == "denied by rule deny-secrets: secrets are off limits"
    assert decide(ps, BOB, "SELECT * FROM secret_health;").effect is Effect.ALLOW  # exact, before the deny
    d = decide(ps, BOB, "select * from ORDERS where id in (1,2,3)")
    assert d.effect is Effect.REQUIRE_APPROVAL and "rule:approve-big" in d.rule_ids
    # reversing priorities changes the outcome
    ps2 = policy(
        rules=[
            {
                "id": "allow-all-selects",
                "priority": 1,
                "match": "regex",
                "pattern": "^select",
                "action": "allow",
            },
            {"id": "deny-secrets", "priority": 2, "match": "regex", "pattern": "secret", "action": "deny"},
        ]
    )
    assert decide(ps2, BOB, "SELECT * FROM secrets").effect is Effect.ALLOW
    # an allow rule does not replace grants
    d = decide(ps2, BOB, "SELECT * FROM hr.salaries")
    assert d.effect is Effect.DENY and "covers table hr.salaries" in d.message


def test_rules_target_connections_and_subjects() -> None:
    ps = policy(
        rules=[
            {
                "id": "analysts-no-star",
                "match": "regex",
                "pattern": r"select\s+\*",
                "action": "deny",
                "connection": "prod",
                "subjects": ["role:analyst"],
            },
            {"id": "off", "match": "regex", "pattern": ".", "action": "deny", "enabled": False},
        ]
    )
    assert decide(ps, BOB, "SELECT * FROM orders").effect is Effect.DENY
    assert decide(ps, BOB, "SELECT id FROM orders").effect is Effect.ALLOW
    assert decide(ps, ANN, "SELECT * FROM orders").effect is Effect.ALLOW  # not an analyst
    assert decide(ps, ANN, "SELECT * FROM orders", conn="other").effect is Effect.ALLOW


def test_fingerprint_rule_by_hash() -> None:
    from dbward.sql import analyze

    h = analyze("DELETE FROM orders WHERE id = 1", "mysql").fingerprint_hash
    ps = policy(rules=[{"id": "by-hash", "match": "fingerprint", "pattern": h, "action": "deny"}])
    assert decide(ps, ANN, "delete from orders where id = 99").effect is Effect.DENY
    assert decide(ps, ANN, "DELETE FROM orders WHERE name = 'x' AND id = 1").effect is Effect.ALLOW


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid regular expression"):
        policy(rules=[{"id": "x", "match": "regex", "pattern": "(", "action": "deny"}])
    with pytest.raises(ValueError, match="used twice"):
        policy(
            rules=[
                {"id": "x", "match": "exact", "pattern": "a", "action": "deny"},
                {"id": "x", "match": "exact", "pattern": "b", "action": "deny"},
            ]
        )


# ---------------------------------------------------------------------------- connection settings


def test_unknown_statements_are_denied_unless_allowed() -> None:
    ps = policy()
    d = decide(ps, ANN, "FROBNICATE everything")
    assert d.effect is Effect.DENY and d.rule_ids == ("connection:prod:unknown",)
    assert "could not analyse" in d.message and "allow_unknown is off" in d.message
    ps = policy(connections=[{"connection": "prod", "allow_unknown": True}])
    assert decide(ps, ANN, "FROBNICATE everything").effect is Effect.ALLOW  # admin on the whole connection
    assert decide(ps, BOB, "FROBNICATE everything").effect is Effect.DENY  # read-only cannot
    # an allow rule vouches for a text the analyser cannot read
    ps = policy(
        rules=[{"id": "vendor-cmd", "match": "exact", "pattern": "FROBNICATE everything", "action": "allow"}]
    )
    assert decide(ps, BOB, "FROBNICATE everything").effect is Effect.ALLOW


def test_procedural_blocks() -> None:
    ps = policy()
    d = decide(ps, ANN, "DO $$ BEGIN DELETE FROM t; END $$", conn="pg", dialect="postgres")
    assert d.effect is Effect.DENY and "allow_procedural is off" in d.message
    ps = policy(connections=[{"connection": "pg", "allow_procedural": True}])
    assert decide(ps, ANN, "DO $$ BEGIN NULL; END $$", conn="pg", dialect="postgres").effect is Effect.ALLOW


def test_approval_required_kinds_and_unfiltered_writes() -> None:
    ps = policy(
        connections=[
            {
                "connection": "prod",
                "approval_required": ["DROP", "truncate", "DELETE WITHOUT WHERE", "update_without_where"],
            }
        ]
    )
    d = decide(ps, ANN, "DROP TABLE x")
    assert d.effect is Effect.REQUIRE_APPROVAL and d.rule_ids[0] == "connection:prod:approval:DROP"
    assert "connection prod requires approval for DROP" in d.message
    assert decide(ps, ANN, "TRUNCATE t").effect is Effect.REQUIRE_APPROVAL
    assert decide(ps, ANN, "DELETE FROM t").effect is Effect.REQUIRE_APPROVAL
    assert decide(ps, ANN, "DELETE FROM t WHERE id = 1").effect is Effect.ALLOW
    assert decide(ps, ANN, "UPDATE t SET a = 1").effect is Effect.REQUIRE_APPROVAL
    assert decide(ps, ANN, "SELECT 1; DROP TABLE x").effect is Effect.REQUIRE_APPROVAL
    # a read-only user is denied, not sent for approval
    assert decide(ps, BOB, "DROP TABLE orders").effect is Effect.DENY
    with pytest.raises(ValueError):
        policy(connections=[{"connection": "prod", "approval_required": ["NOPE"]}])


def test_ledger_tables() -> None:
    ps = policy(connections=[{"connection": "prod", "ledger_tables": ["sales.ledger*", "payments"]}])
    d = decide(ps, ANN, "UPDATE ledger_2026 SET a = 1 WHERE id = 1")
    assert d.effect is Effect.REQUIRE_APPROVAL and d.rule_ids[0] == "connection:prod:ledger"
    assert "(sales.ledger_2026)" in d.message
    assert decide(ps, ANN, "INSERT INTO billing.payments VALUES (1)").effect is Effect.REQUIRE_APPROVAL
    assert decide(ps, ANN, "SELECT * FROM ledger_2026").effect is Effect.ALLOW
    assert decide(ps, ANN, "UPDATE other SET a = 1 WHERE id = 1").effect is Effect.ALLOW
    assert (
        decide(ps, ANN, "WITH x AS (SELECT 1) DELETE FROM ledger WHERE id = 1").effect
        is Effect.REQUIRE_APPROVAL
    )


def test_row_limit() -> None:
    ps = policy(connections=[{"connection": "prod", "max_rows": 500}])
    d = decide(ps, BOB, "SELECT * FROM orders")
    assert d.effect is Effect.ALLOW and d.row_limit == 500 and "at most 500 rows" in d.message
    assert decide(ps, BOB, "SELECT * FROM orders", conn="other").row_limit is None


def test_connection_settings_by_glob() -> None:
    ps = policy(connections=[{"connection": "prod*", "max_rows": 10}, {"connection": "prod", "max_rows": 20}])
    assert decide(ps, ANN, "SELECT 1").row_limit == 20  # exact name first
    assert decide(ps, ANN, "SELECT 1", conn="prod-eu").row_limit == 10


def test_function_calls_as_reads() -> None:
    ps = policy(connections=[{"connection": "prod", "function_calls": "read"}])
    assert decide(ps, BOB, "SELECT my_func(1) FROM orders").effect is Effect.ALLOW
    assert decide(ps, BOB, "CALL p()").effect is Effect.DENY
    assert decide(policy(), BOB, "SELECT my_func(1) FROM orders").effect is Effect.DENY


def test_file_access_needs_admin() -> None:
    ps = policy(
        grants=[
            {"name": "rw", "subject": "user:bob", "connection": "prod", "privileges": ["read-write"]},
        ]
    )
    d = decide(ps, BOB, "SELECT * FROM t INTO OUTFILE '/tmp/x'")
    assert d.effect is Effect.DENY and "FILE needs admin" in d.message
    assert decide(ps, BOB, "LOAD DATA LOCAL INFILE 'x' INTO TABLE t").effect is Effect.DENY
    assert decide(policy(), ANN, "LOAD DATA LOCAL INFILE 'x' INTO TABLE t").effect is Effect.ALLOW


# ---------------------------------------------------------------------------- the decider and its cache


class Provider:
    def __init__(self, ps: PolicySet) -> None:
        self.ps = ps
        self.calls = 0

    async def current(self) -> PolicySet:
        self.calls += 1
        return self.ps


async def test_decider_protocol_and_cache_hits() -> None:
    prov = Provider(policy(connections=[{"connection": "prod", "max_rows": 5}]))
    ev = PolicyEvaluator(prov, clock=lambda: NOON)
    s = session(BOB)
    assert (await ev.decide_connection(BOB, target(), "10.0.0.1")).effect is Effect.ALLOW
    d1 = await ev.decide_statement(s, Statement(sql="SELECT * FROM orders WHERE id = 1"))
    d2 = await ev.decide_statement(s, Statement(sql="SELECT * FROM orders WHERE id = 2"))
    assert d1.effect is Effect.ALLOW and d1.row_limit == 5
    assert d2 is d1 and ev.hits == 1 and ev.misses == 1  # same fingerprint, same decision
    d3 = await ev.decide_statement(s, Statement(sql="DELETE FROM orders WHERE id = 2"))
    assert d3.effect is Effect.DENY and ev.misses == 2
    # the statement's database wins over the session's
    d4 = await ev.decide_statement(s, Statement(sql="SELECT * FROM orders WHERE id = 1", database="hr"))
    assert d4.effect is Effect.DENY


async def test_cache_is_invalidated_by_a_new_version() -> None:
    prov = Provider(policy())
    ev = PolicyEvaluator(prov, clock=lambda: NOON)
    s = session(BOB)
    assert (
        await ev.decide_statement(s, Statement(sql="DELETE FROM orders WHERE id = 1"))
    ).effect is Effect.DENY
    assert ev.cache_len == 1
    prov.ps = policy(
        version=2,
        grants=[
            {"name": "rw", "subject": "role:analyst", "connection": "prod", "privileges": ["read-write"]},
        ],
    )
    d = await ev.decide_statement(s, Statement(sql="DELETE FROM orders WHERE id = 1"))
    assert d.effect is Effect.ALLOW and d.rule_ids == ("grant:rw",)
    assert ev.cache_len == 1


async def test_cache_respects_time_windows_and_client_addresses() -> None:
    now = [datetime(2026, 1, 7, 16, 59, tzinfo=UTC)]
    ps = policy(
        grants=[
            {
                "name": "office",
                "subject": "user:bob",
                "connection": "prod",
                "privileges": ["read-only"],
                "conditions": {"windows": [{"start": "09:00", "end": "17:00"}], "client_ips": ["10.0.0.0/8"]},
            },
        ]
    )
    ev = PolicyEvaluator(Provider(ps), clock=lambda: now[0])
    stmt = Statement(sql="SELECT * FROM orders WHERE id = 1")
    assert (await ev.decide_statement(session(BOB), stmt)).effect is Effect.ALLOW
    now[0] = datetime(2026, 1, 7, 17, 0, tzinfo=UTC)  # the window closes
    d = await ev.decide_statement(session(BOB), stmt)
    assert d.effect is Effect.DENY and "applies only" in d.message
    now[0] = datetime(2026, 1, 8, 10, 0, tzinfo=UTC)
    assert (await ev.decide_statement(session(BOB), stmt)).effect is Effect.ALLOW
    assert (await ev.decide_statement(session(BOB, host="192.168.0.1"), stmt)).effect is Effect.DENY


async def test_cache_keeps_text_rules_exact() -> None:
    ps = policy(rules=[{"id": "no-42", "match": "regex", "pattern": r"id = 42\b", "action": "deny"}])
    ev = PolicyEvaluator(Provider(ps), clock=lambda: NOON)
    s = session(BOB)
    assert (await ev.decide_statement(s, Statement(sql="SELECT * FROM orders WHERE id = 1"))).allowed
    assert not (await ev.decide_statement(s, Statement(sql="SELECT * FROM orders WHERE id = 42"))).allowed
    # statements the regex does not match share one decision whatever their literals
    misses = ev.misses
    for n in (2, 3, 4):
        assert (await ev.decide_statement(s, Statement(sql=f"SELECT * FROM orders WHERE id = {n}"))).allowed
    assert ev.misses == misses
    assert not (await ev.decide_statement(s, Statement(sql="SELECT * FROM orders WHERE id = 42"))).allowed


async def test_cache_cannot_be_poisoned_by_a_hidden_reading() -> None:
    # same primary fingerprint ("SELECT ?"), but the second hides a DELETE for
    # NO_BACKSLASH_ESCAPES servers: it must not reuse the first decision
    ev = PolicyEvaluator(Provider(policy()), clock=lambda: NOON)
    s = session(BOB)
    assert (await ev.decide_statement(s, Statement(sql="SELECT 'abc'"))).allowed
    d = await ev.decide_statement(s, Statement(sql="SELECT 'a\\'; DELETE FROM orders; -- '"))
    assert d.effect is Effect.DENY


async def test_cache_separates_subjects_and_search_paths() -> None:
    ps = policy(
        grants=[
            {
                "name": "pg-reports",
                "subject": "role:analyst",
                "connection": "pg",
                "privileges": ["read-only"],
                "scope": {"schemas": ["reports"]},
            },
        ]
    )
    ev = PolicyEvaluator(Provider(ps), clock=lambda: NOON, cache_size=2)
    stmt = Statement(sql="SELECT * FROM t")
    pgs = {"conn": "pg", "engine": EngineType.POSTGRES, "db": "appdb"}
    assert (await ev.decide_statement(session(BOB, search_path="reports", **pgs), stmt)).allowed  # type: ignore[arg-type]
    assert not (await ev.decide_statement(session(BOB, **pgs), stmt)).allowed  # type: ignore[arg-type]
    assert not (await ev.decide_statement(session(EVE, search_path="reports", **pgs), stmt)).allowed  # type: ignore[arg-type]
    assert ev.cache_len == 2  # bounded


async def test_static_provider() -> None:
    ev = PolicyEvaluator(StaticPolicySetProvider(policy()), clock=lambda: NOON)
    assert (await ev.decide_connection(EVE, target(), "10.0.0.1")).rule_ids == ("default:deny",)


# ---------------------------------------------------------------------------- explain


def test_explain_trace() -> None:
    ps = policy(
        grants=[
            {
                "name": "analysts-ro",
                "subject": "role:analyst",
                "connection": "prod",
                "privileges": ["read-only"],
                "scope": {"databases": ["sales"]},
            },
            {
                "name": "old",
                "subject": "role:analyst",
                "connection": "prod",
                "privileges": ["read-write"],
                "conditions": {"valid_until": "2020-01-01T00:00:00Z"},
            },
        ],
        rules=[{"id": "r1", "match": "regex", "pattern": "zzz", "action": "deny"}],
    )
    e = explain(
        ps,
        principal=BOB,
        connection="prod",
        sql="DELETE FROM orders WHERE id = 1",
        dialect="mysql",
        database="sales",
        now=NOON,
    )
    assert e.decision.effect is Effect.DENY
    text = e.render()
    assert "grant analysts-ro: applies" in text
    assert "grant old: does not apply now: grant old expired at 2020-01-01" in text
    assert "rules: none matches" in text
    assert "coverage: DELETE on table sales.orders is not covered" in text
    assert "fingerprint: DELETE FROM orders WHERE id = ?" in text
