"""The policy as the store holds it reaches the evaluator, and a change is seen without restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dbward.domain import ClientAddress, EngineType, Principal, SessionInfo, Statement, Target
from dbward.policy.evaluator import PolicyEvaluator
from dbward.policy.model import Effect
from dbward.store import repo
from dbward.store.db import Store
from dbward.store.models import QueryRuleRow
from dbward.store.policy_source import StorePolicyProvider, grant_conditions, load_policy_set


def test_apply_shaped_conditions_become_policy_conditions() -> None:
    until = datetime(2030, 1, 1, tzinfo=UTC)
    out = grant_conditions(
        {
            "weekdays": ["mon", "fri"],
            "hours": "09:00-18:00",
            "timezone": "Asia/Seoul",
            "client_ips": ["10.0.0.0/8"],
        },
        until,
    )
    assert out == {
        "valid_until": until,
        "client_ips": ["10.0.0.0/8"],
        "windows": [{"timezone": "Asia/Seoul", "weekdays": ["mon", "fri"], "start": "09:00", "end": "18:00"}],
    }


async def test_store_policy_decides_and_reloads_on_change(store: Store) -> None:
    async with store.transaction() as s:
        await repo.create_user(store_session := s, store.box, "ana", password="ana-password-1")
        c = await repo.create_connection(
            store_session,
            store.box,
            "sales",
            engine="mysql",
            host="127.0.0.1",
            port=3306,
            username="u",
            password="p",
        )
        c.policy = {"max_rows": 500, "approval_required": ["DELETE WITHOUT WHERE"]}
        await repo.create_grant(
            s,
            "ana-read",
            subject_type="user",
            subject_name="ana",
            connection="sales",
            privileges=["read"],
            conditions={"client_ips": ["127.0.0.0/8"]},
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
    ps = await load_policy_set(store)
    assert [g.name for g in ps.grants] == ["ana-read"]
    target = Target(id=c.id, name="sales", engine=EngineType.MYSQL, host="h", port=1, username="u")
    session = SessionInfo(
        principal=Principal(user_id=1, username="ana"),
        target=target,
        client=ClientAddress(host="127.0.0.1", port=5000),
        database="shop",
    )
    provider = StorePolicyProvider(store, check_interval=0)
    ev = PolicyEvaluator(provider)
    ok = await ev.decide_statement(session, Statement(sql="SELECT * FROM orders WHERE id = 1"))
    assert ok.effect is Effect.ALLOW and ok.row_limit == 500
    assert ok.kind == "SELECT" and ok.fingerprint
    no = await ev.decide_statement(session, Statement(sql="DELETE FROM orders WHERE id = 1"))
    assert no.effect is Effect.DENY
    assert "DELETE" in no.message and "read-write" in no.message
    far = SessionInfo(
        principal=session.principal, target=target, client=ClientAddress(host="192.0.2.7", port=1)
    )
    assert (await ev.decide_connection(far.principal, target, "192.0.2.7")).effect is Effect.DENY
    # A rule added in the store is seen at the next check, without a restart.
    async with store.transaction() as s:
        s.add(
            QueryRuleRow(
                rule_id="no-orders-star",
                priority=1,
                match="regex",
                pattern=r"select \* from orders",
                action="deny",
                message="select the columns you need",
            )
        )
        await repo.bump_policy_version(s)
    denied = await ev.decide_statement(session, Statement(sql="SELECT * FROM orders WHERE id = 1"))
    assert denied.effect is Effect.DENY and "rule:no-orders-star" in denied.rule_ids


async def test_the_synchronous_path_serves_only_the_set_checked_within_the_interval(store: Store) -> None:
    """``current_nowait`` (the gate's synchronous path): the set ``current`` would return
    without asking the store, so a changed policy is never served from the cache for longer
    than the version check interval, and never before the first load."""
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "ivo", password="ivo-password-1")
    provider = StorePolicyProvider(store, check_interval=3600)
    assert provider.current_nowait() is None  # nothing loaded yet
    ps = await provider.current()
    assert provider.current_nowait() is ps
    provider.invalidate()  # the check is due: the store must be asked again
    assert provider.current_nowait() is None
    assert await provider.current() is ps and provider.current_nowait() is ps
    every_time = StorePolicyProvider(store, check_interval=0)
    await every_time.current()
    assert every_time.current_nowait() is None


async def test_a_due_check_is_due_even_just_after_the_machine_started(store: Store) -> None:
    """The monotonic clock starts near zero when the machine boots: "never checked" and
    ``invalidate()`` must not read as "checked at time 0", or a policy change would wait for
    the first ``check_interval`` seconds of the machine's uptime."""
    provider = StorePolicyProvider(store, check_interval=3600, clock=lambda: 5.0)
    assert provider.current_nowait() is None
    ps = await provider.current()
    assert provider.current_nowait() is ps
    provider.invalidate()
    assert provider.current_nowait() is None
