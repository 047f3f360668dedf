"""`dbward apply` and `dbward export` on a real data directory, as a user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.cli.conftest import EXAMPLE, EXAMPLE_ENV, Cli, Initialised


def _apply(cli: Cli, d: Path, f: Path, *extra: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return cli("apply", "-f", f, "--data-dir", d, *extra, env=env if env is not None else EXAMPLE_ENV)


def test_dry_run_then_apply_then_no_changes(cli: Cli, initialised: Initialised) -> None:
    d = initialised.data_dir
    dry = _apply(cli, d, EXAMPLE, "--dry-run")
    assert dry.code == 0, dry.out
    assert "dry run: 21 to create, 0 to update, 0 to delete; nothing was changed" in dry.out
    for kind, name in [
        ("user", "alice"),
        ("group", "analysts"),
        ("role", "dba"),
        ("connection", "hr-pg"),
        ("grant", "dba-all-hr"),
    ]:
        assert re.search(rf"create\s+│\s+{kind}\s+│\s+{name}\s", dry.out), (kind, name)
    # The dry run changed nothing.
    assert "alice" not in cli("user", "list", "--data-dir", d).out

    applied = _apply(cli, d, EXAMPLE)
    assert applied.code == 0, applied.out
    assert "applied: 21 created, 0 updated, 0 deleted" in applied.out
    again = _apply(cli, d, EXAMPLE, "--dry-run")
    assert "no changes" in again.out
    assert "no changes" in _apply(cli, d, EXAMPLE).out

    # Every change was audited, with secrets redacted.
    journal = (d / "audit" / "journal.jsonl").read_text()
    events = [json.loads(line) for line in journal.splitlines()]
    changes = [e for e in events if e["type"] == "admin.change" and e["source"] == "apply"]
    assert len(changes) == 21
    for secret in EXAMPLE_ENV.values():
        assert secret not in journal
    conn = next(e for e in changes if e["object_name"] == "shop-maria")
    assert conn["after"]["password"] == "(secret)" and conn["after"]["listen_port"] == 23306

    # The secrets never reach the output of any command either.
    shown = cli("connection", "show", "shop-maria", "--data-dir", d).out
    assert "set (stored encrypted)" in shown
    assert "maria-secret-1" not in shown + applied.out + dry.out


def test_changes_are_shown_field_by_field_and_prune_deletes(
    cli: Cli, initialised: Initialised, tmp_path: Path
) -> None:
    d = initialised.data_dir
    assert _apply(cli, d, EXAMPLE).code == 0
    changed = tmp_path / "changed.yaml"
    text = EXAMPLE.read_text().replace("display_name: Bob Lee", "display_name: Robert Lee")
    text = text.replace("    privileges: [read]\n", "    privileges: [read, write]\n", 1)
    changed.write_text(text)
    env = {**EXAMPLE_ENV, "DBWARD_CONN_HR_PG_PASSWORD": "rotated-secret"}
    dry = _apply(cli, d, changed, "--dry-run", env=env)
    assert "bob" in dry.out and "display_name: Bob Lee -> Robert Lee" in dry.out
    assert "privileges: read -> read, write" in dry.out
    assert "password: changed" in dry.out  # the connection secret differs; its value is never shown
    assert "rotated-secret" not in dry.out
    assert "0 to create, 3 to update, 0 to delete" in dry.out
    assert _apply(cli, d, changed, env=env).code == 0
    assert "no changes" in _apply(cli, d, changed, env=env).out

    only_users = tmp_path / "users.yaml"
    only_users.write_text("users:\n  - username: admin\n    admin: true\n  - username: alice\n")
    kept = _apply(cli, d, only_users, "--dry-run")
    assert "mallory" not in kept.out  # absent objects are left alone without --prune
    pruned = _apply(cli, d, only_users, "--prune", "--dry-run")
    for gone in ("bob", "carol", "mallory"):
        assert re.search(rf"delete\s+│\s+user\s+│\s+{gone}\s", pruned.out), gone
    assert "analysts" not in pruned.out  # sections absent from the file are never pruned
    lockout = tmp_path / "nobody.yaml"
    lockout.write_text("users:\n  - username: alice\n")
    r = _apply(cli, d, lockout, "--prune")
    assert r.code == 1 and "without an enabled administrator" in r.out
    demote = tmp_path / "demote.yaml"
    demote.write_text("users:\n  - username: admin\n  - username: carol\n    disabled: true\n")
    r = _apply(cli, d, demote)
    assert r.code == 1
    assert (
        "would leave dbward without an enabled administrator (admin, carol would lose admin rights" in r.out
    )


def test_export_round_trips_through_a_fresh_installation(
    cli: Cli, initialised: Initialised, tmp_path: Path
) -> None:
    d = initialised.data_dir
    assert _apply(cli, d, EXAMPLE).code == 0
    exported = tmp_path / "export.yaml"
    r = cli("export", "--data-dir", d, "-o", exported)
    assert r.code == 0, r.out
    text = exported.read_text()
    assert "env:DBWARD_CONN_SHOP_MARIA_PASSWORD" in text and "env:DBWARD_CONN_HR_PG_PASSWORD" in text
    for secret in EXAMPLE_ENV.values():
        assert secret not in text
    assert "Secrets are never exported" in text
    assert cli("export", "--data-dir", d).stdout == text

    fresh = tmp_path / "fresh"
    assert cli("init", "--data-dir", fresh).code == 0
    applied = _apply(cli, fresh, exported)
    assert applied.code == 0, applied.out
    assert cli("export", "--data-dir", fresh).stdout == text
    assert "no changes" in _apply(cli, fresh, exported).out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("users:\n  - username: a\n   bad: [\n", "line 3: the file is not valid YAML"),
        (
            "users:\n  - username: ann\n    emial: ann@example.com\n",
            "line 3: unknown key 'emial' in users[0] (allowed: username, display_name, email",
        ),
        (
            "connections:\n  - name: c\n    engine: mysql\n    host: h\n    port: three\n    username: u\n",
            "line 5: connections[0].port: Input should be a valid integer",
        ),
        (
            "connections:\n  - name: c\n    engine: oracle\n",
            "line 3: connections[0].engine: Input should be 'mysql' or 'postgres'",
        ),
        (
            "grants:\n  - name: g\n    subject: user:x\n",
            "line 2: grants[0] is missing the required key 'connection'",
        ),
        ("usres: []\n", "line 1: unknown key 'usres' in the file (allowed: version, users, groups"),
        ("users:\n  - username: a\n  - username: a\n", "line 3: user a is defined twice (first at line 2)"),
        (
            "groups:\n  - name: g\n    members: [ghost]\n",
            "line 3: group g names the member user ghost, which is neither",
        ),
        (
            "users:\n  - username: b\n    password: env:DBWARD_NOT_SET_ANYWHERE\n",
            "line 3: the password of user b refers to the environment variable DBWARD_NOT_SET_ANYWHERE, which is not set",
        ),
        ("- just\n- a list\n", "line 1: the file must be a mapping"),
    ],
)
def test_bad_files_get_one_clear_message_naming_the_line(
    cli: Cli, initialised: Initialised, tmp_path: Path, content: str, expected: str
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    r = _apply(cli, initialised.data_dir, f, "--dry-run")
    assert r.code == 1
    assert f"{f} {expected}" in r.out, r.out
    assert "Traceback" not in r.out


def test_literal_passwords_work_with_a_warning_and_file_references_are_read(
    cli: Cli, initialised: Initialised, tmp_path: Path
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dave.txt").write_text("dave-password-1\n")
    f = tmp_path / "lit.yaml"
    f.write_text(
        "users:\n  - username: carl\n    password: carl-password-1\n"
        "  - username: dave\n    password: file:secrets/dave.txt\n"
    )
    r = _apply(cli, initialised.data_dir, f)
    assert r.code == 0, r.out
    assert f"warning: {f} line 3: the password of user carl is written in the file itself" in r.out
    assert "carl-password-1" not in r.out
    assert "no changes" in _apply(cli, initialised.data_dir, f).out  # passwords compared, not reset


def test_the_whole_cycle_on_a_postgresql_store(cli: Cli, tmp_path: Path) -> None:
    import uuid

    import psycopg

    from tests.conftest import PG_HOST, PG_PORT, pg_dsn

    dbname = f"dbward_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    try:
        env = {**EXAMPLE_ENV, "DBWARD_STORE_URL": f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{dbname}"}
        d = tmp_path / "pgstore"
        r = cli("init", "--data-dir", d, env=env)
        assert r.code == 0, r.out
        assert f"store: postgresql://postgres@{PG_HOST}:{PG_PORT}/{dbname}" in r.out
        assert not (d / "dbward.db").exists()
        assert "applied: 21 created" in _apply(cli, d, EXAMPLE, env=env).out
        assert "no changes" in _apply(cli, d, EXAMPLE, env=env).out
        exported = cli("export", "--data-dir", d, env=env).stdout
        assert "name: dba-all-hr" in exported and "env:DBWARD_CONN_HR_PG_PASSWORD" in exported
        assert "the store is up to date" in cli("migrate", "--data-dir", d, env=env).out
    finally:
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
