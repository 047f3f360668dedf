"""``dbward policy``: explain a decision, test a policy like code, simulate a change on history.

- ``explain`` prints the decision for one statement and the grants and rules considered.
- ``test FILE`` runs a table of cases (user, connection, SQL, expected decision) so that a
  policy change can be reviewed in CI like code.
- ``simulate --since 7d`` replays the audited statements of a period against the current
  policy or a proposed ``dbward apply`` file and lists what would change.

A proposed file is applied to a throwaway copy of the current configuration (an in-memory
store), so what is simulated is exactly what ``dbward apply`` would produce.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from rich.table import Table

from dbward.cli import (
    ConfigOpt,
    DataDirOpt,
    console,
    handle_errors,
    open_store,
    require_migrated,
    run,
    settings_from,
)
from dbward.domain import Principal
from dbward.errors import NotFoundError, ValidationError
from dbward.policy.evaluator import CompiledPolicy, explain
from dbward.policy.model import PolicySet
from dbward.policy.testing import run_policy_tests
from dbward.store import migrate as store_migrate
from dbward.store.crypto import SecretBox, generate_key
from dbward.store.db import Store
from dbward.store.directory import StoreDirectory
from dbward.store.policy_source import load_policy_set

policy_app = typer.Typer(help="Explain, test and simulate access policy decisions.", no_args_is_help=True)


class _AnySecret(Mapping[str, str]):
    """Every env: reference resolves (a simulation never connects anywhere)."""

    def __getitem__(self, key: str) -> str:
        return "simulation-only-secret"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return True


async def proposed_policy_set(store: Store, file: Path) -> PolicySet:
    """The policy the store would hold after ``dbward apply -f file`` (without --prune)."""
    from dbward.audit.journal import MemoryJournal
    from dbward.declarative import apply_plan, export_state, load_file, parse_text, plan_document

    state = await export_state(store)
    with tempfile.TemporaryDirectory(prefix="dbward-simulate-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'copy.db'}"
        await store_migrate.upgrade(url)
        copy = Store.open(url, SecretBox(generate_key()))
        try:
            current_doc = parse_text(
                yaml.safe_dump({"version": 1, **state}, sort_keys=False), "current state"
            )
            env = _AnySecret()
            await apply_plan(copy, await plan_document(copy, current_doc, env=env), MemoryJournal())
            await apply_plan(copy, await plan_document(copy, load_file(file), env=env), MemoryJournal())
            return await load_policy_set(copy)
        finally:
            await copy.close()


async def _principal(store: Store, username: str) -> Principal:
    creds = await StoreDirectory(store).lookup(username)
    if creds is None:
        return Principal(user_id=0, username=username)
    return creds.principal


async def _dialect(ps: PolicySet, connection: str) -> Literal["mysql", "postgres"]:
    engine = CompiledPolicy(ps).connection_policy(connection)[0].engine
    if engine is None:
        raise NotFoundError(f"connection {connection} does not exist")
    return engine


@policy_app.command("explain")
@handle_errors
def explain_cmd(
    user: Annotated[str, typer.Option("--user", "-u", help="The dbward user.")],
    connection: Annotated[str, typer.Option("--connection", "-C", help="The connection name.")],
    sql: Annotated[str, typer.Option("--sql", help="The statement to decide.")],
    database: Annotated[
        str | None, typer.Option(help="The database (MySQL) or database the session is in.")
    ] = None,
    search_path: Annotated[str | None, typer.Option(help="PostgreSQL search_path, comma-separated.")] = None,
    client_ip: Annotated[str, typer.Option(help="The client address to decide for.")] = "127.0.0.1",
    policy: Annotated[
        Path | None, typer.Option(help="A proposed `dbward apply` file to decide with.")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print the decision for one statement and why (grants, conditions, rules considered)."""
    settings = settings_from(data_dir, config)

    async def go() -> str:
        await require_migrated(settings)
        store = open_store(settings)
        try:
            ps = await (proposed_policy_set(store, policy) if policy else load_policy_set(store))
            principal = await _principal(store, user)
            dialect = await _dialect(ps, connection)
            sp = tuple(x.strip() for x in search_path.split(",")) if search_path else ()
            return explain(
                ps,
                principal=principal,
                connection=connection,
                sql=sql,
                dialect=dialect,
                database=database,
                search_path=sp,
                client_host=client_ip,
            ).render()
        finally:
            await store.close()

    console.print(run(go()), soft_wrap=True, markup=False)


