"""The ``dbward`` command line (typer + rich).

Every command takes ``--data-dir`` and ``--config``, validates the settings first, and turns
a :class:`~dbward.errors.DbwardError` into one sentence on stderr and a non-zero exit code,
never a traceback. Secrets are printed only where a command creates one to hand over once
(a first administrator's password, a new proxy token).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dbward.audit.events import AdminChange
from dbward.audit.journal import FileJournal
from dbward.config import CONFIG_FILE_NAME, DEFAULT_DATA_DIR, Settings, load_settings
from dbward.errors import ConfigError, DbwardError, NotFoundError, ValidationError
from dbward.store import migrate as store_migrate
from dbward.store import repo
from dbward.store.crypto import SecretBox, load_key, write_key_file
from dbward.store.db import Store

P = ParamSpec("P")
T = TypeVar("T")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="dbward",
    help="Database access governance: a MySQL/PostgreSQL proxy with policy, audit and configuration as code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
user_app = typer.Typer(help="Local dbward users, their passwords and proxy tokens.", no_args_is_help=True)
token_app = typer.Typer(help="Per-user proxy tokens (used as the password by scripts and SSO users).")
conn_app = typer.Typer(help="Target databases reachable through dbward.", no_args_is_help=True)
app.add_typer(user_app, name="user")
user_app.add_typer(token_app, name="token", no_args_is_help=True)
app.add_typer(conn_app, name="connection")

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", "-d", help="dbward's data directory (default: $DBWARD_DATA_DIR or .dbward)."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (default: <data-dir>/dbward.yaml)."),
]


# ----------------------------------------------------------------------------- plumbing
def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Print a DbwardError as one sentence and exit 1; no traceback reaches the user."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except DbwardError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("DBWARD_DEBUG"):
                raise
            err_console.print(
                f"[bold red]internal error:[/] {exc.__class__.__name__}: {exc}; "
                "run again with DBWARD_DEBUG=1 for the traceback and report it",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return wrapper


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings_from(data_dir: Path | None, config: Path | None) -> Settings:
    if config is not None and not config.exists():
        raise ConfigError(f"the settings file {config} does not exist")
    return load_settings(config_file=config, data_dir=data_dir)


def open_store(settings: Settings) -> Store:
    box = SecretBox(load_key(settings.encryption_key, settings.key_file))
    return Store.open(settings.resolved_store_url, box)


async def store_revision(settings: Settings) -> str | None:
    """The store's schema revision, or a ConfigError saying why the store cannot be reached."""
    try:
        return await store_migrate.current_revision(settings.resolved_store_url)
    except DbwardError:
        raise
    except Exception as exc:  # driver errors differ per backend; each becomes one sentence
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(
            f"the metadata store {_store_label(settings)} cannot be reached ({reason}); "
            "check store_url and that its database server is running"
        ) from exc


async def require_migrated(settings: Settings) -> None:
    url = settings.resolved_store_url
    if url.startswith("sqlite") and not (settings.data_dir / "dbward.db").exists() and not settings.store_url:
        raise ConfigError(
            f"there is no dbward store in {settings.data_dir}; run `dbward init --data-dir {settings.data_dir}`"
        )
    current = await store_revision(settings)
    head = store_migrate.head_revision()
    if current is None:
        raise ConfigError("the metadata store is empty; run `dbward init` (or `dbward migrate`) first")
    if current != head:
        raise ConfigError(
            f"the metadata store is at revision {current} but this dbward needs {head}; run `dbward migrate`"
        )


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    await require_migrated(settings)
    store = open_store(settings)
    try:
        return await fn(store)
    finally:
        await store.close()


def admin_journal(settings: Settings) -> FileJournal:
    """The node's audit journal, for administrative changes made from the command line.

    Appends wait for the disk (durability ``fsync``): the command exits right after. The
    journal file is locked per write, so this is safe while ``dbward up`` runs.
    """
    from dbward.audit.chain import Signer, load_signing_key

    key_path = settings.signing_key_path
    signer = Signer(load_signing_key(key_path)) if key_path.exists() else None
    return FileJournal(
        settings.journal_path, fsync=True, signer=signer, node=socket.gethostname(), durability="fsync"
    )


