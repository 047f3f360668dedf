"""Micro-benchmark of dbward.sql.analyze: median microseconds per statement.

"novel" statements differ in their literals on every call (cache misses, the cost of a new
statement); "repeated" ones are the same text every time (cache hits). No assertions.
Run: .venv/bin/python bench/bench_analysis.py
"""

from __future__ import annotations

import statistics
import time

from dbward.sql import analysis

CASES: list[tuple[str, str]] = [
    ("mysql", "SELECT id, name, email FROM users WHERE id = {n}"),
    ("mysql", "SELECT c FROM sbtest1 WHERE id BETWEEN {n} AND {n} + 99 ORDER BY c"),
    ("mysql", "UPDATE sbtest1 SET k = k + 1 WHERE id = {n}"),
    ("mysql", "INSERT INTO orders (user_id, total, note) VALUES ({n}, 19.99, 'note {n}')"),
    ("mysql", "DELETE FROM sessions WHERE expires < {n}"),
    (
        "mysql",
        "SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id IN "
        "(SELECT order_id FROM items WHERE sku = 'x{n}') LIMIT 10",
    ),
    ("mysql", "SELECT 1 /*!50000 , {n} */"),
    ("mysql", "BEGIN"),
    ("postgres", "SELECT id, name, email FROM users WHERE id = {n}"),
    ("postgres", "SELECT x::int FROM s.t WHERE y = {n} FOR UPDATE"),
    (
        "postgres",
        "INSERT INTO t (a, b) VALUES ({n}, 'x') ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING id",
    ),
    ("postgres", "WITH d AS (DELETE FROM q WHERE id = {n} RETURNING *) SELECT count(*) FROM d"),
    ("postgres", "SET search_path TO app_{n}"),
]


def _median_us(fn: object, n: int) -> float:
    times: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    n = 400
    print(f"{'dialect':9} {'novel us':>9} {'cached us':>9}  statement")
    for dialect, template in CASES:
        base = 1_000_000 * (CASES.index((dialect, template)) + 1)

        def novel(i: int, d: str = dialect, t: str = template, b: int = base) -> None:
            analysis.analyze(t.format(n=b + i), d, database="app")  # type: ignore[arg-type]

        fixed = template.format(n=7)
        analysis.analyze(fixed, dialect, database="app")  # type: ignore[arg-type]

        def repeated(i: int, d: str = dialect, s: str = fixed) -> None:
            analysis.analyze(s, d, database="app")  # type: ignore[arg-type]

        print(f"{dialect:9} {_median_us(novel, n):9.1f} {_median_us(repeated, n):9.2f}  {template[:70]}")


if __name__ == "__main__":
    main()
