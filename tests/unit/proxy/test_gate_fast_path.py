"""The gate's synchronous fast paths (check_cached, complete_soon): the same decisions and the
same journal records as check() and complete(), and None/False whenever they cannot be sure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dbward.approvals.model import ApprovalUse
from dbward.audit.journal import FileJournal, MemoryJournal
from dbward.audit.verify import verify_lines
from dbward.domain import (
    ClientAddress,
    EngineType,
    Principal,
    SessionInfo,
    Statement,
    StatementOrigin,
    StatementOutcome,
    Target,
)
from dbward.errors import AuditUnavailable
from dbward.policy.evaluator import PolicyEvaluator, StaticCatalogProvider, StaticPolicySetProvider
from dbward.policy.model import Decision, Effect, PolicySet
from dbward.proxy.gate import Gate
from dbward.sql.lineage import Catalog

# Wednesday 2026-01-07 12:00 UTC
NOON = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
BOB = Principal(user_id=1, username="bob")


class Clock:
    def __init__(self, now: datetime = NOON) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def policy(version: int = 1, **kw: Any) -> PolicySet:
    data: dict[str, Any] = {
        "version": version,
        "grants": [
            {"name": "bob-rw", "subject": "user:bob", "connection": "pg", "privileges": ["read", "write"]}
        ],
        "connections": [{"connection": "pg", "engine": "postgres", "approval_required": ["TRUNCATE"]}],
        "rules": [
            {
                "id": "no-sleep",
                "priority": 10,
                "match": "regex",
                "pattern": r"pg_sleep\s*\(",
                "action": "deny",
            },
            {
                "id": "ask-for-t2",
                "priority": 20,
                "match": "regex",
                "pattern": r"\bt2\b",
                "action": "require_approval",
            },
        ],
    }
    data.update(kw)
    return PolicySet.model_validate(data)


def session(host: str = "10.0.0.5") -> SessionInfo:
    return SessionInfo(
        principal=BOB,
        target=Target(id=1, name="pg", engine=EngineType.POSTGRES, host="db", port=5432, username="svc"),
        client=ClientAddress(host=host, port=5000),
        database="app",
        client_program="psql",
    )


def stmt(sql: str, **kw: Any) -> Statement:
    return Statement(sql=sql, **kw)


def _journal(tmp_path: Path, durability: str = "write") -> FileJournal:
    return FileJournal(tmp_path / "journal.jsonl", fsync=False, durability=durability, node="n1")


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _comparable(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without what differs between two writes of the same thing."""
    return {k: v for k, v in rec.items() if k not in ("time", "seq", "prev", "statement_id", "chain")}


class Broker:
    """An ApprovalBroker that has no approved request and says whether it is the executor."""

    def __init__(self, executor: bool = False) -> None:
        self.executor = executor
        self.asked = 0

    async def use_for(self, session: SessionInfo, statement: Statement, statement_id: str) -> ApprovalUse:
        self.asked += 1
        return ApprovalUse(request_id=None, hint="file a request for it")

    async def completed(
        self, session: SessionInfo, request_id: int, statement_id: str, outcome: StatementOutcome
    ) -> None:
        return None

    def executes(self, session: SessionInfo) -> bool:
        return self.executor