async def audit(settings: Settings, *events: AdminChange) -> None:
    journal = admin_journal(settings)
    try:
        for e in events:
            e.node = e.node or socket.gethostname()
            e.client_program = e.client_program or "dbward"
            await journal.append(e)
    finally:
        await journal.close()


def change(object_type: str, name: str, action: str, before: Any = None, after: Any = None) -> AdminChange:
    return AdminChange(
        object_type=object_type, object_name=name, action=action, before=before, after=after, source="cli"
    )


def read_secret(env_name: str | None, stdin: bool, what: str) -> str | None:
    """A secret from an environment variable or stdin; never from a command-line argument."""
    if env_name and stdin:
        raise ValidationError(f"give the {what} with --password-env or --password-stdin, not both")
    if env_name:
        if env_name not in os.environ:
            raise ValidationError(f"the environment variable {env_name} (for the {what}) is not set")
        return os.environ[env_name]
    if stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise ValidationError(f"no {what} was given on standard input")
        return value
    return None


def yes_no(v: bool) -> str:
    return "yes" if v else "no"


def fmt_time(d: datetime | None) -> str:
    if d is None:
        return "-"
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------- init
DEFAULT_SETTINGS_YAML = """\
# dbward settings. Every key is optional; the values below are the defaults.
# Environment variables override them: DBWARD_<KEY>, nested with __ (DBWARD_PROXY__MYSQL_PORT).
# See docs/configuration.md. Unknown keys are errors, so a typo never goes unnoticed.

# Metadata store: SQLite in this directory unless a PostgreSQL URL is given, e.g.
# store_url: postgresql://dbward:secret@db.internal:5432/dbward
store_url: null
log_level: INFO

proxy:
  listen_host: 127.0.0.1
  # Shared ports that route by database name "connection/database" (0 turns one off).
  mysql_port: 13306
  postgres_port: 15432
  # Client-facing TLS; a self-signed certificate is generated under tls/ when unset.
  tls_cert: null
  tls_key: null
  # Load balancers allowed to send a PROXY protocol header (CIDR ranges).
  trusted_proxies: []

api:
  listen_host: 127.0.0.1
  port: 8080

audit:
  journal_fsync: true
  # Refuse statements when the audit journal cannot be written.
  fail_closed: true
"""

ADMIN_USER = "admin"


@app.command()
@handle_errors
def init(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Initialise an existing data directory again: create what is missing and give "
            "the administrator a new one-time password. Existing keys are kept.",
        ),
    ] = False,
    admin: Annotated[str, typer.Option(help="Name of the first administrator.")] = ADMIN_USER,
) -> None:
    """Create the data directory, settings, keys and store, and a first administrator."""
    from dbward.identity.secrets import new_password

    ddir = data_dir or Path(os.environ.get("DBWARD_DATA_DIR", str(DEFAULT_DATA_DIR)))
    cfg_path = config or ddir / CONFIG_FILE_NAME
    key_path = ddir / "secret.key"
    already = [p for p in (key_path, cfg_path) if p.exists()]
    if already and not force:
        raise ConfigError(
            f"dbward is already initialised in {ddir} ({already[0].name} exists); "
            "use `dbward init --force` to create what is missing and reset the administrator's password"
        )
    if not ddir.exists():
        ddir.mkdir(parents=True, mode=0o700)  # keys and the store live here: owner only
    created: list[str] = []
    if not cfg_path.exists():
        cfg_path.write_text(DEFAULT_SETTINGS_YAML)
        created.append(f"{cfg_path} (settings)")
    settings = settings_from(ddir, config)
    if not settings.encryption_key and not settings.key_file.exists():
        write_key_file(settings.key_file)
        created.append(f"{settings.key_file} (encryption key for secrets at rest; back it up)")
    if not settings.signing_key_path.exists():
        from dbward.audit.chain import generate_signing_key

        generate_signing_key(settings.signing_key_path)
        created.append(f"{settings.signing_key_path} (audit signing key)")
    settings.journal_path.parent.mkdir(parents=True, exist_ok=True)

    async def _go() -> tuple[str, bool]:
        await store_migrate.upgrade(settings.resolved_store_url)
        store = open_store(settings)
        password = new_password(20)
        try:
            async with store.transaction() as s:
                user = await repo.get_user(s, admin)
                if user is None:
                    await repo.create_user(
                        s, store.box, admin, password=password, is_admin=True, must_change_password=True
                    )
                    new = True
                else:
                    repo.set_password(user, store.box, password)
                    user.must_change_password = True
                    user.is_admin = True
                    user.disabled = False
                    new = False
        finally:
            await store.close()
        after = {"username": admin, "admin": True, "password": "(one-time, must be changed)"}
        await audit(settings, change("user", admin, "create" if new else "update", None, after))
        return password, new

    password, new = run(_go())
    console.print(f"[bold green]dbward is initialised[/] in {ddir.resolve()}")
    for c in created:
        console.print(f"  created {c}")
    console.print(f"  store: {_store_label(settings)} (migrated to {store_migrate.head_revision()})")
    verb = "created" if new else "reset"
    console.print()
    console.print(
        f"Administrator [bold]{admin}[/] {verb}. One-time password (shown only now; change it at first login):"
    )
    console.print(f"    [bold]{password}[/]")
    console.print()
    console.print(
        f"Next: `dbward apply -f examples/dbward.example.yaml --data-dir {ddir}` to add connections and grants,"
    )
    console.print(
        f"      `dbward up --data-dir {ddir}` to start dbward, `dbward doctor --data-dir {ddir}` to check it."
    )