@policy_app.command("test")
@handle_errors
def test_cmd(
    file: Annotated[Path, typer.Argument(help="YAML or JSON list of cases (or {cases: [...]}).")],
    policy: Annotated[Path | None, typer.Option(help="Test a proposed `dbward apply` file instead.")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run a table of (user, connection, SQL, expected decision) cases; exit 1 on any mismatch.

    A case may leave out ``groups`` and ``roles``: they are read from the store for that user.
    """
    settings = settings_from(data_dir, config)
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError(f"{file} cannot be read as YAML: {exc}") from exc
    cases = raw.get("cases") if isinstance(raw, dict) else raw
    if not isinstance(cases, list):
        raise ValidationError(f"{file} must hold a list of cases (or a mapping with a `cases:` list)")

    async def go() -> tuple[bool, str]:
        await require_migrated(settings)
        store = open_store(settings)
        try:
            ps = await (proposed_policy_set(store, policy) if policy else load_policy_set(store))
            filled: list[Any] = []
            for case in cases:
                if (
                    isinstance(case, dict)
                    and "user" in case
                    and ("groups" not in case or "roles" not in case)
                ):
                    p = await _principal(store, str(case["user"]))
                    case = {"groups": sorted(p.groups), "roles": sorted(p.roles), **case}
                filled.append(case)
            report = run_policy_tests(ps, filled)
            return report.ok, report.render()
        finally:
            await store.close()

    ok, text = run(go())
    console.print(text, soft_wrap=True, markup=False)
    if not ok:
        raise typer.Exit(1)


def parse_since(text: str) -> datetime:
    """``7d``, ``12h``, ``30m`` or an ISO date/time."""
    units = {"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}
    if text and text[-1] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"--since takes 7d, 12h, 30m or an ISO date such as 2026-11-01, not {text!r}"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class SimChange:
    user: str
    connection: str
    sql: str
    before: str
    after: str
    reason: str
    count: int


async def simulate(
    store: Store, ps: PolicySet, since: datetime, limit: int = 200_000
) -> tuple[int, list[SimChange]]:
    from dbward.audit.store import AuditQuery, search

    cp = CompiledPolicy(ps)
    seen: Counter[tuple[str, str, str | None, str, str | None, str]] = Counter()
    after_id = 0
    while sum(seen.values()) < limit:
        rows = await search(
            store, AuditQuery(since=since, type="statement.decision"), limit=5000, after_id=after_id
        )
        if not rows:
            break
        after_id = rows[-1][0]
        for _, rec in rows:
            key = (
                str(rec.get("user") or ""),
                str(rec.get("connection") or ""),
                rec.get("database"),
                str(rec.get("sql") or ""),
                rec.get("client_addr"),
                str(rec.get("effect") or ""),
            )
            seen[key] += 1
    principals: dict[str, Principal] = {}
    changes: list[SimChange] = []
    for (user, connection, database, sql, client, before), count in seen.items():
        if user not in principals:
            principals[user] = await _principal(store, user)
        engine = cp.connection_policy(connection)[0].engine
        if engine is None:
            after, reason = "deny", f"connection {connection} no longer exists"
        else:
            ex = explain(
                cp,
                principal=principals[user],
                connection=connection,
                sql=sql,
                dialect=engine,
                database=database,
                client_host=client or "127.0.0.1",
            )
            after, reason = ex.decision.effect.value, ex.decision.message
        if after != before:
            changes.append(SimChange(user, connection, sql, before, after, reason, count))
    return sum(seen.values()), changes


@policy_app.command("simulate")
@handle_errors
def simulate_cmd(
    since: Annotated[
        str, typer.Option(help="Replay statements audited since: 7d, 12h or an ISO date.")
    ] = "7d",
    policy: Annotated[
        Path | None, typer.Option(help="A proposed `dbward apply` file (default: the current policy).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the changes as JSON.")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Replay audited statements against a policy and list what would now be decided differently."""
    settings = settings_from(data_dir, config)
    start = parse_since(since)

    async def go() -> tuple[int, list[SimChange]]:
        await require_migrated(settings)
        store = open_store(settings)
        try:
            ps = await (proposed_policy_set(store, policy) if policy else load_policy_set(store))
            return await simulate(store, ps, start)
        finally:
            await store.close()

    total, changes = run(go())
    if as_json:
        console.print_json(json.dumps([c.__dict__ for c in changes]))
        return
    what = f"the proposed policy in {policy}" if policy else "the current policy"
    if not changes:
        console.print(
            f"{total} audited statements since {start:%Y-%m-%d %H:%M} UTC: none would be decided differently by {what}"
        )
        return
    table = Table(title=f"decisions that change under {what}")
    for col in ("change", "user", "connection", "statement", "times", "why"):
        table.add_column(col, overflow="fold")
    for c in sorted(changes, key=lambda c: (c.after, -c.count)):
        label = {
            "deny": "newly denied",
            "allow": "newly allowed",
            "require_approval": "newly needs approval",
        }[c.after]
        table.add_row(label, c.user, c.connection, c.sql[:200], str(c.count), c.reason)
    console.print(table)
    by = Counter(c.after for c in changes)
    console.print(
        f"{total} audited statements since {start:%Y-%m-%d %H:%M} UTC; "
        f"{by['deny']} newly denied, {by['allow']} newly allowed, {by['require_approval']} newly needing approval"
    )
