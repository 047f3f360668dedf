"""`dbward init`, `dbward migrate`, `dbward up`, and how errors look on the command line."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dbward.config import load_settings
from dbward.identity.secrets import verify_argon2
from dbward.store import migrate
from dbward.store.models import User
from tests.e2e.cli.conftest import Cli, Initialised, free_port, start_up


def _admin(data_dir: Path) -> User:
    import asyncio

    from sqlalchemy import select

    from dbward.cli import open_store

    async def go() -> User:
        store = open_store(load_settings(data_dir=data_dir))
        try:
            async with store.session() as s:
                return (await s.execute(select(User).where(User.username == "admin"))).scalar_one()
        finally:
            await store.close()

    return asyncio.run(go())


def test_init_creates_keys_store_and_a_first_administrator(initialised: Initialised) -> None:
    d = initialised.data_dir
    for name in ("dbward.yaml", "secret.key", "audit-signing-key.pem", "dbward.db"):
        assert (d / name).exists(), name
    assert (d / "secret.key").stat().st_mode & 0o777 == 0o600
    assert (d / "audit-signing-key.pem").stat().st_mode & 0o777 == 0o600
    admin = _admin(d)
    assert admin.is_admin and admin.must_change_password
    assert admin.password_hash and verify_argon2(admin.password_hash, initialised.admin_password)
    events = [json.loads(line) for line in (d / "audit" / "journal.jsonl").read_text().splitlines()]
    created = [e for e in events if e["type"] == "admin.change" and e["object_name"] == "admin"]
    assert created and created[0]["action"] == "create"
    assert initialised.admin_password not in (d / "audit" / "journal.jsonl").read_text()


def test_init_refuses_an_initialised_directory_unless_forced(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    key_before = (d / "secret.key").read_bytes()
    again = cli("init", "--data-dir", d)
    assert again.code == 1
    assert "already initialised" in again.out and "--force" in again.out
    assert "Traceback" not in again.out
    forced = cli("init", "--data-dir", d, "--force")
    assert forced.code == 0, forced.out
    assert (d / "secret.key").read_bytes() == key_before  # keys are kept
    assert "reset" in forced.out
    assert not verify_argon2(_admin(d).password_hash or "", initialised.admin_password)


def test_commands_on_a_missing_installation_say_what_to_do(cli: Cli, tmp_path: Path) -> None:
    r = cli("user", "list", "--data-dir", tmp_path / "nothing")
    assert r.code == 1
    assert "dbward init" in r.out
    assert "Traceback" not in r.out


def test_migrate_shows_current_and_target_and_each_step(cli: Cli, tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    r = cli("migrate", "--data-dir", d)
    assert r.code == 0, r.out
    head = migrate.head_revision()
    assert "current revision: (empty store)" in r.out
    assert f"target revision: {head}" in r.out
    assert "applied 0001" in r.out and f"applied {head}" in r.out
    again = cli("migrate", "--data-dir", d)
    assert "up to date" in again.out


def test_up_serves_prints_the_banner_and_drains_on_sigterm(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    port = free_port()
    f = d / "conn.yaml"
    f.write_text(
        "connections:\n"
        "  - name: maria\n    engine: mysql\n    host: 127.0.0.1\n    port: 3306\n"
        f"    username: root\n    tls_mode: disable\n    listen_port: {port}\n"
    )
    assert cli("apply", "-f", f, "--data-dir", d).code == 0
    proc, out = start_up(d)
    try:
        assert "dbward is up" in out, out
        assert "connection maria" in out
        from dbward.node import load_engines
        from dbward.proxy.engine import ENGINES

        load_engines()
        if "mysql" in ENGINES:
            assert f"127.0.0.1:{port}" in out
            assert f"mysql -h 127.0.0.1 -P {port}" in out
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            # doctor tells dbward's own listeners from a foreign program on the port
            doc = cli("doctor", "--data-dir", d)
            assert doc.code == 0, doc.out
            assert (
                f"127.0.0.1:{port} (listen_port of connection maria) is in use by a process that shares it"
                in doc.out
            )
        else:
            assert "not available in this build" in out
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out + rest
        assert "dbward stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_keeps_its_startup_heap_out_of_full_collections(
    initialised: Initialised, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every long-running process of a node freezes its startup heap once it is ready (a full
    collection of it stalled the proxy's event loop for about 125 ms; see dbward/heap.py):
    the node before its listeners open and again when ready, each proxy worker process, and
    the audit shipper. Each says so in its debug log."""
    monkeypatch.setenv("DBWARD_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("DBWARD_PROXY__WORKERS", "2")
    proc, out = start_up(initialised.data_dir)
    pattern = re.compile(r"(node|node, ready|proxy worker \d+|audit shipper): (\d+) objects kept out")
    wanted = {"node", "node, ready", "proxy worker 1", "audit shipper"}
    frozen: dict[str, int] = {}
    lines = [out]
    try:
        assert "dbward is up" in out, out
        stdout = proc.stdout
        assert stdout is not None
        # the shipper and the worker may say it after the banner: read on in a thread
        threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            frozen = {m.group(1): int(m.group(2)) for m in pattern.finditer("".join(lines))}
            if wanted <= frozen.keys():
                break
            time.sleep(0.2)
        assert wanted <= frozen.keys(), (frozen, "".join(lines)[-3000:])
        assert all(n > 10_000 for n in frozen.values()), frozen
        # the second freeze of the node adds what came after the first (listeners, API, ...)
        assert frozen["node, ready"] > frozen["node"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