def gate_for(
    tmp_path: Path,
    ps: PolicySet | None = None,
    *,
    clock: Clock | None = None,
    approvals: Broker | None = None,
    durability: str = "write",
) -> tuple[Gate, PolicyEvaluator, StaticPolicySetProvider, FileJournal]:
    provider = StaticPolicySetProvider(ps or policy())
    evaluator = PolicyEvaluator(provider, clock=clock or Clock())
    journal = _journal(tmp_path, durability)
    return Gate(evaluator, journal, approvals=approvals), evaluator, provider, journal


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t1 WHERE id = 7",
        "SELECT pg_sleep(1)",  # denied by a rule
        "UPDATE t1 SET a = 1 WHERE id = 2",
    ],
)
async def test_check_cached_decides_and_records_exactly_as_check(tmp_path: Path, sql: str) -> None:
    gate, evaluator, _, journal = gate_for(tmp_path)
    s = session()
    assert gate.check_cached(s, stmt(sql)) is None  # nothing cached yet: nothing written
    assert not journal.path.exists() or journal.path.read_text() == ""
    slow = await gate.check(s, stmt(sql, origin=StatementOrigin.EXECUTE, params=(1, "x")))
    fast = gate.check_cached(s, stmt(sql, origin=StatementOrigin.EXECUTE, params=(1, "x")))
    assert fast is not None
    assert fast.decision == slow.decision
    assert fast.id != slow.id
    assert evaluator.hits == 1 and evaluator.misses == 1
    outcome = StatementOutcome(rows=3, bytes_sent=120, duration_ms=1.5)
    await gate.complete(s, slow, outcome)
    assert gate.complete_soon(s, fast, outcome)
    await journal.close()
    lines = journal.path.read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["type"] for r in recs] == [
        "statement.decision",
        "statement.decision",
        "statement.complete",
        "statement.complete",
    ]
    assert _comparable(recs[0]) == _comparable(recs[1])
    assert _comparable(recs[2]) == _comparable(recs[3])
    assert recs[1]["statement_id"] == fast.id and recs[3]["statement_id"] == fast.id
    assert verify_lines(lines).ok


async def test_a_statement_differing_in_numbers_shares_the_cached_decision(tmp_path: Path) -> None:
    gate, _, _, _ = gate_for(tmp_path)
    s = session()
    slow = await gate.check(s, stmt("SELECT a FROM t1 WHERE id = 1"))
    fast = gate.check_cached(s, stmt("SELECT a FROM t1 WHERE id = 2"))
    assert fast is not None and fast.decision == slow.decision
    assert fast.statement.sql == "SELECT a FROM t1 WHERE id = 2"
    # a text a regex rule reads differently is another key: the rule decides again
    assert gate.check_cached(s, stmt("SELECT a FROM t1 WHERE id = 2 AND pg_sleep(1) IS NULL")) is None


async def test_check_cached_declines_anything_approvals_could_change(tmp_path: Path) -> None:
    broker = Broker()
    gate, _, _, journal = gate_for(tmp_path, approvals=broker)
    s = session()
    # a rule asks for approval; TRUNCATE is refused as not granted, which a request could lift
    for sql in ("SELECT * FROM t2", "TRUNCATE t1"):
        slow = await gate.check(s, stmt(sql))
        assert not slow.decision.allowed and slow.decision.approvable
        assert gate.check_cached(s, stmt(sql)) is None
    assert broker.asked == 2
    # without an approvals broker nothing could lift the refusal: the cached refusal is served
    plain, _, _, _ = gate_for(tmp_path / "plain")
    await plain.check(s, stmt("TRUNCATE t1"))
    served = plain.check_cached(s, stmt("TRUNCATE t1"))
    assert served is not None and served.decision.effect is Effect.DENY
    # dbward's executor: every statement takes the request's use, even an allowed one
    allowed = await gate.check(s, stmt("SELECT * FROM t1"))
    assert allowed.decision.allowed
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is not None
    broker.executor = True
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is None
    await journal.close()


async def test_a_changed_policy_is_never_served_from_the_cache(tmp_path: Path) -> None:
    gate, evaluator, provider, _ = gate_for(tmp_path)
    s = session()
    first = await gate.check(s, stmt("SELECT * FROM t1"))
    assert first.decision.allowed
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is not None
    # the grant is gone in the new version: nothing cached may answer until the policy is read
    provider.policy_set = policy(version=2, grants=[])
    assert evaluator.decide_cached(s, stmt("SELECT * FROM t1")) is None
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is None
    refused = await gate.check(s, stmt("SELECT * FROM t1"))
    assert refused.decision.effect is Effect.DENY
    again = gate.check_cached(s, stmt("SELECT * FROM t1"))
    assert again is not None and again.decision == refused.decision
    # the same version with other content (a store edited by hand) is a change too
    provider.policy_set = policy(version=2)
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is None
    assert (await gate.check(s, stmt("SELECT * FROM t1"))).decision.allowed


