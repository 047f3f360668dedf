"""``dbward audit``: verify the trail offline, export it, follow it, apply retention.

``verify`` checks the local journal (with the checkpoints kept beside it), the store's copy
of every node's chain, or an exported JSON-lines file, and reports the first altered,
deleted, inserted, reordered or truncated record of each chain. Exit code 1 when anything
is wrong, so it can run from cron or a SIEM check.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.table import Table

from dbward.audit.chain import load_public_key
from dbward.audit.events import AuditExported
from dbward.audit.journal import checkpoints_path, iter_records
from dbward.audit.store import AuditQuery, iter_lines, prune, to_csv_rows, verify_store
from dbward.audit.verify import VerifyReport, verify_lines
from dbward.cli import (
    ConfigOpt,
    DataDirOpt,
    admin_journal,
    console,
    handle_errors,
    open_store,
    require_migrated,
    run,
    settings_from,
)
from dbward.cli_policy import parse_since
from dbward.config import Settings
from dbward.errors import ValidationError

audit_app = typer.Typer(help="Verify, export and follow the audit trail.", no_args_is_help=True)


def _print_report(title: str, report: VerifyReport) -> None:
    table = Table(title=title)
    for col in ("chain", "records", "seq", "signed checkpoints", "status"):
        table.add_column(col)
    bad = {p.chain for p in report.problems}
    for c in report.chains.values():
        table.add_row(
            c.chain,
            str(c.records),
            f"{c.first_seq}-{c.last_seq}" if c.first_seq is not None else "-",
            str(c.checkpoints),
            "[red]FAILED[/]" if c.chain in bad else "[green]ok[/]",
        )
    console.print(table)
    for p in report.problems:
        console.print(f"[bold red]{p.kind.value}:[/] {p.message}", soft_wrap=True)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)


def _public_key(settings: Settings, given: Path | None) -> Ed25519PublicKey | None:
    path = given or settings.signing_key_path
    if not path.exists():
        pub = path.with_name(path.stem + ".pub")
        if pub.exists():
            path = pub
        else:
            return None
    return load_public_key(path)


@audit_app.command("verify")
@handle_errors
def verify_cmd(
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Verify an exported JSON-lines file.")
    ] = None,
    journal: Annotated[bool, typer.Option("--journal/--no-journal", help="Verify the local journal.")] = True,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Verify the store's copy (all nodes).")
    ] = True,
    public_key: Annotated[
        Path | None, typer.Option(help="Ed25519 public (or private) key PEM that signs checkpoints.")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check the hash chains and signed checkpoints; report the first problem of each chain."""
    settings = settings_from(data_dir, config)
    key = _public_key(settings, public_key)
    failed = False
    if file is not None:
        if not file.exists():
            raise ValidationError(f"the file {file} does not exist")
        with file.open() as f:
            report = verify_lines((ln.rstrip("\n") for ln in f), public_key=key, allow_pruned_start=True)
        _print_report(f"export {file}", report)
        failed |= not report.ok
    else:
        if journal:
            path = settings.journal_path
            if path.exists():
                cps = checkpoints_path(path)
                report = verify_lines(
                    (line for line, _ in iter_records(path)),
                    public_key=key,
                    external_checkpoints=cps.read_text().splitlines() if cps.exists() else (),
                )
                _print_report(f"journal {path}", report)
                failed |= not report.ok
            else:
                console.print(f"no local journal at {path}")
        if store:

            async def go() -> VerifyReport:
                await require_migrated(settings)
                s = open_store(settings)
                try:
                    return await verify_store(s, public_key=key)
                finally:
                    await s.close()

            report = run(go())
            _print_report("store", report)
            failed |= not report.ok
    if failed:
        raise typer.Exit(1)
    console.print("[bold green]the audit trail verifies[/]")


@audit_app.command("export")
@handle_errors
def export_cmd(
    since: Annotated[str, typer.Option(help="From: 7d, 12h or an ISO date.")] = "1d",
    until: Annotated[str | None, typer.Option(help="Until (exclusive): an ISO date.")] = None,
    user: Annotated[str | None, typer.Option(help="Only this dbward user.")] = None,
    connection: Annotated[str | None, typer.Option(help="Only this connection.")] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only types starting with this, e.g. statement.")
    ] = None,
    effect: Annotated[
        str | None, typer.Option(help="Only decisions with this effect: allow, deny, require_approval.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (verifiable) or csv.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Export audit events of a period from the store as JSON lines or CSV; the export is audited."""
    if fmt not in ("jsonl", "csv"):
        raise ValidationError("--format is jsonl or csv")
    settings = settings_from(data_dir, config)
    query = AuditQuery(
        since=parse_since(since),
        until=parse_since(until) if until else None,
        user=user,
        connection=connection,
        type=event_type,
        effect=effect,
    )

    async def go() -> list[str]:
        await require_migrated(settings)
        s = open_store(settings)
        try:
            lines = [line async for line in iter_lines(s, query)]
        finally:
            await s.close()
        j = admin_journal(settings)
        try:
            await j.append(
                AuditExported(
                    node=socket.gethostname(),
                    client_program="dbward",
                    what="audit",
                    format=fmt,
                    rows=len(lines),
                    filters={k: str(v) for k, v in query.__dict__.items() if v is not None},
                )
            )
        finally:
            await j.close()
        return lines

    lines = run(go())
    text = to_csv_rows(lines) if fmt == "csv" else "".join(line + "\n" for line in lines)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"{len(lines)} events written to {output}")


@audit_app.command("tail")
@handle_errors
def tail_cmd(
    lines: Annotated[int, typer.Option("-n", help="Show the last N events first.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    event_type: Annotated[str | None, typer.Option("--type", help="Only types starting with this.")] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print each record as JSON.")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print the latest events of the local journal, and follow it with -f."""
    settings = settings_from(data_dir, config)
    path = settings.journal_path
    if not path.exists():
        raise ValidationError(f"there is no audit journal at {path} yet; start dbward with `dbward up`")

    def show(rec: dict[str, object]) -> None:
        if event_type and not str(rec.get("type", "")).startswith(event_type):
            return
        if raw:
            typer.echo(json.dumps(rec, ensure_ascii=False))
            return
        detail = rec.get("sql") or rec.get("reason") or rec.get("object_name") or ""
        extra = f" [{rec['effect']}]" if rec.get("effect") else ""
        console.print(
            f"{rec.get('time', '')} {rec.get('seq')} {rec.get('code')} {rec.get('type')}{extra} "
            f"user={rec.get('user') or '-'} conn={rec.get('connection') or '-'} {detail}",
            markup=False,
            soft_wrap=True,
        )

    recent = [rec for _, rec in iter_records(path)][-lines:] if lines else []
    last = 0
    for rec in recent:
        show(rec)
    if recent:
        last = int(str(recent[-1]["seq"]))
    else:
        last = max((int(str(r["seq"])) for _, r in iter_records(path)), default=0)
    while follow:
        time.sleep(0.5)
        for _, rec in iter_records(path, after_seq=last):
            show(rec)
            last = int(str(rec["seq"]))


@audit_app.command("prune")
@handle_errors
def prune_cmd(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete stored events older than audit.retention_days (default five years), keeping the
    rest verifiable."""
    settings = settings_from(data_dir, config)

    async def go() -> int:
        await require_migrated(settings)
        s = open_store(settings)
        try:
            return await prune(s, settings.audit.retention_days)
        finally:
            await s.close()

    n = run(go())
    console.print(f"{n} events older than {settings.audit.retention_days} days removed from the store")