# ----------------------------------------------------------------------------- migrate
@app.command()
@handle_errors
def migrate(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    to: Annotated[str, typer.Option("--to", help="Target revision.")] = "head",
) -> None:
    """Bring the metadata store to the current schema, showing each step and the time left."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    settings = settings_from(data_dir, config)
    url = settings.resolved_store_url
    current = run(store_revision(settings))
    target = store_migrate.head_revision() if to == "head" else to
    pending = store_migrate.pending_revisions(current)
    console.print(f"store: {_store_label(settings)}")
    console.print(f"current revision: {current or '(empty store)'}   target revision: {target}")
    if current == target or not pending:
        console.print("[green]the store is up to date[/]; nothing to do")
        return
    for rev, doc in pending:
        console.print(f"  pending {rev}: {doc}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(ev: store_migrate.ProgressEvent) -> None:
            if ev.finished:
                progress.console.print(
                    f"  [green]applied[/] {ev.revision}: {ev.description.splitlines()[0] if ev.description else ''}"
                )
                return
            key = ev.revision or "data"
            if key not in tasks:
                tasks[key] = progress.add_task(
                    f"data migration {ev.description or key}", total=ev.total, left="estimating time left"
                )
            progress.update(tasks[key], completed=ev.done, total=ev.total, left=time_left(ev.eta_seconds))

        run(store_migrate.upgrade(url, target, report))
    console.print(f"[bold green]the store is at revision {target}[/]")


def time_left(seconds: float | None) -> str:
    """``about 2 h 05 min left``: the estimate ``dbward migrate`` shows for data migrations."""
    if seconds is None:
        return "estimating time left"
    secs = round(seconds)
    if secs < 60:
        return f"about {secs} s left"
    minutes, _ = divmod(secs, 60)
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min left" if hours else f"about {minutes} min left"


def _store_label(settings: Settings) -> str:
    url = settings.resolved_store_url
    if url.startswith("sqlite"):
        return "SQLite " + url.split("///", 1)[-1]
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ----------------------------------------------------------------------------- up
def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.Runner()


def client_hint(engine: str, host: str, port: int, database: str | None, user: str = "<user>") -> str:
    if engine == "postgres":
        return f'psql "host={host} port={port} dbname={database or "<database>"} user={user}"'
    db = f" {database}" if database else ""
    return f"mysql -h {host} -P {port} -u {user} -p{db}"


PORT_FIX = (
    "free the port or change it (proxy.*_port in dbward.yaml, or the connection's listen_port), "
    "then run `dbward doctor`"
)


async def serve_node(
    settings: Settings,
    *,
    banner_extra: Callable[[], None] | None = None,
    ready_line: str = "dbward is up",
    port_fix: str = PORT_FIX,
) -> None:
    """Start a node, print where it listens, and run until SIGINT/SIGTERM, then drain."""
    from dbward.heap import freeze_startup_heap
    from dbward.node import Node, load_engines
    from dbward.proxy.engine import ENGINES

    node = Node.from_settings(settings)
    # Background threads (SQLite store writes, fsync) must not hold the GIL for the default
    # 5 ms while the event loop waits to relay the next statement.
    sys.setswitchinterval(0.0005)
    api_server: Any = None  # dbward.api.server.ApiServer once started
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        load_engines()
        targets = await node.directory.all_targets()
        # before any client can connect: the collection of the startup heap stalls nobody
        freeze_startup_heap("node")
        try:
            listeners = await node.start_proxies()
        except OSError as exc:
            raise ConfigError(f"{exc.strerror}; {port_fix}") from exc
        processes = await node.start_workers()
        p = settings.proxy
        table = Table(title="dbward listeners", show_lines=False)
        table.add_column("address")
        table.add_column("serves")
        table.add_column("connect with")
        for lst in listeners:
            host = lst.host
            if lst.target is not None:
                serves = f"connection {lst.target.name} ({lst.protocol})"
                hint = client_hint(lst.protocol, host, lst.bound_port, lst.target.database)
            else:
                serves = f"any connection ({lst.protocol}), database name connection/database"
                hint = client_hint(lst.protocol, host, lst.bound_port, "<connection>/<database>")
            table.add_row(f"{host}:{lst.bound_port}", serves, hint)
        console.print(table)
        for t in targets:
            if t.listen_port and t.engine.value not in ENGINES:
                console.print(
                    f"[yellow]warning:[/] connection {t.name} has listen_port {t.listen_port} but the "
                    f"{t.engine.value} engine is not available in this build yet; it is not served"
                )
        for protocol, port in (("mysql", p.mysql_port), ("postgres", p.postgres_port)):
            if port and protocol not in ENGINES:
                console.print(
                    f"[yellow]warning:[/] the shared {protocol} port {port} is not served: the {protocol} "
                    "engine is not available in this build yet"
                )
        if not listeners:
            console.print(
                "[yellow]no listeners are open[/]: add a connection with a listen_port (`dbward apply`)"
            )
        node.start_audit_forwarding()  # the store copy feeds the console's audit view and the API
        node.start_approvals()  # notifications and the expiry of due approval requests
        node.start_cluster()  # live sessions shared with the other nodes, kills from them
        if not settings.api.port:
            console.print("web console and API: off (api.port is 0)")
        else:
            from dbward.api.server import ApiServer

            api_server = ApiServer(node)
            try:
                await api_server.start(settings.api.listen_host, settings.api.port)
            except OSError as exc:
                raise ConfigError(f"{exc.strerror}; set api.port in dbward.yaml or DBWARD_API__PORT") from exc
            console.print(
                f"web console and API: http://{settings.api.listen_host}:{api_server.port}/ "
                f"(API under /api/v1, OpenAPI at /api/v1/openapi.json)"
            )
        if processes > 1:
            console.print(f"proxy processes: {processes} (proxy.workers), sharing every listener")
        console.print(f"audit journal: {settings.journal_path}")
        if banner_extra is not None:
            banner_extra()
        freeze_startup_heap("node, ready")  # and what the listeners, the API and the shipper added
        console.print(f"[bold green]{ready_line}[/] (Ctrl-C to stop)")
        sys.stdout.flush()
        await stop.wait()
        console.print("stopping: no new connections; waiting up to 10 s for live sessions to finish")
    finally:
        try:
            if api_server is not None:
                await api_server.stop()
            await node.stop(drain_timeout=10.0)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    console.print("dbward stopped")


@app.command()
@handle_errors
def up(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Run everything in one process: store, proxies (and API and console as they land)."""
    import logging

    settings = settings_from(data_dir, config)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)  # the banner says what migrate did
    load_key(settings.encryption_key, settings.key_file)  # a clear message before anything starts
    url = settings.resolved_store_url
    current = run(store_revision(settings))
    if current != store_migrate.head_revision():
        console.print(f"migrating the store from {current or '(empty)'} to {store_migrate.head_revision()}")
        run(store_migrate.upgrade(url))
    with _runner() as runner:
        runner.run(serve_node(settings))


