"""Streaming cost of masking through the PostgreSQL engine: psql reads a large result with
one masked column (a pattern, and a partial mask), the same result with no masking rule (fast
path), and directly; first, the row masker alone (no sockets): CPU microseconds per row of
``RowMasker.row`` (one call a row) and ``RowMasker.rows`` (one call a read buffer).

Needs the local PostgreSQL (trust on 127.0.0.1) and psql. No assertions; prints seconds and
microseconds per row. Run: .venv/bin/python bench/bench_masking.py [rows]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.patterns import BUILTIN
from dbward.masking.rules import MaskingConfig
from dbward.node import Node
from dbward.policy.evaluator import PolicyEvaluator
from dbward.policy.model import ColumnMask, PolicySet
from dbward.proxy.masking import ResultMasks
from dbward.proxy.postgres_masking import RowMasker
from dbward.store import migrate, repo
from dbward.store.crypto import SecretBox, generate_key
from dbward.store.db import Store
from dbward.store.directory import target_from_row
from dbward.store.policy_source import StorePolicyProvider
from dbward.wire.postgres import rows as r

DB = "dbward_bench_mask"
HOST, PORT = "127.0.0.1", 5432
CHUNK = 256 * 1024  # bytes a relay reads at once


class WithRules:
    def __init__(self, inner: StorePolicyProvider, rules: list[dict[str, object]]) -> None:
        self.inner = inner
        self.rules = MaskingConfig.model_validate({"rules": rules}).rules
        self._src: PolicySet | None = None
        self._out: PolicySet | None = None

    async def current(self) -> PolicySet:
        ps = await self.inner.current()
        if ps is not self._src or self._out is None:
            self._src = ps
            self._out = ps.model_copy(update={"masking_rules": self.rules})
        return self._out


def prepare(rows: int) -> None:
    with psycopg.connect(f"postgresql://postgres@{HOST}:{PORT}/postgres", autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            c.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"postgresql://postgres@{HOST}:{PORT}/{DB}", autocommit=True) as c:
        have = c.execute("SELECT count(*) FROM pg_class WHERE relname = 'big'").fetchone()
        n = c.execute("SELECT count(*) FROM big").fetchone() if have and have[0] else None
        if not n or n[0] != rows:
            c.execute("DROP TABLE IF EXISTS big")
            c.execute("CREATE TABLE big (g int, name text, phone text)")
            c.execute(
                "INSERT INTO big SELECT g, 'name ' || g, '010-' || lpad((g %% 10000)::text, 4, '0') || '-5678' "
                "FROM generate_series(1, %s) g",
                (rows,),
            )


def masker_alone(rows: int) -> None:
    """CPU time per row of the row masker alone, over rows shaped like the table's."""
    fields = (
        r.Field(b"g", 1, 1, r.INT4, 4, -1, 0),
        r.Field(b"name", 1, 2, r.TEXT, -1, -1, 0),
        r.Field(b"phone", 1, 3, r.TEXT, -1, -1, 0),
    )
    frames = [
        r.encode_data_row([str(g).encode(), f"name {g}".encode(), f"010-{g % 10000:04d}-5678".encode()])
        for g in range(1, rows + 1)
    ]
    data = b"".join(frames)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    specs: list[tuple[str, ColumnMask]] = [
        ("phone pattern", ColumnMask(pattern=BUILTIN["phone"], rule_ids=("m",))),
        ("partial:4:4", ColumnMask(spec=MaskSpec(algorithm=Algorithm.PARTIAL, keep_first=4, keep_last=4))),
        ("token", ColumnMask(spec=MaskSpec(algorithm=Algorithm.TOKEN), rule_ids=("m",))),
    ]
    for label, mask in specs:
        masker = RowMasker(fields, ResultMasks({2: mask}), encoding="utf-8", token_key=b"k" * 32)
        t0 = time.process_time()
        for f in frames:
            masker.row(f[5:])
        one = time.process_time() - t0
        t0 = time.process_time()
        buf = bytearray()
        for c in chunks:  # as a relay reads: a buffer, complete rows masked, the rest kept
            buf += c
            _, pos, _ = masker.rows(buf, 0, len(buf))
            del buf[:pos]
        batch = time.process_time() - t0
        print(
            f"{'masker alone, ' + label:28} row() {one / rows * 1e6:5.2f} us/row, rows() {batch / rows * 1e6:5.2f} us/row"
        )


def psql(port: int, user: str, password: str | None) -> float:
    env = {**os.environ, "PGSSLMODE": "disable"}
    if password:
        env["PGPASSWORD"] = password
    t0 = time.perf_counter()
    subprocess.run(
        [
            "psql",
            "-X",
            "-h",
            HOST,
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            DB,
            "-At",
            "-c",
            "SELECT g, name, phone FROM big",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - t0


async def main(rows: int) -> None:
    masker_alone(min(rows, 200_000))
    prepare(rows)
    tmp = Path(tempfile.mkdtemp(prefix="dbward-bench-"))
    url = f"sqlite+aiosqlite:///{tmp / 'store.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, SecretBox(generate_key()))
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "alice", password="alice-password-1")
        row = await repo.create_connection(
            s,
            store.box,
            "pg",
            engine="postgres",
            host=HOST,
            port=PORT,
            username="postgres",
            password=None,
            database=DB,
            tls_mode="disable",
        )
        await repo.create_grant(
            s, "g", subject_type="user", subject_name="alice", connection="pg", privileges=["admin"]
        )
    settings = Settings(data_dir=tmp / "data")
    settings.data_dir.mkdir(parents=True)
    node = Node(settings=settings, store=store, journal=MemoryJournal(), name="bench")
    lst = await node.listen_for(target_from_row(row), port=0)
    port = lst.bound_port

    def run(label: str) -> None:
        times = sorted(psql(port, "alice", "alice-password-1") for _ in range(3))
        best = times[0]
        print(f"{label:28} {best:7.2f} s  {best / rows * 1e6:6.2f} us/row")

    t = sorted(psql(PORT, "postgres", None) for _ in range(3))[0]
    print(f"{'direct':28} {t:7.2f} s  {t / rows * 1e6:6.2f} us/row")
    await asyncio.to_thread(run, "dbward, no masking rule")
    node.gate.policy = PolicyEvaluator(
        WithRules(StorePolicyProvider(store), [{"name": "phone", "column": "phone", "pattern": "phone"}]),
        catalog=node.catalogs,
    )
    await asyncio.to_thread(run, "dbward, phone masked")
    node.gate.policy = PolicyEvaluator(
        WithRules(
            StorePolicyProvider(store), [{"name": "phone", "column": "phone", "algorithm": "partial:4:4"}]
        ),
        catalog=node.catalogs,
    )
    await asyncio.to_thread(run, "dbward, phone partial:4:4")
    node.gate.policy = PolicyEvaluator(
        WithRules(
            StorePolicyProvider(store),
            [{"name": "other", "table": "elsewhere", "column": "x", "algorithm": "full"}],
        ),
        catalog=node.catalogs,
    )
    await asyncio.to_thread(run, "dbward, rules, none matching")
    await node.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
