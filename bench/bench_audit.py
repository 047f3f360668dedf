"""Audit journal benchmark: events per second and the latency an append adds to a statement.

Runs the real FileJournal (signed checkpoints on) in both durability modes with 1, 8 and 32
concurrent writers, as sessions would append decisions, and prints JSON. No thresholds: the
numbers are reported, people judge. Usage: python bench/bench_audit.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dbward.audit.chain import Signer
from dbward.audit.events import StatementDecided
from dbward.audit.journal import FileJournal


async def run(durability: str, writers: int, events: int, directory: Path) -> dict[str, float | int | str]:
    path = directory / f"journal-{durability}-{writers}.jsonl"
    j = FileJournal(path, signer=Signer(Ed25519PrivateKey.generate()), durability=durability, node="bench")
    latencies: list[float] = []
    per_writer = events // writers

    async def writer(w: int) -> None:
        for i in range(per_writer):
            ev = StatementDecided(
                user="alice",
                connection="pg",
                sql=f"SELECT * FROM t WHERE id = {w * per_writer + i}",
                effect="allow",
            )
            t0 = time.perf_counter()
            await j.append(ev)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - t0
    await j.close()
    latencies.sort()
    return {
        "durability": durability,
        "writers": writers,
        "events": per_writer * writers,
        "events_per_second": round(per_writer * writers / elapsed),
        "latency_us_median": round(statistics.median(latencies) * 1e6, 1),
        "latency_us_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1e6, 1),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(dir=".") as d:
        for durability in ("write", "fsync"):
            for writers in (1, 8, 32):
                n = args.events if durability == "write" else max(writers * 50, args.events // 10)
                results.append(await run(durability, writers, n, Path(d)))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