# ----------------------------------------------------------------------------- apply / export
@app.command()
@handle_errors
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="The YAML file to apply.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print the changes.")] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also delete objects that are absent from the file, in the sections the file contains.",
        ),
    ] = False,
) -> None:
    """Create or update users, groups, roles, connections and grants from a YAML file."""
    from dbward.declarative import apply_plan, load_file, plan_document

    settings = settings_from(data_dir, config)
    doc = load_file(file)

    async def _go(store: Store) -> None:
        plan = await plan_document(store, doc, prune=prune)
        for w in plan.warnings:
            err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
        if plan.empty:
            console.print(f"no changes: dbward already matches {file}")
            return
        table = Table(title=("planned changes (dry run)" if dry_run else "changes"))
        table.add_column("action")
        table.add_column("kind")
        table.add_column("name")
        table.add_column("details")
        colours = {"create": "green", "update": "yellow", "delete": "red"}
        for c in plan.changes:
            table.add_row(f"[{colours[c.action]}]{c.action}[/]", c.section.kind, c.name, c.summary())
        console.print(table)
        n = plan.counts()
        summary = f"{n['create']} to create, {n['update']} to update, {n['delete']} to delete"
        if dry_run:
            console.print(f"dry run: {summary}; nothing was changed")
            return
        journal = admin_journal(settings)
        try:
            await apply_plan(store, plan, journal, base_dir=doc.base_dir, node=socket.gethostname())
        finally:
            await journal.close()
        console.print(
            f"[bold green]applied[/]: {n['create']} created, {n['update']} updated, {n['delete']} deleted"
        )

    run(with_store(settings, _go))


