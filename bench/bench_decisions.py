"""Decisions through the gate alone: statements per second and median microseconds.

Runs the real :class:`dbward.proxy.gate.Gate` (SQL analysis, policy evaluation with grants
and query rules, the decision written to a real audit journal) with no network, for three
kinds of traffic per statement:

- ``novel``: every literal different on every call, so no text was seen before (the issue's
  "novel statement"); statements of one shape share their analysis and decision.
- ``new shape``: a new table name on every call, so nothing at all is cached and sqlglot
  parses every statement (the cost of the first statement of its kind).
- ``repeated``: the same text every time, through ``Gate.check_cached`` as the engines call
  it on their hot path.

``analysis`` is ``dbward.sql.analyze`` alone for the novel statements. No thresholds: the
numbers are reported, people judge. Usage: python bench/bench_decisions.py [--json] [-n N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbward.audit.journal import FileJournal
from dbward.domain import ClientAddress, EngineType, Principal, SessionInfo, Statement, Target
from dbward.policy.evaluator import PolicyEvaluator, StaticPolicySetProvider
from dbward.policy.model import PolicySet
from dbward.proxy.gate import Gate
from dbward.sql import analysis

#: (dialect, template): {n} is a number that differs on every call, {t} a table name suffix
#: that differs only for the "new shape" traffic
CASES: list[tuple[str, str]] = [
    ("mysql", "SELECT id, name, email FROM users{t} WHERE id = {n}"),
    ("mysql", "SELECT c FROM sbtest1{t} WHERE id BETWEEN {n} AND {n} + 99 ORDER BY c"),
    ("mysql", "UPDATE sbtest1{t} SET k = k + 1 WHERE id = {n}"),
    ("mysql", "INSERT INTO orders{t} (user_id, total, note) VALUES ({n}, 19.99, 'note {n}')"),
    (
        "mysql",
        "SELECT * FROM customers{t} WHERE email = 'user{n}@example.com' AND status IN ('active', 'new')",
    ),
    (
        "mysql",
        "SELECT o.id, u.name FROM orders{t} o JOIN users u ON u.id = o.user_id WHERE o.id IN "
        "(SELECT order_id FROM items WHERE sku = 'x{n}') LIMIT 10",
    ),
    ("mysql", "DELETE FROM sessions{t} WHERE expires < {n}"),
    ("postgres", "SELECT abalance FROM pgbench_accounts{t} WHERE aid = {n}"),
    ("postgres", "UPDATE pgbench_accounts{t} SET abalance = abalance + {n} WHERE aid = {n}"),
    ("postgres", "SELECT x::int FROM s.t{t} WHERE y = {n} FOR UPDATE"),
    (
        "postgres",
        "INSERT INTO t{t} (a, b) VALUES ({n}, 'x{n}') ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING id",
    ),
    (
        "postgres",
        "SELECT * FROM accounts{t} WHERE owner = 'kim{n}' AND opened >= '2026-01-01' ORDER BY id LIMIT 20",
    ),
    ("postgres", "WITH d AS (DELETE FROM q{t} WHERE id = {n} RETURNING *) SELECT count(*) FROM d"),
]

#: a realistic policy: grants by group and user, rules by kind, regex and object
POLICY: dict[str, Any] = {
    "version": 1,
    "grants": [
        {"name": "dev-read", "subject": "group:dev", "connection": "*", "privileges": ["read"]},
        {"name": "bob-rw", "subject": "user:bob", "connection": "*", "privileges": ["read", "write"]},
    ],
    "connections": [
        {"connection": "pg", "engine": "postgres", "approval_required": ["TRUNCATE", "DROP"]},
        {"connection": "my", "engine": "mysql", "approval_required": ["TRUNCATE", "DROP"]},
    ],
    "rules": [
        {
            "id": "no-sleep",
            "priority": 10,
            "match": "regex",
            "pattern": r"(pg_)?sleep\s*\(",
            "action": "deny",
        },
        {
            "id": "no-outfile",
            "priority": 20,
            "match": "regex",
            "pattern": r"(?i)into\s+outfile",
            "action": "deny",
        },
        {
            "id": "no-unfiltered",
            "priority": 30,
            "match": "regex",
            "pattern": r"(?i)^\s*delete\s+from\s+\w+\s*$",
            "action": "require_approval",
        },
    ],
}


def session(engine: str) -> SessionInfo:
    pg = engine == "postgres"
    return SessionInfo(
        principal=Principal(user_id=1, username="bob", groups=frozenset({"dev"})),
        target=Target(
            id=1 if pg else 2,
            name="pg" if pg else "my",
            engine=EngineType.POSTGRES if pg else EngineType.MYSQL,
            host="db",
            port=5432 if pg else 3306,
            username="svc",
        ),
        client=ClientAddress(host="10.0.0.5", port=5000),
        database="app",
        client_program="bench",
    )


async def _timed(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
    """(median microseconds per call, calls per second over the whole loop)."""
    times: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        r = fn(i)
        if asyncio.iscoroutine(r):
            await r
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return statistics.median(times) * 1e6, n / total


async def run(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        journal = FileJournal(Path(d) / "journal.jsonl", fsync=False, durability="write", node="bench")
        evaluator = PolicyEvaluator(StaticPolicySetProvider(PolicySet.model_validate(POLICY)))
        gate = Gate(evaluator, journal)
        for case, (dialect, template) in enumerate(CASES):
            s = session(dialect)
            base = 1_000_000 * (case + 1)
            # warm: the shape and its decision are known, as in a running node
            await gate.check(s, Statement(sql=template.format(n=base - 1, t="")))

            def analyse(i: int, d: str = dialect, t: str = template, b: int = base) -> None:
                analysis.analyze(t.format(n=b + n + i, t=""), d, database="app")  # type: ignore[arg-type]

            async def novel(i: int, t: str = template, b: int = base, s: SessionInfo = s) -> None:
                await gate.check(s, Statement(sql=t.format(n=b + i, t="")))

            async def new_shape(
                i: int, t: str = template, b: int = base, s: SessionInfo = s, c: int = case
            ) -> None:
                await gate.check(s, Statement(sql=t.format(n=b + i, t=f"_{c}_{i}")))

            fixed = Statement(sql=template.format(n=7, t=""))
            await gate.check(s, fixed)

            def repeated(i: int, s: SessionInfo = s, st: Statement = fixed) -> None:
                if gate.check_cached(s, st) is None:
                    raise RuntimeError("a repeated statement missed the decision cache")

            a_us, _ = await _timed(analyse, n)
            novel_us, novel_rate = await _timed(novel, n)
            shape_us, shape_rate = await _timed(new_shape, max(n // 4, 20))
            rep_us, rep_rate = await _timed(repeated, n)
            rows.append(
                {
                    "dialect": dialect,
                    "statement": template.replace("{t}", ""),
                    "novel_us_median": round(novel_us, 1),
                    "novel_per_second": round(novel_rate),
                    "new_shape_us_median": round(shape_us, 1),
                    "new_shape_per_second": round(shape_rate),
                    "repeated_us_median": round(rep_us, 1),
                    "repeated_per_second": round(rep_rate),
                    "analysis_us_median": round(a_us, 1),
                }
            )
        await journal.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print JSON (for bench/run.py) instead of a table")
    ap.add_argument("-n", type=int, default=2000, help="calls per cell")
    args = ap.parse_args()
    rows = asyncio.run(run(args.n))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'dialect':9} {'novel us':>9} {'/s':>7} {'new shape us':>13} {'repeated us':>12} {'/s':>7}  statement"
    )
    for r in rows:
        print(
            f"{r['dialect']:9} {r['novel_us_median']:9.1f} {r['novel_per_second']:7d} "
            f"{r['new_shape_us_median']:13.1f} {r['repeated_us_median']:12.1f} {r['repeated_per_second']:7d}"
            f"  {r['statement'][:60]}"
        )


if __name__ == "__main__":
    main()