async def test_a_provider_that_cannot_answer_now_sends_every_statement_to_the_full_path(
    tmp_path: Path,
) -> None:
    class Slow:
        def __init__(self, ps: PolicySet) -> None:
            self.ps = ps

        async def current(self) -> PolicySet:
            return self.ps

    class Checking(StaticPolicySetProvider):
        def current_nowait(self) -> PolicySet | None:
            return None  # its source is due for a check

    s = session()
    for provider in (Slow(policy()), Checking(policy())):
        gate = Gate(PolicyEvaluator(provider, clock=Clock()), MemoryJournal())
        await gate.check(s, stmt("SELECT * FROM t1"))
        assert gate.check_cached(s, stmt("SELECT * FROM t1")) is None


async def test_an_expiring_grant_is_as_strict_on_the_fast_path(tmp_path: Path) -> None:
    clock = Clock()
    until = NOON + timedelta(minutes=5)
    ps = policy(
        grants=[
            {
                "name": "bob-rw",
                "subject": "user:bob",
                "connection": "pg",
                "privileges": ["read", "write"],
                "conditions": {"valid_until": until.isoformat()},
            }
        ]
    )
    gate, _, _, _ = gate_for(tmp_path, ps, clock=clock)
    s = session()
    assert (await gate.check(s, stmt("SELECT * FROM t1"))).decision.allowed
    clock.now = until - timedelta(microseconds=1)
    served = gate.check_cached(s, stmt("SELECT * FROM t1"))
    assert served is not None and served.decision.allowed
    clock.now = until  # the grant has just expired: the allow must not be served
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is None
    refused = await gate.check(s, stmt("SELECT * FROM t1"))
    assert refused.decision.effect is Effect.DENY and "expired" in refused.decision.message
    cached = gate.check_cached(s, stmt("SELECT * FROM t1"))
    assert cached is not None and cached.decision == refused.decision


async def test_a_closing_time_window_is_as_strict_on_the_fast_path(tmp_path: Path) -> None:
    clock = Clock(NOON.replace(hour=17, minute=59))
    ps = policy(
        grants=[
            {
                "name": "bob-office",
                "subject": "user:bob",
                "connection": "pg",
                "privileges": ["read"],
                "conditions": {"windows": [{"start": "09:00", "end": "18:00", "timezone": "UTC"}]},
            }
        ]
    )
    gate, _, _, _ = gate_for(tmp_path, ps, clock=clock)
    s = session()
    assert (await gate.check(s, stmt("SELECT * FROM t1"))).decision.allowed
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is not None
    clock.now = NOON.replace(hour=18, minute=0)
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is None
    assert not (await gate.check(s, stmt("SELECT * FROM t1"))).decision.allowed


async def test_a_client_address_condition_is_decided_per_address(tmp_path: Path) -> None:
    ps = policy(
        grants=[
            {
                "name": "bob-office",
                "subject": "user:bob",
                "connection": "pg",
                "privileges": ["read"],
                "conditions": {"client_ips": ["10.0.0.0/24"]},
            }
        ]
    )
    gate, _, _, _ = gate_for(tmp_path, ps)
    inside, outside = session("10.0.0.5"), session("192.0.2.7")
    assert (await gate.check(inside, stmt("SELECT * FROM t1"))).decision.allowed
    assert gate.check_cached(inside, stmt("SELECT * FROM t1")) is not None
    assert gate.check_cached(outside, stmt("SELECT * FROM t1")) is None
    assert not (await gate.check(outside, stmt("SELECT * FROM t1"))).decision.allowed