@app.command()
@handle_errors
def export(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the current users, groups, roles, connections and grants in the apply format."""
    from dbward.declarative import export_yaml

    settings = settings_from(data_dir, config)
    text = run(with_store(settings, export_yaml))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")


# ----------------------------------------------------------------------------- user
PasswordEnvOpt = Annotated[
    str | None, typer.Option("--password-env", help="Read the password from this environment variable.")
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@user_app.command("add")
@handle_errors
def user_add(
    username: str,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user a dbward administrator.")] = False,
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    password_env: PasswordEnvOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Add a local user. Without a password option, a one-time password is generated and shown once."""
    from dbward.identity.secrets import new_password

    settings = settings_from(data_dir, config)
    given = read_secret(password_env, password_stdin, "password")
    password = given or new_password(20)

    async def _go(store: Store) -> None:
        async with store.transaction() as s:
            await repo.create_user(
                s,
                store.box,
                username,
                password=password,
                is_admin=admin,
                display_name=display_name,
                email=email,
                must_change_password=given is None,
            )
        after = {
            "username": username,
            "admin": admin,
            "display_name": display_name,
            "email": email,
            "password": "(set)",
        }
        await audit(settings, change("user", username, "create", None, after))

    run(with_store(settings, _go))
    console.print(f"user [bold]{username}[/] created" + (" (administrator)" if admin else ""))
    if given is None:
        console.print("one-time password (shown only now; the user must change it at first login):")
        console.print(f"    [bold]{password}[/]")


@user_app.command("list")
@handle_errors
def user_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List users."""
    settings = settings_from(data_dir, config)

    async def _go(store: Store) -> list[list[str]]:
        async with store.session() as s:
            rows = []
            for u in await repo.list_users(s):
                tokens = await repo.list_proxy_tokens(s, u.username)
                live = [t for t in tokens if t.revoked_at is None]
                rows.append(
                    [
                        u.username,
                        u.display_name or "-",
                        u.email or "-",
                        yes_no(u.is_admin),
                        yes_no(u.disabled),
                        yes_no(u.password_hash is not None),
                        yes_no(u.must_change_password),
                        str(len(live)),
                    ]
                )
            return rows

    rows = run(with_store(settings, _go))
    table = Table(title="users")
    for col in (
        "username",
        "display name",
        "email",
        "admin",
        "disabled",
        "password",
        "must change",
        "tokens",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)


def _set_disabled(username: str, disabled: bool, data_dir: Path | None, config: Path | None) -> None:
    settings = settings_from(data_dir, config)

    async def _go(store: Store) -> bool:
        async with store.transaction() as s:
            user = await repo.require_user(s, username)
            before = user.disabled
            await repo.update_user(s, username, disabled=disabled)
        if before != disabled:
            await audit(
                settings, change("user", username, "update", {"disabled": before}, {"disabled": disabled})
            )
        return before != disabled

    changed = run(with_store(settings, _go))
    state = "disabled" if disabled else "enabled"
    console.print(f"user {username} {'is now' if changed else 'was already'} {state}")


@user_app.command("disable")
@handle_errors
def user_disable(username: str, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Disable a user: new logins are refused (live sessions are not ended)."""
    _set_disabled(username, True, data_dir, config)


@user_app.command("enable")
@handle_errors
def user_enable(username: str, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Enable a disabled user."""
    _set_disabled(username, False, data_dir, config)


@user_app.command("set-password")
@handle_errors
def user_set_password(
    username: str,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    password_env: PasswordEnvOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Set a user's password. Without a password option, a one-time password is generated and shown once."""
    from dbward.identity.secrets import new_password

    settings = settings_from(data_dir, config)
    given = read_secret(password_env, password_stdin, "password")
    password = given or new_password(20)

    async def _go(store: Store) -> None:
        async with store.transaction() as s:
            user = await repo.require_user(s, username)
            repo.set_password(user, store.box, password)
            user.must_change_password = given is None
        await audit(
            settings, change("user", username, "update", {"password": "(secret)"}, {"password": "(changed)"})
        )

    run(with_store(settings, _go))
    console.print(f"the password of user {username} was changed")
    if given is None:
        console.print("one-time password (shown only now; the user must change it at first login):")
        console.print(f"    [bold]{password}[/]")


def _token_create(
    username: str,
    name: str,
    expires_in_days: int | None,
    data_dir: Path | None,
    config: Path | None,
    *,
    rotate: bool,
) -> None:
    settings = settings_from(data_dir, config)
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None

    async def _go(store: Store) -> str:
        async with store.transaction() as s:
            existing = await repo.get_proxy_token(s, username, name)
            if rotate and existing is None:
                raise NotFoundError(f"user {username} has no proxy token named {name}; create it first")
            if not rotate and existing is not None and existing.revoked_at is None:
                raise ValidationError(
                    f"user {username} already has a proxy token named {name}; use `dbward user token rotate`"
                )
            secret = await repo.create_proxy_token(s, store.box, username, name, expires_at=expires)
        after = {"user": username, "token": name, "expires_at": expires.isoformat() if expires else None}
        await audit(
            settings,
            change("proxy_token", f"{username}/{name}", "update" if rotate else "create", None, after),
        )
        return secret

    secret = run(with_store(settings, _go))
    console.print(
        f"proxy token {name} of user {username} {'rotated' if rotate else 'created'}"
        + (f"; expires {fmt_time(expires)}" if expires else "")
    )
    console.print("the token (shown only now; use it as the password when connecting through dbward):")
    console.print(f"    [bold]{secret}[/]")


ExpiresOpt = Annotated[
    int | None, typer.Option("--expires-in-days", min=1, help="Expire the token after this many days.")
]


@token_app.command("create")
@handle_errors
def token_create(
    username: str,
    name: str,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    expires_in_days: ExpiresOpt = None,
) -> None:
    """Create a proxy token; the secret is shown once."""
    _token_create(username, name, expires_in_days, data_dir, config, rotate=False)


@token_app.command("rotate")
@handle_errors
def token_rotate(
    username: str,
    name: str,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    expires_in_days: ExpiresOpt = None,
) -> None:
    """Replace a proxy token's secret; the old one stops working at once."""
    _token_create(username, name, expires_in_days, data_dir, config, rotate=True)


@token_app.command("revoke")
@handle_errors
def token_revoke(username: str, name: str, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Revoke a proxy token."""
    settings = settings_from(data_dir, config)

    async def _go(store: Store) -> None:
        async with store.transaction() as s:
            await repo.revoke_proxy_token(s, username, name)
        await audit(
            settings,
            change("proxy_token", f"{username}/{name}", "delete", {"user": username, "token": name}, None),
        )

    run(with_store(settings, _go))
    console.print(f"proxy token {name} of user {username} revoked")


@token_app.command("list")
@handle_errors
def token_list(username: str, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List a user's proxy tokens (never their secrets)."""
    settings = settings_from(data_dir, config)

    async def _go(store: Store) -> list[list[str]]:
        async with store.session() as s:
            now = datetime.now(UTC)
            rows = []
            for t in await repo.list_proxy_tokens(s, username):
                exp = (
                    t.expires_at.replace(tzinfo=UTC)
                    if t.expires_at and t.expires_at.tzinfo is None
                    else t.expires_at
                )
                state = "revoked" if t.revoked_at else ("expired" if exp and exp <= now else "active")
                rows.append(
                    [t.name, state, fmt_time(t.created_at), fmt_time(t.expires_at), fmt_time(t.last_used_at)]
                )
            return rows

    rows = run(with_store(settings, _go))
    table = Table(title=f"proxy tokens of {username}")
    for col in ("name", "state", "created", "expires", "last used"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)


# ----------------------------------------------------------------------------- connection
@conn_app.command("add")
@handle_errors
def connection_add(
    name: str,
    engine: Annotated[str, typer.Option(help="mysql or postgres.")],
    host: Annotated[str, typer.Option(help="Target host.")],
    port: Annotated[int, typer.Option(help="Target port.")],
    username: Annotated[str, typer.Option(help="The account dbward uses on the target.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    database: Annotated[str | None, typer.Option(help="Default database.")] = None,
    password_env: PasswordEnvOpt = None,
    password_stdin: PasswordStdinOpt = False,
    tls_mode: Annotated[
        str, typer.Option(help="disable, prefer, require, verify-ca or verify-full.")
    ] = "prefer",
    tls_ca: Annotated[str | None, typer.Option(help="CA certificate file for verify-ca/verify-full.")] = None,
    listen_port: Annotated[int | None, typer.Option(help="dbward port that serves this connection.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Register a target database; its password is stored encrypted."""
    settings = settings_from(data_dir, config)
    password = read_secret(password_env, password_stdin, "connection password")

    async def _go(store: Store) -> None:
        async with store.transaction() as s:
            await repo.create_connection(
                s,
                store.box,
                name,
                engine=engine,
                host=host,
                port=port,
                username=username,
                password=password,
                database=database,
                tls_mode=tls_mode,
                tls_ca=tls_ca,
                listen_port=listen_port,
                description=description,
            )
            await repo.bump_policy_version(s)
        after = {
            "engine": engine,
            "host": host,
            "port": port,
            "username": username,
            "database": database,
            "tls_mode": tls_mode,
            "listen_port": listen_port,
            "password": "(secret)" if password is not None else None,
        }
        await audit(settings, change("connection", name, "create", None, after))

    run(with_store(settings, _go))
    console.print(f"connection [bold]{name}[/] added ({engine} {host}:{port})")


@conn_app.command("list")
@handle_errors
def connection_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List connections (never their credentials)."""
    settings = settings_from(data_dir, config)

    async def _go(store: Store) -> list[list[str]]:
        async with store.session() as s:
            return [
                [
                    c.name,
                    c.engine,
                    f"{c.host}:{c.port}",
                    c.database or "-",
                    c.username,
                    c.tls_mode,
                    str(c.listen_port or "-"),
                ]
                for c in await repo.list_connections(s)
            ]

    rows = run(with_store(settings, _go))
    table = Table(title="connections")
    for col in ("name", "engine", "target", "database", "upstream user", "tls", "listen port"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)


@conn_app.command("show")
@handle_errors
def connection_show(name: str, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Show one connection and the grants on it (the password only as set / not set)."""
    settings = settings_from(data_dir, config)

    async def _go(store: Store) -> tuple[list[tuple[str, str]], list[str]]:
        async with store.session() as s:
            c = await repo.require_connection(s, name)
            fields = [
                ("name", c.name),
                ("engine", c.engine),
                ("host", c.host),
                ("port", str(c.port)),
                ("database", c.database or "-"),
                ("username", c.username),
                ("password", "set (stored encrypted)" if c.secret else "not set"),
                ("tls_mode", c.tls_mode),
                ("tls_ca", c.tls_ca or "-"),
                ("listen_port", str(c.listen_port or "-")),
                ("description", c.description or "-"),
                ("options", str(c.options or {})),
            ]
            grants = [
                f"{g.name}: {g.subject_type}:{g.subject_name} {', '.join(g.privileges or [])}"
                for g, cname in await repo.list_grants(s)
                if cname == name
            ]
            return fields, grants

    fields, grants = run(with_store(settings, _go))
    table = Table(title=f"connection {name}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for k, v in fields:
        table.add_row(k, v)
    table.add_row("grants", "\n".join(grants) or "-")
    console.print(table)


@conn_app.command("remove")
@handle_errors
def connection_remove(
    name: str,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a connection and every grant on it."""
    settings = settings_from(data_dir, config)
    if not yes and not typer.confirm(f"remove connection {name} and every grant on it?"):
        raise typer.Exit(1)

    async def _go(store: Store) -> None:
        async with store.transaction() as s:
            c = await repo.require_connection(s, name)
            before = {"engine": c.engine, "host": c.host, "port": c.port, "database": c.database}
            await repo.delete_connection(s, name)
        await audit(settings, change("connection", name, "delete", before, None))

    run(with_store(settings, _go))
    console.print(f"connection {name} removed")


@conn_app.command("test")
@handle_errors
def connection_test(
    name: str,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each step.")] = 5.0,
) -> None:
    """Check a connection step by step: reachability, TLS, and the stored credentials."""
    from dbward.doctor import test_connection

    settings = settings_from(data_dir, config)

    async def _go(store: Store) -> list[Any]:
        async with store.session() as s:
            c = await repo.require_connection(s, name)
            password = repo.connection_secret(c, store.box)
            from dbward.store.directory import target_from_row

            target = target_from_row(c)
        return await test_connection(target, password, timeout=timeout)

    steps = run(with_store(settings, _go))
    table = Table(title=f"connection test: {name}")
    table.add_column("step")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("details")
    ok = True
    for st in steps:
        colour = {"pass": "green", "fail": "red", "skip": "dim", "warn": "yellow"}[st.status]
        ok = ok and st.status != "fail"
        table.add_row(st.name, f"[{colour}]{st.status}[/]", f"{st.ms:.0f} ms", st.detail)
    console.print(table)
    if not ok:
        raise typer.Exit(1)
    console.print(f"[green]connection {name} works[/]")


# ----------------------------------------------------------------------------- doctor
@app.command()
@handle_errors
def doctor(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """The installation checklist: settings, keys, ports, store and every connection."""
    from dbward.doctor import run_doctor

    results = run(run_doctor(data_dir, config))
    table = Table(title="dbward doctor")
    table.add_column("check")
    table.add_column("result")
    table.add_column("details")
    table.add_column("fix")
    failed = 0
    for r in results:
        colour = {"pass": "green", "fail": "red", "skip": "dim", "warn": "yellow"}[r.status]
        failed += r.status == "fail"
        table.add_row(r.name, f"[{colour}]{r.status}[/]", r.detail, r.fix or "")
    console.print(table)
    for r in results:
        if r.status == "fail":  # once more as plain sentences, whole and easy to copy
            console.print(f"[red]failed:[/] {r.name}: {r.detail}", soft_wrap=True)
            if r.fix:
                console.print(f"   fix: {r.fix}", soft_wrap=True)
    if failed:
        console.print(f"[bold red]{failed} check{'s' if failed > 1 else ''} failed[/]")
        raise typer.Exit(1)
    console.print("[bold green]all checks passed[/]")


# ----------------------------------------------------------------------------- demo
@app.command()
@handle_errors
def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", "-d", help="Keep the demo here (default: a temporary directory removed on exit)."
        ),
    ] = None,
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="dbward port that serves the demo database.")] = 15433,
) -> None:
    """Start dbward with a throwaway PostgreSQL full of sample personal data."""
    import logging

    from dbward.demo import run_demo

    if config is not None:
        raise ValidationError("the demo writes its own settings; --config is not used with `dbward demo`")
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with _runner() as runner:
        runner.run(run_demo(data_dir, port, console))


def _register_subcommands() -> None:
    # Imported here: these modules use the helpers above.
    from dbward.cli_audit import audit_app
    from dbward.cli_policy import policy_app

    app.add_typer(audit_app, name="audit")
    app.add_typer(policy_app, name="policy")


if __name__ != "__main__":
    _register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    # `python -m dbward.cli`: run the importable module's app, which has every subcommand
    # (registering them from this copy would import dbward.cli a second time, half-built).
    from dbward.cli import main as _main

    _main()
