"""Masking rules, the masking plan, and the bypass corpus (:mod:`tests.unit.masking.corpus`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from dbward.domain import ClientAddress, EngineType, Principal, SessionInfo, Statement, Target
from dbward.masking.algorithms import Algorithm
from dbward.masking.plan import CompiledMasking, MaskingOutcome, plan_masking, wire_mask_columns
from dbward.masking.rules import AlgorithmSpec, MaskingConfig, MaskingRule
from dbward.policy.evaluator import PolicyEvaluator, StaticCatalogProvider, StaticPolicySetProvider
from dbward.policy.model import Effect, PolicySet
from dbward.sql.lineage import Catalog, output_lineage
from tests.unit.masking.corpus import (
    CASES,
    MASKING,
    MYSQL_CATALOG,
    POSTGRES_CATALOG,
    BypassCase,
)

ALICE = Principal(user_id=1, username="alice", groups=frozenset({"analysts"}))
DPO = Principal(user_id=2, username="dora", roles=frozenset({"dpo"}))
SUPPORT = Principal(user_id=3, username="sam", groups=frozenset({"support"}))


def _compiled(masking: dict[str, object] = MASKING) -> CompiledMasking:
    cfg = MaskingConfig.model_validate(masking)
    return CompiledMasking(cfg.patterns, cfg.rules)


def _run(
    case_sql: str,
    dialect: str,
    *,
    principal: Principal = ALICE,
    search_path: tuple[str, ...] = (),
    unresolved: str = "deny",
    inference: str = "deny",
    writes_data: bool = False,
    masking: dict[str, object] = MASKING,
    client: str = "192.0.2.1",
) -> MaskingOutcome:
    cm = _compiled(masking)
    view = cm.view(principal, "prod", client)
    if view is None:
        return MaskingOutcome()
    catalog = MYSQL_CATALOG if dialect == "mysql" else POSTGRES_CATALOG
    database = "shop"
    lin = output_lineage(
        case_sql,
        "mysql" if dialect == "mysql" else "postgres",
        catalog=catalog,
        database=database,
        search_path=search_path,
    )
    return plan_masking(
        view,
        lin,
        principal=principal,
        connection="prod",
        catalog=catalog,
        unresolved=unresolved,  # type: ignore[arg-type]
        inference=inference,  # type: ignore[arg-type]
        writes_data=writes_data,
        database=database,
    )


# ----------------------------------------------------------------------------- the corpus


def test_corpus_is_large_enough_and_covers_both_dialects() -> None:
    assert len(CASES) >= 60
    assert sum(c.dialect == "mysql" for c in CASES) >= 25
    assert sum(c.dialect == "postgres" for c in CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bypass_case(case: BypassCase) -> None:
    out = _run(case.sql, case.dialect, search_path=case.search_path)
    if case.expect == "deny":
        assert out.denial is not None, f"{case.id}: expected a denial, got plan {out.plan}"
        assert case.deny_contains in out.denial, out.denial
        assert out.denial.startswith("denied: ") or out.denial.startswith("statement ")
        assert out.rule_ids
        return
    assert out.denial is None, f"{case.id}: unexpected denial: {out.denial}"
    plan = out.plan
    columns = plan.columns if plan is not None else {}
    got = {i: m.how for i, m in columns.items()}
    assert got == case.masked, f"{case.id}: masked {got}, expected {case.masked}"
    for i in case.clear:
        assert i not in columns, f"{case.id}: column {i} must not be masked"
    if plan is not None:
        # a masked value may be quoted by a server error: the engines redact error text
        assert plan.redact_errors == bool(plan.columns)
        for m in plan.columns.values():
            assert m.rule_ids and all(r.startswith("masking:") for r in m.rule_ids)
            assert m.sources


# ----------------------------------------------------------------------------- plan rules


def test_exempt_role_gets_no_plan_and_ip_limited_exemption() -> None:
    masking = {
        "rules": [
            {
                "name": "phone",
                "column": "phone",
                "pattern": "phone",
                "exempt": ["role:dpo", "group:support"],
                "exempt_client_ips": ["10.0.0.0/8"],
            }
        ]
    }
    sql = "SELECT phone FROM customers"
    assert _run(sql, "mysql", principal=DPO, masking=masking, client="10.1.2.3").plan is None
    # outside the exemption's address range the rule applies
    out = _run(sql, "mysql", principal=DPO, masking=masking, client="192.0.2.7")
    assert out.plan is not None and out.plan.columns[0].how == "pattern phone"
    assert _run(sql, "mysql", principal=SUPPORT, masking=masking, client="::ffff:10.9.9.9").plan is None
    # without exempt_client_ips the exemption holds everywhere
    masking2 = {"rules": [{"name": "phone", "column": "phone", "pattern": "phone", "exempt": "role:dpo"}]}
    assert _run(sql, "mysql", principal=DPO, masking=masking2).plan is None
    assert _compiled(masking2).view(DPO, "prod", "192.0.2.1") is None  # fast path: no lineage at all


def test_connection_glob_limits_rules() -> None:
    cm = _compiled({"rules": [{"name": "p", "connection": "prod-*", "column": "phone", "pattern": "phone"}]})
    assert cm.view(ALICE, "staging", "127.0.0.1") is None
    assert cm.view(ALICE, "prod-eu", "127.0.0.1") is not None


def test_priority_and_exempt_rule_skipped() -> None:
    masking = {
        "rules": [
            {"name": "loose", "column": "rrn", "algorithm": "keep_first:6", "priority": 50},
            {
                "name": "strict",
                "column": "rrn",
                "algorithm": "null",
                "priority": 10,
                "exempt": "group:analysts",
            },
        ]
    }
    out = _run("SELECT rrn FROM customers", "mysql", masking=masking)
    assert out.plan is not None
    m = out.plan.columns[0]
    assert m.rule_ids == ("masking:loose",)
    assert m.apply("900101-1234567") == "900101-*******"


def test_strongest_wins_and_derived_values_lose_their_pattern() -> None:
    masking = {
        "rules": [
            {"name": "phone", "column": "phone", "pattern": "phone"},
            {"name": "email", "column": "email", "algorithm": "null"},
            {"name": "rrn", "column": "rrn", "algorithm": "partial:2:2"},
        ]
    }
    out = _run(
        "SELECT concat(phone, email), concat(phone, rrn), phone, lower(phone), "
        "CASE WHEN id = 1 THEN phone ELSE rrn END FROM customers",
        "mysql",
        masking=masking,
    )
    assert out.plan is not None
    cols = out.plan.columns
    assert cols[0].how == "null" and cols[0].apply("x") is None
    assert cols[1].how == "full"  # pattern and partial: a computed value is masked whole
    assert cols[1].apply("010-1234-5678") == "*" * 13
    assert cols[2].how == "pattern phone" and cols[2].apply("010-1234-5678") == "010-****-5678"
    assert cols[3].how == "full"
    assert cols[4].how == "full"  # two different maskings meet in one column
    assert set(cols[4].rule_ids) == {"masking:phone", "masking:rrn"}
    assert cols[4].sources == ("shop.customers.phone", "shop.customers.rrn")


def test_token_algorithm_stays_a_token_and_is_keyed_by_rule() -> None:
    masking = {"rules": [{"name": "email", "column": "email", "algorithm": "token"}]}
    out = _run("SELECT email, upper(email) FROM customers", "mysql", masking=masking)
    assert out.plan is not None
    a = out.plan.columns[0].apply("a@b.c", token_key=b"k" * 32)
    assert a is not None and a.startswith("tok_")
    assert a == out.plan.columns[0].apply("a@b.c", token_key=b"k" * 32)
    assert out.plan.columns[1].how == "token"
    assert out.plan.columns[0].apply("a@b.c") == "[REDACTED]"  # no key, no token


def test_inference_allow_and_flag() -> None:
    out = _run("SELECT name FROM customers WHERE rrn LIKE '9001%'", "mysql", inference="allow_and_flag")
    assert out.denial is None and out.plan is not None
    assert out.plan.inference == ("shop.customers.rrn",)
    assert "masking:mask-rrn" in out.plan.rule_ids
    assert any("masking_inference is allow_and_flag" in r for r in out.plan.reasons)
    assert out.plan.columns == {}


def test_unresolved_mask_all_only_for_reads() -> None:
    out = _run("SELECT get_phone(id), name FROM customers", "mysql", unresolved="mask_all")
    assert out.denial is None and out.plan is not None and out.plan.mask_all
    assert out.plan.mask_for(1) is out.plan.all_mask
    assert out.plan.all_mask.apply("secret") == "[REDACTED]"  # the strongest rule of the connection
    assert "mask_all" in out.plan.reasons[0]
    denied = _run("SELECT get_phone(id) FROM customers", "mysql", unresolved="mask_all", writes_data=True)
    assert denied.denial is not None and "only read" in denied.denial


def test_unresolved_on_unmasked_tables_is_allowed() -> None:
    out = _run("SELECT missing_column FROM orders", "mysql")
    assert out.denial is None and out.plan is None


def test_unrelated_statements_get_no_plan() -> None:
    for sql in ("SELECT * FROM orders", "SELECT 1", "BEGIN", "SET NAMES utf8mb4", "SHOW TABLES"):
        out = _run(sql, "mysql")
        assert out.denial is None and out.plan is None, sql


def test_copy_into_same_column_or_equally_masked_column_is_allowed() -> None:
    assert _run("UPDATE customers SET phone = phone WHERE id = 1", "mysql").denial is None
    assert _run("UPDATE customers SET phone = concat(phone, '') WHERE id = 1", "mysql").denial is None
    denied = _run("UPDATE customers SET city = email WHERE id = 1", "mysql")
    assert denied.denial is not None and "mask-email" in denied.denial and "table customers" in denied.denial


def test_batch_has_a_plan_per_statement() -> None:
    out = _run("SELECT id FROM orders; SELECT email FROM customers", "mysql")
    assert out.plan is not None
    assert len(out.plan.statements) == 2
    assert out.plan.statements[0] is None or out.plan.statements[0].columns == {}
    second = out.plan.statements[1]
    assert second is not None and second.columns[0].how == "pattern email"
    denied = _run("SELECT id FROM orders; SELECT name FROM customers ORDER BY rrn", "mysql")
    assert denied.denial is not None and denied.denial.startswith("statement 2 of this batch: denied:")


def test_wire_cross_check_masks_columns_lineage_missed() -> None:
    out = _run("SELECT id, name FROM customers", "mysql")
    assert out.plan is not None and out.plan.columns == {}
    cols = wire_mask_columns(out.plan, [("shop", "customers", "id"), ("shop", "customers", "phone")])
    assert set(cols) == {1} and cols[1].how == "pattern phone"
    cols = wire_mask_columns(out.plan, [None, ("", "Customers", "EMAIL")])
    assert set(cols) == {1} and cols[1].how == "pattern email"
    out2 = _run("SELECT get_phone(id), name FROM customers", "mysql", unresolved="mask_all")
    assert out2.plan is not None
    assert set(wire_mask_columns(out2.plan, [None, None])) == {0, 1}


# ----------------------------------------------------------------------------- models


def test_rule_models_from_yaml_dicts() -> None:
    r = MaskingRule.model_validate(
        {"name": "x", "schema": "crm", "column": "p*", "algorithm": "keep_last:4", "exempt": "user:bob"}
    )
    assert r.schema_ == "crm"
    assert r.algorithm is not None and r.algorithm.algorithm is Algorithm.KEEP_LAST
    assert r.algorithm.keep_last == 4
    assert AlgorithmSpec.model_validate("partial:2:3").keep_last == 3
    assert AlgorithmSpec.model_validate("fixed:<hidden>").replacement == "<hidden>"
    with pytest.raises(ValidationError, match="exactly one"):
        MaskingRule.model_validate({"name": "x", "column": "p", "pattern": "phone", "algorithm": "full"})
    with pytest.raises(ValidationError, match="exactly one"):
        MaskingRule.model_validate({"name": "x", "column": "p"})
    with pytest.raises(ValidationError, match="needs 'exempt'"):
        MaskingRule.model_validate(
            {"name": "x", "column": "p", "pattern": "phone", "exempt_client_ips": ["10.0.0.0/8"]}
        )
    with pytest.raises(ValidationError, match="not a rule algorithm"):
        AlgorithmSpec.model_validate({"algorithm": "pattern"})
    with pytest.raises(ValidationError, match="unknown pattern"):
        MaskingConfig.model_validate({"rules": [{"name": "x", "column": "p", "pattern": "nope"}]})
    with pytest.raises(ValidationError, match="built-in"):
        MaskingConfig.model_validate({"patterns": [{"name": "phone", "regex": "x", "algorithm": "full"}]})
    with pytest.raises(ValidationError, match="invalid regular expression"):
        MaskingConfig.model_validate({"patterns": [{"name": "p", "regex": "(", "algorithm": "full"}]})
    with pytest.raises(ValidationError, match="used twice"):
        PolicySet.model_validate(
            {
                "masking_rules": [
                    {"name": "a", "column": "p", "pattern": "phone"},
                    {"name": "a", "column": "q", "pattern": "phone"},
                ]
            }
        )


def test_custom_pattern_applies() -> None:
    masking = {
        "patterns": [{"name": "code", "regex": r"[A-Z]{2}\d{4}", "algorithm": "keep_first:1"}],
        "rules": [{"name": "notes", "table": "orders", "column": "note", "pattern": "code"}],
    }
    out = _run("SELECT note FROM orders", "mysql", masking=masking)
    assert out.plan is not None
    assert out.plan.columns[0].apply("ref AB1234 ok") == "ref A***** ok"
    assert out.plan.columns[0].apply("no code") == "*******"


# ----------------------------------------------------------------------------- evaluator


def _policy(**conn: object) -> PolicySet:
    return PolicySet.model_validate(
        {
            "version": 3,
            "grants": [{"name": "g", "subject": "user:alice", "connection": "prod", "privileges": ["admin"]}],
            "connections": [{"connection": "prod", **conn}],
            "masking_patterns": MASKING["patterns"],
            "masking_rules": MASKING["rules"],
        }
    )


def _session(engine: EngineType = EngineType.MYSQL, principal: Principal = ALICE) -> SessionInfo:
    target = Target(id=1, name="prod", engine=engine, host="db", port=3306, username="app")
    return SessionInfo(
        principal=principal,
        target=target,
        client=ClientAddress(host="192.0.2.1", port=5000),
        database="shop",
    )


class _CountingCatalog(StaticCatalogProvider):
    def __init__(self, catalog: Catalog) -> None:
        super().__init__(catalog)
        self.calls = 0

    async def catalog(self, session: SessionInfo) -> Catalog:
        self.calls += 1
        return await super().catalog(session)


async def test_evaluator_attaches_plan_and_denies() -> None:
    ev = PolicyEvaluator(
        StaticPolicySetProvider(_policy()),
        catalog=StaticCatalogProvider(MYSQL_CATALOG),
        clock=lambda: datetime(2026, 1, 5, tzinfo=UTC),
    )
    s = _session()
    d = await ev.decide_statement(s, Statement(sql="SELECT id, phone FROM customers"))
    assert d.effect is Effect.ALLOW and d.masking is not None
    assert d.masking.columns[1].how == "pattern phone"
    assert "masking:mask-phone" in d.rule_ids
    assert any("masked: column 2 (phone)" in r for r in d.reasons)
    d2 = await ev.decide_statement(s, Statement(sql="SELECT name FROM customers WHERE rrn LIKE '9%'"))
    assert d2.effect is Effect.DENY and "masking_inference is deny" in d2.message
    # the same fingerprint with an executable comment must not reuse the cached decision
    d3 = await ev.decide_statement(s, Statement(sql="SELECT id FROM customers"))
    d4 = await ev.decide_statement(s, Statement(sql="SELECT id /*!, phone */ FROM customers"))
    assert d3.masking is None or d3.masking.columns == {}
    assert d4.masking is not None and 1 in d4.masking.columns
    # positional ORDER BY with another number is another decision
    d5 = await ev.decide_statement(s, Statement(sql="SELECT id, name FROM customers ORDER BY 1"))
    d6 = await ev.decide_statement(s, Statement(sql="SELECT id, phone FROM customers ORDER BY 2"))
    assert d5.allowed and d6.effect is Effect.DENY


async def test_evaluator_fast_path_and_settings() -> None:
    provider = _CountingCatalog(MYSQL_CATALOG)
    ev = PolicyEvaluator(
        StaticPolicySetProvider(_policy(masking_inference="allow_and_flag")), catalog=provider
    )
    d = await ev.decide_statement(_session(), Statement(sql="SELECT * FROM orders"))
    assert d.allowed and d.masking is None
    d = await ev.decide_statement(_session(), Statement(sql="SELECT name FROM customers ORDER BY phone"))
    assert d.allowed and d.masking is not None and d.masking.inference == ("shop.customers.phone",)
    # a user every rule exempts pays nothing: no catalog is read
    exempt_policy = PolicySet.model_validate(
        {
            "grants": [{"name": "g", "subject": "user:dora", "connection": "prod", "privileges": ["read"]}],
            "masking_rules": [{"name": "p", "column": "phone", "pattern": "phone", "exempt": "role:dpo"}],
        }
    )
    provider2 = _CountingCatalog(MYSQL_CATALOG)
    ev2 = PolicyEvaluator(StaticPolicySetProvider(exempt_policy), catalog=provider2)
    d = await ev2.decide_statement(_session(principal=DPO), Statement(sql="SELECT phone FROM customers"))
    assert d.allowed and d.masking is None and provider2.calls == 0


async def test_evaluator_without_catalog_fails_closed() -> None:
    ev = PolicyEvaluator(StaticPolicySetProvider(_policy()))
    d = await ev.decide_statement(_session(), Statement(sql="SELECT phone FROM customers"))
    assert d.effect is Effect.DENY and "no catalog of connection prod" in d.message
    d = await ev.decide_statement(_session(), Statement(sql="BEGIN"))
    assert d.allowed


async def test_evaluator_catalog_version_is_in_the_key() -> None:
    cat1 = Catalog({("shop", "customers"): ("id", "name")}, version=1)
    cat2 = Catalog({("shop", "customers"): ("id", "name", "phone")}, version=2)
    provider = StaticCatalogProvider(cat1)
    ev = PolicyEvaluator(StaticPolicySetProvider(_policy()), catalog=provider)
    d1 = await ev.decide_statement(_session(), Statement(sql="SELECT * FROM customers"))
    assert d1.masking is None or d1.masking.columns == {}
    provider._catalog = cat2
    d2 = await ev.decide_statement(_session(), Statement(sql="SELECT * FROM customers"))
    assert d2.masking is not None and d2.masking.columns[2].how == "pattern phone"


async def test_evaluator_postgres_search_path() -> None:
    ev = PolicyEvaluator(StaticPolicySetProvider(_policy()), catalog=StaticCatalogProvider(POSTGRES_CATALOG))
    s = _session(EngineType.POSTGRES)
    s.attributes["search_path"] = "other, public"
    d = await ev.decide_statement(s, Statement(sql="SELECT phone FROM other.customers"))
    assert d.allowed and (d.masking is None or d.masking.columns == {})
    # unqualified, the search path could be changed behind dbward's back: masked
    d = await ev.decide_statement(s, Statement(sql="SELECT phone FROM customers"))
    assert d.masking is not None and d.masking.columns[0].how == "pattern phone"
    d = await ev.decide_statement(s, Statement(sql="SET search_path = public; SELECT phone FROM customers"))
    assert d.masking is not None and d.masking.statements[1] is not None
    assert d.masking.statements[1].columns[0].how == "pattern phone"
    s.attributes["search_path"] = "public"
    d = await ev.decide_statement(s, Statement(sql="SELECT phone FROM customers"))
    assert d.masking is not None and d.masking.columns[0].how == "pattern phone"
