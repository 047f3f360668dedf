"""The apply file without a store: parsing with line numbers, validation, secret references."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dbward.declarative import FileError, parse_text, validate
from dbward.declarative.schema import GrantItem
from dbward.declarative.sections import SECTIONS, secret_placeholder

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dbward.example.yaml"
ENV = {
    "DBWARD_ALICE_PASSWORD": "alice-password-1",
    "DBWARD_CONN_SHOP_MARIA_PASSWORD": "m",
    "DBWARD_CONN_HR_PG_PASSWORD": "p",
}


def _error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(FileError) as exc:
        validate(parse_text(text, "f.yaml"), env or {})
    return exc.value.message


def test_the_example_has_every_kind_of_object() -> None:
    from dbward.declarative.loader import load_file

    v = validate(load_file(EXAMPLE), ENV)
    assert (
        set(v.items)
        == set(SECTIONS)
        == {
            "users",
            "groups",
            "roles",
            "connections",
            "privilege_types",
            "grants",
            "rules",
            "masking_patterns",
            "masking_rules",
            "approval_lines",
        }
    )
    assert all(v.items[k] for k in SECTIONS), "every section has at least one object"
    assert v.secrets[("users", "alice")] == "alice-password-1"
    assert v.secrets[("connections", "hr-pg")] == "p"
    assert v.warnings == []
    grant = next(g for g in v.items["grants"] if g.name == "dba-all-hr")  # type: ignore[attr-defined]
    assert isinstance(grant, GrantItem)
    assert grant.expires_at == datetime(2030, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert (grant.subject_type, grant.subject_name) == ("role", "dba")


def test_lines_are_kept_for_every_value() -> None:
    doc = parse_text("users:\n  - username: a\n    email: a@x\n  - username: b\n", "f.yaml")
    assert doc.line_of(("users", 0, "email")) == 3
    assert doc.line_of(("users", 1)) == 4
    assert doc.line_of(("users", 1, "display_name")) == 4  # absent: the enclosing object's line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "users:\n  - username: a\n    admin: maybe\n",
            "f.yaml line 3: users[0].admin: Input should be a valid boolean",
        ),
        ("users:\n  - username: a b\n", "f.yaml line 2: users[0].username: String should match pattern"),
        (
            "roles:\n  - name: r\n    members: [alice]\n",
            "f.yaml line 3: roles[0].members[0]: String should match pattern",
        ),
        (
            "grants:\n  - name: g\n    subject: user:a\n    connection: c\n    privileges: [read]\n"
            "    conditions:\n      hours: 9-18\n",
            "f.yaml line 7: grants[0].conditions.hours: Value error, hours must look like 09:00-18:00",
        ),
        (
            "grants:\n  - name: g\n    subject: user:a\n    connection: c\n    privileges: []\n",
            "f.yaml line 5: grants[0].privileges: List should have at least 1 item",
        ),
        (
            "grants:\n  - name: g\n    subject: user:a\n    connection: c\n    privileges: [read]\n"
            "    conditions: {timezone: Mars/Olympus}\n",
            "'Mars/Olympus' is not a known time zone",
        ),
        (
            "connections:\n  - {name: a, engine: mysql, host: h, port: 1, username: u, listen_port: 5}\n"
            "  - {name: b, engine: mysql, host: h, port: 1, username: u, listen_port: 5}\n",
            "f.yaml line 3: listen_port 5 of connection b is already used by connection a",
        ),
        (
            "users:\n  - username: a\n    password: short\n",
            "f.yaml line 3: the password of user a must have at least 8",
        ),
        (
            "users:\n  - username: a\n    password: file:/nonexistent/pw\n",
            "refers to the file /nonexistent/pw, which cannot be read",
        ),
        ("version: 2\n", "f.yaml line 1: version: Input should be 1"),
        ("users:\n  - username: a\n  username: b\n", "f.yaml line 3: the file is not valid YAML"),
        ("users:\n  - username: a\n    username: b\n", "f.yaml line 3: the key 'username' appears twice"),
    ],
)
def test_errors_name_the_line(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_passwords_are_never_echoed_in_errors() -> None:
    msg = _error(
        "connections:\n  - {name: a, engine: mysql, host: h, port: 1, username: u, password: [hunter2]}\n"
    )
    assert "connections[0].password" in msg and "hunter2" not in msg


def test_many_errors_are_reported_together() -> None:
    msg = _error("users:\n  - username: a\n    x: 1\n  - username: b\n    y: 2\n")
    assert "line 3: unknown key 'x'" in msg and "line 5: unknown key 'y'" in msg


def test_a_literal_password_is_allowed_with_a_warning() -> None:
    v = validate(parse_text("users:\n  - username: a\n    password: literal-pass\n", "f.yaml"), {})
    assert v.secrets[("users", "a")] == "literal-pass"
    assert v.warnings == [
        "f.yaml line 3: the password of user a is written in the file itself; use env:NAME or file:PATH "
        "so that it stays out of version control"
    ]


def test_file_references_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file-1\n")
    doc = parse_text("users:\n  - username: a\n    password: file:pw\n", "f.yaml", base_dir=tmp_path)
    assert validate(doc, {}).secrets[("users", "a")] == "from-a-file-1"


def test_export_placeholders_are_valid_environment_names() -> None:
    assert secret_placeholder("shop-maria") == "env:DBWARD_CONN_SHOP_MARIA_PASSWORD"
    assert secret_placeholder("hr.pg 2") == "env:DBWARD_CONN_HR_PG_2_PASSWORD"
