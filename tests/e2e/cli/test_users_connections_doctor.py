"""`dbward user`, `dbward connection` (with `connection test` against the real servers) and `dbward doctor`."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import yaml

from dbward.cli import open_store
from dbward.config import load_settings
from dbward.proxy.engine import verify_cleartext
from dbward.store.directory import StoreDirectory
from tests.conftest import MYSQL_HOST, MYSQL_PORT, PG_HOST, PG_PORT
from tests.e2e.cli.conftest import Cli, Initialised, free_port


def _check_login(data_dir: Path, username: str, secret: str) -> str | None:
    """Which stored secret of ``username`` accepts ``secret`` ('password', a token name, or None)."""

    async def go() -> str | None:
        store = open_store(load_settings(data_dir=data_dir))
        try:
            creds = await StoreDirectory(store).lookup(username)
            if creds is None:
                return None
            found = verify_cleartext(creds, secret)
            return found.name if found else None
        finally:
            await store.close()

    return asyncio.run(go())


def _one_time(out: str) -> str:
    m = re.search(r"shown only now.*\n\s+(\S+)", out)
    assert m, out
    return m.group(1)


def test_user_lifecycle_and_proxy_tokens(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    r = cli(
        "user", "add", "erin", "--data-dir", d, "--display-name", "Erin Choi", "--email", "erin@example.com"
    )
    assert r.code == 0, r.out
    first = _one_time(r.out)
    assert _check_login(d, "erin", first) == "password"
    assert cli("user", "add", "erin", "--data-dir", d).code == 1
    listed = cli("user", "list", "--data-dir", d).out
    assert re.search(
        r"erin\s+│\s+Erin Choi\s+│\s+erin@example.com\s+│\s+no\s+│\s+no\s+│\s+yes\s+│\s+yes", listed
    ), listed

    r = cli("user", "set-password", "erin", "--data-dir", d, "--password-stdin", input="erin-chosen-pw\n")
    assert r.code == 0, r.out
    assert "erin-chosen-pw" not in r.out
    assert _check_login(d, "erin", "erin-chosen-pw") == "password"
    assert _check_login(d, "erin", first) is None

    assert "is now disabled" in cli("user", "disable", "erin", "--data-dir", d).out
    assert _check_login(d, "erin", "erin-chosen-pw") is None  # disabled users cannot log in
    assert "is now enabled" in cli("user", "enable", "erin", "--data-dir", d).out

    r = cli("user", "token", "create", "erin", "etl", "--data-dir", d, "--expires-in-days", "30")
    assert r.code == 0, r.out
    token = _one_time(r.out)
    assert token.startswith("dbw_")
    assert _check_login(d, "erin", token) == "etl"
    assert cli("user", "token", "create", "erin", "etl", "--data-dir", d).code == 1  # exists: rotate instead
    rotated = _one_time(cli("user", "token", "rotate", "erin", "etl", "--data-dir", d).out)
    assert _check_login(d, "erin", rotated) == "etl"
    assert _check_login(d, "erin", token) is None
    listing = cli("user", "token", "list", "erin", "--data-dir", d).out
    assert re.search(r"etl\s+│\s+active", listing) and rotated not in listing
    assert cli("user", "token", "revoke", "erin", "etl", "--data-dir", d).code == 0
    assert _check_login(d, "erin", rotated) is None
    assert re.search(r"etl\s+│\s+revoked", cli("user", "token", "list", "erin", "--data-dir", d).out)
    missing = cli("user", "token", "revoke", "erin", "nope", "--data-dir", d)
    assert missing.code == 1 and "user erin has no proxy token named nope" in missing.out
    journal = (d / "audit" / "journal.jsonl").read_text()
    assert '"object_name":"erin/etl"' in journal
    for secret in (first, "erin-chosen-pw", token, rotated):
        assert secret not in journal


def test_connection_add_show_test_and_remove(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    r = cli(
        "connection", "add", "maria", "--data-dir", d, "--engine", "mysql", "--host", MYSQL_HOST,
        "--port", str(MYSQL_PORT), "--username", "root", "--tls-mode", "prefer",
    )  # fmt: skip
    assert r.code == 0, r.out
    r = cli(
        "connection", "add", "pg", "--data-dir", d, "--engine", "postgres", "--host", PG_HOST,
        "--port", str(PG_PORT), "--username", "postgres", "--database", "postgres", "--tls-mode", "prefer",
        "--password-env", "PG_SECRET_FOR_TEST", env={"PG_SECRET_FOR_TEST": "not-needed-with-trust"},
    )  # fmt: skip
    assert r.code == 0, r.out
    shown = cli("connection", "show", "pg", "--data-dir", d).out
    assert "set (stored encrypted)" in shown and "not-needed-with-trust" not in shown
    assert "maria" in cli("connection", "list", "--data-dir", d).out

    for name in ("maria", "pg"):
        t = cli("connection", "test", name, "--data-dir", d)
        assert t.code == 0, t.out
        assert re.search(r"reachable\s+│\s+pass", t.out), t.out
        assert re.search(r"tls\s+│\s+(pass|warn)", t.out), t.out
        assert re.search(r"login\s+│\s+pass", t.out), t.out
        assert re.search(r"\d+ ms", t.out)
        assert f"connection {name} works" in t.out

    dead = free_port()
    cli("connection", "add", "dead", "--data-dir", d, "--engine", "mysql", "--host", "127.0.0.1",
        "--port", str(dead), "--username", "root")  # fmt: skip
    t = cli("connection", "test", "dead", "--data-dir", d)
    assert t.code == 1
    assert f"cannot open a TCP connection to 127.0.0.1:{dead}" in t.out
    assert re.search(r"login\s+│\s+skip", t.out)

    cli("connection", "add", "badpw", "--data-dir", d, "--engine", "mysql", "--host", MYSQL_HOST,
        "--port", str(MYSQL_PORT), "--username", "dbward_nobody", "--tls-mode", "disable")  # fmt: skip
    t = cli("connection", "test", "badpw", "--data-dir", d)
    assert t.code == 1
    assert re.search(r"login\s+│\s+fail", t.out) and "login as dbward_nobody failed" in t.out

    assert cli("connection", "remove", "dead", "--data-dir", d, "--yes").code == 0
    gone = cli("connection", "show", "dead", "--data-dir", d)
    assert gone.code == 1 and "connection dead does not exist" in gone.out


def test_doctor_passes_on_a_good_installation(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    f = d / "c.yaml"
    f.write_text(
        f"connections:\n  - name: maria\n    engine: mysql\n    host: {MYSQL_HOST}\n    port: {MYSQL_PORT}\n"
        f"    username: root\n    listen_port: {free_port()}\n"
    )
    assert cli("apply", "-f", f, "--data-dir", d).code == 0
    r = cli("doctor", "--data-dir", d)
    assert r.code == 0, r.out
    for check in (
        "settings",
        "encryption key",
        "audit signing key",
        "relay accelerator",
        "journal syncer",
        "store",
        "connection maria",
    ):
        assert re.search(rf"{check}\s+│\s+pass", r.out), check
    assert "all checks passed" in r.out


def test_doctor_fails_on_an_unknown_setting(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    cfg = d / "dbward.yaml"
    settings = yaml.safe_load(cfg.read_text())
    settings["proxy"]["mysql_prot"] = 3307
    cfg.write_text(yaml.safe_dump(settings))
    r = cli("doctor", "--data-dir", d)
    assert r.code == 1
    assert f"failed: settings: {cfg}: proxy.mysql_prot: unknown setting" in r.out, r.out
    assert "1 check failed" in r.out


def test_doctor_fails_on_a_port_in_use_and_a_missing_key(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    (d / "secret.key").rename(d / "secret.key.bak")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", initialised.ports["postgres"]))
        busy.listen(1)
        r = cli("doctor", "--data-dir", d)
    assert r.code == 1
    port = initialised.ports["postgres"]
    assert f"failed: port {port}: 127.0.0.1:{port} (proxy.postgres_port) is already in use" in r.out, r.out
    assert f"failed: encryption key: the encryption key file {d / 'secret.key'} does not exist" in r.out
    assert "fix: restore" in r.out
    assert "2 checks failed" in r.out
    # The same missing key stops other commands with one sentence.
    listed = cli("user", "list", "--data-dir", d)
    assert listed.code == 1 and "the encryption key file" in listed.out and "Traceback" not in listed.out
