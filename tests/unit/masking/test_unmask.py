"""Approved unmask requests in the masking plan and the evaluator: a column is shown in clear
for its requester only during the request's period, the decision names the request, the
decision cache never keeps an ended exemption, and copying the clear values stays refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from dbward.domain import ClientAddress, EngineType, Principal, SessionInfo, Statement, Target
from dbward.masking.plan import CompiledMasking, plan_masking, wire_mask_columns
from dbward.masking.rules import MaskingConfig, Unmask
from dbward.policy.evaluator import PolicyEvaluator, StaticCatalogProvider, StaticPolicySetProvider
from dbward.policy.model import Effect, PolicySet
from dbward.sql.lineage import output_lineage
from tests.unit.masking.corpus import MASKING, MYSQL_CATALOG, POSTGRES_CATALOG

ALICE = Principal(user_id=1, username="alice", groups=frozenset({"analysts"}))
BOB = Principal(user_id=2, username="bob")
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
BEFORE, DURING, AFTER = START - timedelta(minutes=1), START + timedelta(hours=1), END


def _unmask(**kw: object) -> Unmask:
    data: dict[str, object] = {
        "request_id": 7,
        "user": "alice",
        "connection": "prod",
        "schema": "shop",
        "table": "customers",
        "column": "phone",
        "valid_from": START,
        "valid_until": END,
    }
    data.update(kw)
    return Unmask.model_validate(data)


def _compiled(*unmasks: Unmask) -> CompiledMasking:
    cfg = MaskingConfig.model_validate(MASKING)
    return CompiledMasking(cfg.patterns, cfg.rules, unmasks)


def _plan(cm: CompiledMasking, sql: str, now: datetime | None, principal: Principal = ALICE):  # type: ignore[no-untyped-def]
    view = cm.view(principal, "prod", "192.0.2.1", now)
    assert view is not None
    lin = output_lineage(sql, "mysql", catalog=MYSQL_CATALOG, database="shop")
    return view, plan_masking(
        view,
        lin,
        principal=principal,
        connection="prod",
        catalog=MYSQL_CATALOG,
        writes_data=False,
        database="shop",
    )


def test_plan_before_during_and_after_the_period() -> None:
    cm = _compiled(_unmask())
    sql = "SELECT id, phone, email FROM customers"
    _, before = _plan(cm, sql, BEFORE)
    assert before.plan is not None and set(before.plan.columns) == {1, 2}
    assert not before.cleared and "unmask:7" not in before.rule_ids

    view, during = _plan(cm, sql, DURING)
    assert during.plan is not None and set(during.plan.columns) == {2}  # email stays masked
    assert during.cleared == (
        "column shop.customers.phone shown in clear by approved unmask request #7 until 2026-03-02 11:00:00 UTC",
    )
    assert "unmask:7" in during.rule_ids and "unmask:7" not in during.plan.rule_ids
    assert "shop.customers.phone" not in during.plan.by_source  # the wire cross-check agrees
    assert "shop.customers.email" in during.plan.by_source
    assert "unmask:7" in ":".join(view.key)

    _, after = _plan(cm, sql, AFTER)  # valid_until is exclusive
    assert after.plan is not None and set(after.plan.columns) == {1, 2} and not after.cleared


def test_only_the_requester_and_only_the_named_columns_and_connection() -> None:
    cm = _compiled(_unmask())
    _, other_user = _plan(cm, "SELECT phone FROM customers", DURING, BOB)
    assert other_user.plan is not None and 0 in other_user.plan.columns
    assert cm.view(ALICE, "staging", "192.0.2.1", DURING) is None or not cm.unmasks_for(
        ALICE, "staging", DURING
    )
    # no moment given: never assumed
    view = cm.view(ALICE, "prod", "192.0.2.1")
    assert view is not None and view.exemptions == ()
    # derived values of the cleared column are clear too; other masked sources still mask
    _, derived = _plan(cm, "SELECT concat(phone, '-', name), concat(phone, email) FROM customers", DURING)
    assert derived.plan is not None and set(derived.plan.columns) == {1}
    assert derived.plan.columns[1].sources == ("shop.customers.email",)


def test_globs_and_an_unknown_database_clear_less() -> None:
    cm = _compiled(_unmask(schema="*", table="cust*", column="*"))
    _, out = _plan(cm, "SELECT phone, email, rrn FROM customers", DURING)
    assert out.plan is None and len(out.cleared) == 1
    assert "columns shop.customers.email, shop.customers.phone, shop.customers.rrn" in out.cleared[0]
    # a named database needs the source's database to be known
    cm2 = _compiled(_unmask(database="shop"))
    view = cm2.view(ALICE, "prod", "192.0.2.1", DURING)
    assert view is not None
    from dbward.sql.lineage import SourceColumn

    assert view.rule_for(SourceColumn("shop", "shop", "customers", "phone")) is None
    assert view.rule_for(SourceColumn(None, "shop", "customers", "phone")) is not None


def test_inference_on_a_cleared_column_is_allowed_and_copying_it_is_not() -> None:
    cm = _compiled(_unmask())
    _, filt = _plan(cm, "SELECT id FROM customers WHERE phone LIKE '010%'", DURING)
    assert filt.denial is None
    assert any("shop.customers.phone shown in clear" in c for c in filt.cleared)
    view = cm.view(ALICE, "prod", "192.0.2.1", DURING)
    assert view is not None
    lin = output_lineage(
        "INSERT INTO archive (a) SELECT phone FROM customers", "mysql", catalog=MYSQL_CATALOG, database="shop"
    )
    out = plan_masking(
        view,
        lin,
        principal=ALICE,
        connection="prod",
        catalog=MYSQL_CATALOG,
        writes_data=True,
        database="shop",
    )
    assert out.denial is not None and "does not allow copying them" in out.denial
    assert "approved unmask request #7" in out.denial and "unmask:7" in out.rule_ids


def test_wire_origins_honour_the_exemption() -> None:
    cm = _compiled(_unmask(schema="public"))
    view = cm.view(ALICE, "prod", "192.0.2.1", DURING)
    assert view is not None
    lin = output_lineage(
        "SELECT id, email FROM customers", "postgres", catalog=POSTGRES_CATALOG, database="shop"
    )
    out = plan_masking(
        view, lin, principal=ALICE, connection="prod", catalog=POSTGRES_CATALOG, database="shop"
    )
    assert out.plan is not None
    cols = wire_mask_columns(
        out.plan,
        [("public", "customers", "id"), ("public", "customers", "email"), ("public", "customers", "phone")],
    )
    assert set(cols) == {1}  # phone, reaching the client by a route lineage missed, stays clear


def test_unmask_validation() -> None:
    with pytest.raises(ValidationError):
        Unmask.model_validate({"request_id": 1, "user": "a", "connection": "c", "table": "t", "column": "c"})
    naive = _unmask(valid_until=datetime(2026, 3, 2, 11, 0))
    assert naive.valid_until.tzinfo is not None and naive.active(DURING)


# ----------------------------------------------------------------------------- evaluator


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _policy(*unmasks: Unmask) -> PolicySet:
    return PolicySet.model_validate(
        {
            "version": 3,
            "grants": [{"name": "g", "subject": "user:alice", "connection": "prod", "privileges": ["admin"]}],
            "masking_patterns": MASKING["patterns"],  # type: ignore[index]
            "masking_rules": MASKING["rules"],  # type: ignore[index]
            "unmasks": [u.model_dump(by_alias=True) for u in unmasks],
        }
    )


def _session(engine: EngineType = EngineType.MYSQL) -> SessionInfo:
    target = Target(id=1, name="prod", engine=engine, host="db", port=3306, username="app")
    return SessionInfo(
        principal=ALICE, target=target, client=ClientAddress(host="192.0.2.1", port=5000), database="shop"
    )


async def test_evaluator_cache_never_keeps_an_ended_exemption() -> None:
    clock = Clock(BEFORE)
    catalog = StaticCatalogProvider(MYSQL_CATALOG)
    ev = PolicyEvaluator(StaticPolicySetProvider(_policy(_unmask())), catalog=catalog, clock=clock)
    s = _session()
    st = Statement(sql="SELECT id, phone FROM customers")

    d = await ev.decide_statement(s, st)
    assert d.effect is Effect.ALLOW and d.masking is not None and 1 in d.masking.columns
    assert "shop.customers.phone" in await ev.wire_sources(s)

    clock.now = DURING
    d = await ev.decide_statement(s, st)
    assert d.effect is Effect.ALLOW and (d.masking is None or 1 not in d.masking.columns)
    assert "unmask:7" in d.rule_ids
    assert any(
        "shown in clear by approved unmask request #7 until 2026-03-02 11:00:00 UTC" in r for r in d.reasons
    )
    assert "shop.customers.phone" not in await ev.wire_sources(s)
    assert "shop.customers.email" in await ev.wire_sources(s)
    hits = ev.hits
    d_again = await ev.decide_statement(s, st)
    assert ev.hits == hits + 1 and d_again is d  # cached while the period holds

    clock.now = AFTER
    d = await ev.decide_statement(s, st)
    assert d.masking is not None and 1 in d.masking.columns and "unmask:7" not in d.rule_ids
    assert "shop.customers.phone" in await ev.wire_sources(s)
