"""Streaming cost of masking and row limits through the MySQL/MariaDB engine: the mariadb
client reads a large result with one masked column (a pattern, a partial mask, a retyped
DECIMAL), the same result with no masking rule (the fast path), with only a row limit above
the row count (rows counted and relayed), and directly; first, the response rewriter alone (no
sockets): CPU microseconds per row of ``ResponseRewriter.feed`` over 256 KiB reads.

Needs the local MariaDB (root without password on 127.0.0.1:3306, and the account
dbward_upstream the test fixtures create) and the mariadb client. No assertions; prints
seconds and microseconds per row. Run: .venv/bin/python bench/bench_mysql_masking.py [rows]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.patterns import BUILTIN
from dbward.masking.rules import MaskingConfig
from dbward.node import Node
from dbward.policy.evaluator import PolicyEvaluator
from dbward.policy.model import ColumnMask, ConnectionPolicy, MaskingPlan, PolicySet
from dbward.proxy.mysql_masking import ResponseRewriter, ResultPolicy
from dbward.store import migrate, repo
from dbward.store.crypto import SecretBox, generate_key
from dbward.store.db import Store
from dbward.store.directory import target_from_row
from dbward.store.policy_source import StorePolicyProvider
from dbward.wire.mysql.constants import FieldType, ServerStatus
from dbward.wire.mysql.messages import ColumnDefinition41, OKPacket
from dbward.wire.mysql.packets import encode_packet, lenenc_int
from dbward.wire.mysql.rows import encode_text_row
from dbward.wire.mysql.scanner import ResponseKind

DB = "dbward_bench"
HOST, PORT = "127.0.0.1", 3306
UPSTREAM_USER, UPSTREAM_PASSWORD = "dbward_upstream", "upstream-secret-1"
SQL = "SELECT g, name, phone, amount FROM big"
CHUNK = 256 * 1024  # bytes a relay reads at once


class WithRules:
    def __init__(
        self, inner: StorePolicyProvider, rules: list[dict[str, object]], max_rows: int | None = None
    ) -> None:
        self.inner = inner
        self.rules = MaskingConfig.model_validate({"rules": rules}).rules
        self.max_rows = max_rows
        self._src: PolicySet | None = None
        self._out: PolicySet | None = None

    async def current(self) -> PolicySet:
        ps = await self.inner.current()
        if ps is not self._src or self._out is None:
            self._src = ps
            conns = ps.connections
            if self.max_rows is not None:
                conns = (ConnectionPolicy(connection="maria", max_rows=self.max_rows), *conns)
            self._out = ps.model_copy(update={"masking_rules": self.rules, "connections": conns})
        return self._out


def mysql(*args: str, sql: str = "") -> None:
    subprocess.run(
        ["mariadb", "-h", HOST, "--skip-ssl", *args, "-e", sql], stdout=subprocess.DEVNULL, check=True
    )


def prepare(rows: int) -> None:
    mysql("-uroot", sql=f"CREATE DATABASE IF NOT EXISTS {DB}")
    out = subprocess.run(
        ["mariadb", "-h", HOST, "-uroot", "-N", "-e", f"SELECT count(*) FROM {DB}.big"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0 or out.stdout.strip() != str(rows):
        mysql(
            "-uroot",
            DB,
            sql=(
                "DROP TABLE IF EXISTS big; CREATE TABLE big (g INT PRIMARY KEY, name VARCHAR(40), "
                "phone VARCHAR(20), amount DECIMAL(12,2)); INSERT INTO big SELECT seq, concat('name ', seq), "
                "concat('010-', lpad(seq % 10000, 4, '0'), '-', lpad(seq % 7919, 4, '0')), seq / 100 "
                f"FROM seq_1_to_{rows}"
            ),
        )


def rewriter_alone(rows: int) -> None:
    """CPU time per row of the response rewriter alone, over a text result shaped like the table's."""

    def col(name: str, typ: int, charset: int) -> ColumnDefinition41:
        return ColumnDefinition41(
            schema=DB,
            table="big",
            org_table="big",
            name=name,
            org_name=name,
            charset=charset,
            column_length=40,
            type=typ,
            flags=0,
            decimals=0,
        )

    cols = [
        col("g", FieldType.LONG, 63),
        col("name", FieldType.VAR_STRING, 45),
        col("phone", FieldType.VAR_STRING, 45),
    ]
    packets = [lenenc_int(len(cols)), *(c.encode() for c in cols)]
    packets += [
        encode_text_row(
            [str(g).encode(), f"name {g}".encode(), f"010-{g % 10000:04d}-{g % 7919:04d}".encode()]
        )
        for g in range(1, rows + 1)
    ]
    packets.append(OKPacket(header=0xFE, status=int(ServerStatus.AUTOCOMMIT)).encode())
    data = b"".join(encode_packet(p, (i + 1) & 0xFF) for i, p in enumerate(packets))
    specs: list[tuple[str, ColumnMask]] = [
        ("phone pattern", ColumnMask(pattern=BUILTIN["phone"], rule_ids=("m",))),
        ("partial:4:4", ColumnMask(spec=MaskSpec(algorithm=Algorithm.PARTIAL, keep_first=4, keep_last=4))),
        ("full", ColumnMask(spec=MaskSpec(algorithm=Algorithm.FULL))),
        ("token", ColumnMask(spec=MaskSpec(algorithm=Algorithm.TOKEN), rule_ids=("m",))),
    ]
    for label, mask in specs:
        policy = ResultPolicy(plan=MaskingPlan(columns={2: mask}), limit=None, connection="maria")
        rw = ResponseRewriter(ResponseKind.QUERY, deprecate_eof=True, policies=[policy], token_key=b"k" * 32)
        t0 = time.process_time()
        for i in range(0, len(data), CHUNK):
            rw.feed(data[i : i + CHUNK])
        took = time.process_time() - t0
        print(f"{'rewriter alone, ' + label:34} {took / rows * 1e6:5.2f} us/row")


