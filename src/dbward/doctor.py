"""Diagnostics behind ``dbward doctor`` and ``dbward connection test``.

Each check returns a :class:`Check` (pass / fail / warn / skip) with a sentence saying what
was found and, for a failure, what to do about it. Nothing here changes anything: ports are
probed by binding and closing at once, targets by connecting and logging out.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dbward.config import CONFIG_FILE_NAME, DEFAULT_DATA_DIR, Settings, load_settings
from dbward.domain import Target
from dbward.errors import DbwardError

Status = Literal["pass", "fail", "warn", "skip"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None
    ms: float = 0.0


# ----------------------------------------------------------------------------- connection test
def _client_tls_context(target: Target) -> ssl.SSLContext:
    mode = target.tls_mode.value
    if mode in ("verify-ca", "verify-full"):
        ctx = (
            ssl.create_default_context(cafile=target.tls_ca)
            if target.tls_ca
            else ssl.create_default_context()
        )
        ctx.check_hostname = mode == "verify-full"
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _timed(fn: Callable[[], Awaitable[str]], name: str) -> Check:
    started = time.monotonic()
    try:
        detail = await fn()
        return Check(name, "pass", detail, ms=(time.monotonic() - started) * 1000)
    except _Skip as exc:
        return Check(name, "skip", str(exc), ms=(time.monotonic() - started) * 1000)
    except _Warn as exc:
        return Check(name, "warn", str(exc), ms=(time.monotonic() - started) * 1000)
    except Exception as exc:  # every failure becomes a row in the report, whatever its type
        return Check(name, "fail", _reason(exc), ms=(time.monotonic() - started) * 1000)


class _Skip(Exception):
    pass


class _Warn(Exception):
    pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DbwardError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text


async def _tls_probe(target: Target, timeout: float) -> str:
    """Ask the target for TLS the way its protocol does, and complete a handshake if offered."""
    mode = target.tls_mode.value
    if mode == "disable":
        raise _Skip("tls_mode is disable: dbward talks to this target in plain text")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            if target.engine.value == "postgres":
                writer.write(struct.pack("!ii", 8, 80877103))  # SSLRequest
                await writer.drain()
                offered = (await reader.readexactly(1)) == b"S"
            else:
                # MySQL initial handshake: 3-byte length, sequence id, then the payload.
                header = await reader.readexactly(4)
                payload = await reader.readexactly(int.from_bytes(header[:3], "little"))
                if payload[:1] == b"\xff":
                    raise OSError(
                        0, "the server refused the connection: " + payload[9:].decode(errors="replace")
                    )
                pos = payload.index(b"\x00", 1) + 1 + 4 + 8 + 1
                caps = int.from_bytes(payload[pos : pos + 2], "little")
                offered = bool(caps & 0x0800)  # CLIENT_SSL
                if offered:
                    flags = (
                        0x0800 | 0x0200 | 0x8000 | 0x00080000
                    )  # SSL, PROTOCOL_41, SECURE_CONN, PLUGIN_AUTH
                    body = struct.pack("<IIB", flags, 16 * 1024 * 1024, 45) + b"\x00" * 23
                    writer.write(len(body).to_bytes(3, "little") + b"\x01" + body)
                    await writer.drain()
            if not offered:
                if mode == "prefer":
                    raise _Warn("the server does not offer TLS; tls_mode prefer falls back to plain text")
                raise OSError(0, f"the server does not offer TLS but tls_mode is {mode}")
            server_hostname = target.host if mode == "verify-full" else None
            await writer.start_tls(_client_tls_context(target), server_hostname=server_hostname)
            sslobj = writer.get_extra_info("ssl_object")
            version = sslobj.version() if sslobj else "TLS"
            cipher = sslobj.cipher()[0] if sslobj and sslobj.cipher() else ""
            verified = (
                " (certificate verified)" if mode.startswith("verify") else " (certificate not verified)"
            )
            return f"{version} {cipher}{verified}"
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass


async def _login_mysql(target: Target, password: str | None, timeout: float) -> str:
    import pymysql

    def _go() -> str:
        kwargs: dict[str, object] = {}
        mode = target.tls_mode.value
        if mode == "disable":
            kwargs["ssl_disabled"] = True
        elif mode != "prefer":
            kwargs["ssl"] = _client_tls_context(target)
        conn = pymysql.connect(
            host=target.host,
            port=target.port,
            user=target.username,
            password=password or "",
            database=target.database,
            connect_timeout=timeout,
            **kwargs,
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
            return f"logged in as {target.username}; server {row[0] if row else '?'}"
        finally:
            conn.close()

    try:
        return await asyncio.to_thread(_go)
    except pymysql.err.OperationalError as exc:
        code, msg = (*exc.args, "")[:2]
        raise OSError(0, f"login as {target.username} failed: {msg} (error {code})") from None


async def _login_postgres(target: Target, password: str | None, timeout: float) -> str:
    import asyncpg

    mode = target.tls_mode.value
    tls: object = (
        False if mode == "disable" else ("prefer" if mode == "prefer" else _client_tls_context(target))
    )
    try:
        conn = await asyncpg.connect(
            host=target.host,
            port=target.port,
            user=target.username,
            password=password,
            database=target.database or "postgres",
            timeout=timeout,
            ssl=tls,
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise OSError(0, f"login as {target.username} failed: {exc}") from None
    try:
        version = await conn.fetchval("SHOW server_version")
        return f"logged in as {target.username}; PostgreSQL {version}"
    finally:
        await conn.close()


async def test_connection(target: Target, password: str | None, *, timeout: float = 5.0) -> list[Check]:
    """Reachability, TLS and credentials of one target, each a step with its timing."""

    async def reach() -> str:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(target.host, target.port)
        writer.close()
        return f"TCP connection to {target.host}:{target.port} opened"

    steps = [await _timed(reach, "reachable")]
    if steps[0].status == "fail":
        steps[0].detail = f"cannot open a TCP connection to {target.host}:{target.port}: {steps[0].detail}"
        steps.append(Check("tls", "skip", "the target is not reachable"))
        steps.append(Check("login", "skip", "the target is not reachable"))
        return steps
    steps.append(await _timed(lambda: _tls_probe(target, timeout), "tls"))
    login = _login_postgres if target.engine.value == "postgres" else _login_mysql
    steps.append(await _timed(lambda: login(target, password, timeout), "login"))
    return steps


# ----------------------------------------------------------------------------- doctor
def port_free(host: str, port: int) -> tuple[Status, str | None]:
    """("pass", None) if ``port`` can be bound on ``host``; otherwise the status and the reason.

    dbward's own listeners use SO_REUSEPORT: a port that binds only with SO_REUSEPORT set is
    most likely held by a running dbward (a warning), any other holder is a failure.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return "pass", None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return "fail", exc.strerror or str(exc)
    if hasattr(socket, "SO_REUSEPORT"):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                s.bind((host, port))
                return "warn", "in use by a process that shares it, most likely a running dbward"
            except OSError:
                pass
    return "fail", "already in use by another program"


