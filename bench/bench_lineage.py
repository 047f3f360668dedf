"""Column lineage benchmark: median time of novel (cache miss) and cached lineage.

Prints numbers, asserts nothing. Usage: python bench/bench_lineage.py
"""

from __future__ import annotations

import statistics
import time

from dbward.sql.lineage import Catalog, output_lineage

MY = Catalog(
    {
        ("app", "users"): ("id", "name", "phone", "email"),
        ("app", "orders"): ("id", "user_id", "note"),
    },
    {},
    version=7,
)

BENCH = [
    "SELECT u.id, u.name, o.note FROM users u JOIN orders o ON o.user_id = u.id WHERE o.id > {n}",
    "WITH c AS (SELECT id, phone FROM users WHERE id > {n}) SELECT phone FROM c UNION SELECT note FROM orders",
    "SELECT (SELECT max(x.phone) FROM users x WHERE x.id = u.id AND x.id > {n}) FROM users u",
]


def main() -> None:
    novel: list[float] = []
    cached: list[float] = []
    for n in range(60):
        for tpl in BENCH:
            sql = tpl.replace("{n}", str(n))
            cat = Catalog(MY.tables, MY.views, version=1000 + n)  # a new version: a cache miss
            t0 = time.perf_counter()
            output_lineage(sql, "mysql", catalog=cat, database="app")
            novel.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            output_lineage(sql, "mysql", catalog=cat, database="app")
            cached.append(time.perf_counter() - t0)
    n_med, c_med = statistics.median(novel) * 1e3, statistics.median(cached) * 1e3
    print(f"lineage median: novel {n_med:.2f} ms, cached {c_med * 1e3:.1f} us")


if __name__ == "__main__":
    main()