def read_all(port: int, user: str, password: str) -> float:
    t0 = time.perf_counter()
    mysql("-P", str(port), f"-u{user}", f"-p{password}" if password else "--skip-password", "-N", DB, sql=SQL)
    return time.perf_counter() - t0


async def main(rows: int) -> None:
    rewriter_alone(min(rows, 200_000))
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
            "maria",
            engine="mysql",
            host=HOST,
            port=PORT,
            username=UPSTREAM_USER,
            password=UPSTREAM_PASSWORD,
            database=DB,
            tls_mode="disable",
        )
        await repo.create_grant(
            s, "g", subject_type="user", subject_name="alice", connection="maria", privileges=["admin"]
        )
    settings = Settings(data_dir=tmp / "data")
    settings.data_dir.mkdir(parents=True)
    node = Node(settings=settings, store=store, journal=MemoryJournal(), name="bench")
    lst = await node.listen_for(target_from_row(row), port=0)
    port = lst.bound_port

    def run(label: str) -> None:
        best = sorted(read_all(port, "alice", "alice-password-1") for _ in range(3))[0]
        print(f"{label:34} {best:7.2f} s  {best / rows * 1e6:6.2f} us/row")

    t = sorted(read_all(PORT, "root", "") for _ in range(3))[0]
    print(f"{'direct':34} {t:7.2f} s  {t / rows * 1e6:6.2f} us/row")
    await asyncio.to_thread(run, "dbward, no masking rule")
    phone: list[dict[str, object]] = [
        {"name": "phone", "table": "big", "column": "phone", "pattern": "phone"}
    ]
    node.gate.policy = PolicyEvaluator(WithRules(StorePolicyProvider(store), phone), catalog=node.catalogs)
    await asyncio.to_thread(run, "dbward, phone masked")
    partial: list[dict[str, object]] = [
        {"name": "phone", "table": "big", "column": "phone", "algorithm": "partial:4:4"}
    ]
    node.gate.policy = PolicyEvaluator(WithRules(StorePolicyProvider(store), partial), catalog=node.catalogs)
    await asyncio.to_thread(run, "dbward, phone partial:4:4")
    amount: list[dict[str, object]] = [
        {"name": "amount", "table": "big", "column": "amount", "algorithm": "full"}
    ]
    node.gate.policy = PolicyEvaluator(WithRules(StorePolicyProvider(store), amount), catalog=node.catalogs)
    await asyncio.to_thread(run, "dbward, DECIMAL masked (retyped)")
    node.gate.policy = PolicyEvaluator(
        WithRules(StorePolicyProvider(store), [], max_rows=rows * 2), catalog=node.catalogs
    )
    await asyncio.to_thread(run, "dbward, row limit above the count")
    node.gate.policy = PolicyEvaluator(
        WithRules(StorePolicyProvider(store), [], max_rows=100), catalog=node.catalogs
    )
    await asyncio.to_thread(run, "dbward, cut at 100 rows (drained)")
    await node.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