def _file_check(name: str, path: Path, load: Callable[[Path], object], fix: str) -> Check:
    try:
        load(path)
    except DbwardError as exc:
        return Check(name, "fail", exc.message, fix)
    except OSError as exc:
        return Check(name, "fail", f"{path} cannot be read ({exc.strerror})", fix)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return Check(
            name, "warn", f"{path} is readable by other accounts (mode {mode:o})", f"chmod 600 {path}"
        )
    return Check(name, "pass", f"{path} is readable")


def _c_module_check(name: str, built: bool, passed: str, missing: str) -> Check:
    """One of the optional C modules: built (pass), or not (warn: the Python code runs)."""
    if built:
        return Check(name, "pass", passed)
    return Check(
        name,
        "warn",
        missing,
        "install gcc and the Python headers (Debian: gcc python3-dev), then reinstall dbward",
    )


def _local_checks(data_dir: Path | None, config: Path | None) -> tuple[list[Check], Settings | None, bool]:
    """Settings, files and directories; returns the results, the settings and whether a SQLite store file exists."""
    from dbward.audit.chain import load_signing_key
    from dbward.store.crypto import SecretBox, load_key

    ddir = data_dir or Path(os.environ.get("DBWARD_DATA_DIR", str(DEFAULT_DATA_DIR)))
    cfg = config or Path(os.environ.get("DBWARD_CONFIG", str(ddir / CONFIG_FILE_NAME)))
    results: list[Check] = []
    try:
        if config is not None and not config.exists():
            raise DbwardError(f"the settings file {config} does not exist")
        settings: Settings = load_settings(config_file=config, data_dir=data_dir)
    except DbwardError as exc:
        results.append(
            Check(
                "settings",
                "fail",
                exc.message,
                f"correct or remove the named setting in {cfg} (see docs/configuration.md)",
            )
        )
        results.append(Check("everything else", "skip", "the settings must be valid first"))
        return results, None, False
    results.append(
        Check(
            "settings",
            "pass",
            f"{cfg} is valid" if cfg.exists() else f"no {cfg}; using defaults and DBWARD_* variables",
        )
    )

    d = settings.data_dir
    if not d.is_dir():
        results.append(
            Check("data directory", "fail", f"{d} does not exist", f"run `dbward init --data-dir {d}`")
        )
    elif not os.access(d, os.W_OK):
        results.append(
            Check(
                "data directory",
                "fail",
                f"{d} is not writable",
                f"give the dbward account write access to {d}",
            )
        )
    else:
        results.append(Check("data directory", "pass", f"{d} exists and is writable"))

    if settings.encryption_key:
        try:
            SecretBox(settings.encryption_key.encode())
            results.append(Check("encryption key", "pass", "set by the encryption_key setting"))
        except DbwardError as exc:
            results.append(
                Check(
                    "encryption key", "fail", exc.message, "set encryption_key to the key `dbward init` wrote"
                )
            )
    else:
        results.append(
            _file_check(
                "encryption key",
                settings.key_file,
                lambda p: SecretBox(load_key(None, p)),
                f"restore {settings.key_file} from your backup (secrets stored with another key cannot be read), "
                f"or run `dbward init --data-dir {d}` on a new installation; it must be readable by the dbward account",
            )
        )
    results.append(
        _file_check(
            "audit signing key",
            settings.signing_key_path,
            load_signing_key,
            f"run `dbward init --force --data-dir {d}` to create a missing key, or fix the file's permissions",
        )
    )
    p = settings.proxy
    if p.tls_cert or p.tls_key:
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if not p.tls_cert or not p.tls_key:
                raise ssl.SSLError("set both proxy.tls_cert and proxy.tls_key")
            ctx.load_cert_chain(p.tls_cert, p.tls_key)
            results.append(Check("proxy TLS certificate", "pass", f"{p.tls_cert} and its key load"))
        except (OSError, ssl.SSLError) as exc:
            results.append(
                Check(
                    "proxy TLS certificate",
                    "fail",
                    f"proxy.tls_cert/proxy.tls_key cannot be loaded ({_reason(exc)})",
                    "point proxy.tls_cert and proxy.tls_key at a readable PEM certificate and its key",
                )
            )
    else:
        results.append(
            Check(
                "proxy TLS certificate",
                "pass",
                f"self-signed, kept under {d / 'tls'} (generated on first start)",
            )
        )

    jdir = settings.journal_path.parent
    probe = jdir if jdir.exists() else d
    if probe.exists() and os.access(probe, os.W_OK):
        results.append(Check("audit journal", "pass", f"{settings.journal_path} can be written"))
    else:
        results.append(
            Check(
                "audit journal",
                "fail",
                f"{jdir} cannot be written",
                f"create {jdir} writable by the dbward account",
            )
        )

    from dbward.audit.journal import c_syncer_built
    from dbward.wire.postgres import framing

    results.append(
        _c_module_check(
            "relay accelerator",
            framing.ACCELERATED == "c",
            "the C row loops (dbward.wire._speedups) are built",
            "dbward.wire._speedups is not built, so large PostgreSQL results and masked "
            "columns cost the proxy several times more CPU (the pure-Python row loops are used)",
        )
    )
    results.append(
        _c_module_check(
            "journal syncer",
            c_syncer_built(),
            "the audit journal is fsynced by its own thread (dbward.audit._syncer is built)",
            "dbward.audit._syncer is not built, so with audit.durability write the proxy "
            "hands each fsync of the journal to a Python thread (about 15 % more CPU per statement)",
        )
    )

    has_store = bool(settings.store_url) or (d / "dbward.db").exists()
    return results, settings, has_store