async def test_fsync_durability_sends_every_decision_to_the_group_commit(tmp_path: Path) -> None:
    gate, _, _, journal = gate_for(tmp_path, durability="fsync")
    s = session()
    await gate.check(s, stmt("SELECT * FROM t1"))
    before = journal.path.read_text()
    assert gate.check_cached(s, stmt("SELECT * FROM t1")) is None
    assert journal.path.read_text() == before
    await journal.close()


async def test_a_journal_that_cannot_write_refuses_on_the_fast_path_too(tmp_path: Path) -> None:
    gate, _, _, journal = gate_for(tmp_path)
    s = session()
    await gate.check(s, stmt("SELECT * FROM t1"))
    journal._failure = AuditUnavailable("the audit journal cannot be written (test)")
    with pytest.raises(AuditUnavailable):
        gate.check_cached(s, stmt("SELECT * FROM t1"))


class Recorder:
    """A target connection: what was sent to it, and what the journal held at that moment."""

    def __init__(self, journal: FileJournal) -> None:
        self.journal = journal
        self.sent: list[tuple[bytes, list[str]]] = []

    def write(self, data: bytes | bytearray) -> None:
        text = self.journal.path.read_text() if self.journal.path.exists() else ""
        ids = [
            r["statement_id"] for r in map(json.loads, text.splitlines()) if r["type"] == "statement.decision"
        ]
        self.sent.append((bytes(data), ids))


async def test_queued_decisions_share_one_write_and_their_statements_wait_for_it(tmp_path: Path) -> None:
    """check_cached(queued=True): the decisions of one loop iteration go into the journal in
    one write at its end, and no statement reaches its target before its record is written."""
    import asyncio
    import os

    gate, _, _, journal = gate_for(tmp_path)
    s = session()
    await gate.check(s, stmt("SELECT * FROM t1 WHERE id = 0"))  # the decision is now cached
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    targets = [Recorder(journal) for _ in range(3)]
    os_write = os.write
    os.write = counting_write  # type: ignore[assignment]
    try:
        tickets = []
        for i, target in enumerate(targets):
            ticket = gate.check_cached(s, stmt(f"SELECT * FROM t1 WHERE id = {i + 1}"), queued=True)
            assert ticket is not None
            tickets.append(ticket)
            gate.forward(target, f"statement {i}".encode(), lambda exc: pytest.fail(str(exc)))
        assert all(not t.sent for t in targets)  # held: their records are not written yet
        assert writes == []
        await asyncio.sleep(0)  # the loop iteration ends: one write, then the statements
    finally:
        os.write = os_write  # type: ignore[assignment]
    assert len(writes) == 1
    for i, (target, ticket) in enumerate(zip(targets, tickets, strict=True)):
        assert target.sent == [(f"statement {i}".encode(), target.sent[0][1])]
        assert ticket.id in target.sent[0][1]  # its decision was in the file when it was sent
    # nothing queued any more: the next statement of a cached decision written at once goes at once
    direct = Recorder(journal)
    gate.forward(direct, b"now", lambda exc: pytest.fail(str(exc)))
    assert [d for d, _ in direct.sent] == [b"now"]
    await journal.close()
    assert verify_lines(journal.path.read_text().splitlines()).ok


async def test_what_follows_a_held_statement_on_any_connection_keeps_its_place(tmp_path: Path) -> None:
    gate, _, _, journal = gate_for(tmp_path)
    s = session()
    await gate.check(s, stmt("SELECT * FROM t1"))
    target = Recorder(journal)
    assert gate.check_cached(s, stmt("SELECT * FROM t1"), queued=True) is not None
    gate.forward(target, b"first", lambda exc: pytest.fail(str(exc)))
    gate.forward(target, b"second", lambda exc: pytest.fail(str(exc)))  # no record of its own
    assert target.sent == []
    gate.flush()  # an engine writing past forward() (a COPY frame's rest) writes the queue first
    assert [d for d, _ in target.sent] == [b"first", b"second"]
    await journal.close()