async def run_doctor(data_dir: Path | None, config: Path | None) -> list[Check]:
    from dbward.store import migrate

    results, maybe_settings, has_store = _local_checks(data_dir, config)
    if maybe_settings is None:
        return results
    settings = maybe_settings
    d = settings.data_dir
    p = settings.proxy
    # Store: reachable, migrated.
    url = settings.resolved_store_url
    targets: list[Target] = []
    store_ok = False
    if not has_store:
        results.append(
            Check("store", "fail", f"there is no store in {d}", f"run `dbward init --data-dir {d}`")
        )
    else:
        try:
            async with asyncio.timeout(10):
                current = await migrate.current_revision(url)
            head = migrate.head_revision()
            if current == head:
                results.append(Check("store", "pass", f"reachable and at revision {head}"))
                store_ok = True
            else:
                results.append(
                    Check(
                        "store",
                        "fail",
                        f"the store is at revision {current or '(empty)'}, this dbward needs {head}",
                        f"run `dbward migrate --data-dir {d}`",
                    )
                )
        except Exception as exc:  # any driver error is a failed check, reported with its reason
            results.append(
                Check(
                    "store",
                    "fail",
                    f"the store cannot be reached ({_reason(exc)})",
                    "check store_url and that the database server is running",
                )
            )
    if store_ok:
        from sqlalchemy import select

        from dbward.store.db import make_engine
        from dbward.store.directory import target_from_row
        from dbward.store.models import Connection

        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(Connection).order_by(Connection.name))).all()
            targets = [target_from_row(Connection(**dict(r._mapping))) for r in rows]
        finally:
            await engine.dispose()

    # Ports.
    wanted: list[tuple[str, str, int]] = []
    if p.mysql_port:
        wanted.append(("proxy.mysql_port", p.listen_host, p.mysql_port))
    if p.postgres_port:
        wanted.append(("proxy.postgres_port", p.listen_host, p.postgres_port))
    if settings.api.port:
        wanted.append(("api.port", settings.api.listen_host, settings.api.port))
    for t in targets:
        if t.listen_port:
            wanted.append((f"listen_port of connection {t.name}", p.listen_host, t.listen_port))
    seen: dict[int, str] = {}
    for what, host, port in wanted:
        name = f"port {port}"
        if port in seen:
            results.append(
                Check(
                    name, "fail", f"{what} is the same port as {seen[port]}", f"give {what} a port of its own"
                )
            )
            continue
        seen[port] = what
        status, problem = port_free(host, port)
        if status == "pass":
            results.append(Check(name, "pass", f"{host}:{port} ({what}) is free"))
        elif status == "warn":
            results.append(Check(name, "warn", f"{host}:{port} ({what}) is {problem}"))
        else:
            results.append(
                Check(
                    name,
                    "fail",
                    f"{host}:{port} ({what}) is {problem}",
                    f"stop the program using port {port} (`ss -ltnp 'sport = :{port}'`) or change {what}",
                )
            )

    # Targets: reachable.
    async def reach(t: Target) -> Check:
        started = time.monotonic()
        try:
            async with asyncio.timeout(3):
                _, w = await asyncio.open_connection(t.host, t.port)
            w.close()
            return Check(
                f"connection {t.name}",
                "pass",
                f"{t.engine.value} at {t.host}:{t.port} is reachable",
                ms=(time.monotonic() - started) * 1000,
            )
        except Exception as exc:  # unreachable for any reason is a failed check
            return Check(
                f"connection {t.name}",
                "fail",
                f"{t.host}:{t.port} cannot be reached ({_reason(exc)})",
                f"check the host and port of connection {t.name} and the network; then `dbward connection test {t.name}`",
            )

    results.extend(await asyncio.gather(*(reach(t) for t in targets)))
    return results