async def test_a_queued_decision_that_cannot_be_written_never_reaches_the_target(tmp_path: Path) -> None:
    import asyncio
    import os

    gate, _, _, journal = gate_for(tmp_path)
    s = session()
    await gate.check(s, stmt("SELECT * FROM t1"))
    assert gate.check_cached(s, stmt("SELECT * FROM t1"), queued=True) is not None
    target = Recorder(journal)
    failed: list[AuditUnavailable] = []
    gate.forward(target, b"SELECT", failed.append)
    assert journal._fd is not None
    os.close(journal._fd)  # the file descriptor goes bad under the journal (a disk failure)
    journal._fd = os.open(os.devnull, os.O_RDONLY)
    await asyncio.sleep(0)
    assert target.sent == []
    assert len(failed) == 1 and "cannot be written" in failed[0].message
    with pytest.raises(AuditUnavailable):  # and every later statement is refused
        gate.check_cached(s, stmt("SELECT * FROM t1"), queued=True)
    # bytes that wait for no record (the stand-in the engine sends for a refused statement,
    # which the target answers with an error) still go
    gate.forward(target, b"stand-in", lambda exc: pytest.fail(str(exc)))
    assert [d for d, _ in target.sent] == [b"stand-in"]


async def test_fsync_durability_never_queues(tmp_path: Path) -> None:
    gate, _, _, journal = gate_for(tmp_path, durability="fsync")
    s = session()
    await gate.check(s, stmt("SELECT * FROM t1"))
    assert gate.check_cached(s, stmt("SELECT * FROM t1"), queued=True) is None  # the group commit decides
    target = Recorder(journal)
    gate.forward(target, b"x", lambda exc: pytest.fail(str(exc)))  # awaited decisions: sent at once
    assert [d for d, _ in target.sent] == [b"x"]
    await journal.close()


async def test_complete_soon_leaves_approved_and_schema_changes_to_complete(tmp_path: Path) -> None:
    gate, _, _, journal = gate_for(tmp_path)
    s = session()
    outcome = StatementOutcome(affected=1)
    ddl = await gate.check(s, stmt("CREATE TABLE t9 (a int)"))
    assert ddl.decision.kind == "CREATE"
    assert not gate.complete_soon(s, ddl, outcome)
    approved = await gate.check(s, stmt("SELECT * FROM t1"))
    approved.decision = Decision(
        effect=Effect.ALLOW,
        reasons=("allowed by approved request #4",),
        rule_ids=("approval:4",),
        approval_request_id="4",
        kind="SELECT",
    )
    assert not gate.complete_soon(s, approved, outcome)
    await journal.close()
    assert [r["type"] for r in _records(journal.path)] == ["statement.decision", "statement.decision"]


async def test_masking_decisions_are_served_with_their_plan(tmp_path: Path) -> None:
    ps = policy(
        masking_rules=[
            {
                "name": "hide-email",
                "connection": "pg",
                "table": "users",
                "column": "email",
                "algorithm": "redact",
            }
        ]
    )
    catalog = Catalog({("public", "users"): ("id", "email")}, {}, version="v1", database="app")
    provider = StaticPolicySetProvider(ps)
    evaluator = PolicyEvaluator(provider, clock=Clock(), catalog=StaticCatalogProvider(catalog))
    gate = Gate(evaluator, MemoryJournal())
    s = session()
    slow = await gate.check(s, stmt("SELECT id, email FROM users"))
    assert slow.decision.masking is not None
    fast = gate.check_cached(s, stmt("SELECT id, email FROM users"))
    assert fast is not None and fast.decision == slow.decision

    class NoNowait:
        async def catalog(self, session: SessionInfo) -> Catalog:
            return catalog

    awaiting = Gate(PolicyEvaluator(provider, clock=Clock(), catalog=NoNowait()), MemoryJournal())
    await awaiting.check(s, stmt("SELECT id, email FROM users"))
    assert awaiting.check_cached(s, stmt("SELECT id, email FROM users")) is None
