"""Settings: defaults, the file, DBWARD_* variables, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbward.config import load_settings
from dbward.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("DBWARD_"):
            monkeypatch.delenv(key)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.data_dir == tmp_path
    assert s.proxy.mysql_port == 13306 and s.proxy.postgres_port == 15432 and s.api.port == 8080
    assert s.resolved_store_url == f"sqlite+aiosqlite:///{(tmp_path / 'dbward.db').resolve()}"
    assert s.key_file == tmp_path / "secret.key"
    assert s.journal_path == tmp_path / "audit" / "journal.jsonl"
    assert s.audit.fail_closed is True


def test_the_file_and_the_environment_are_read_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dbward.yaml").write_text("log_level: debug\nproxy:\n  mysql_port: 3307\n")
    monkeypatch.setenv("DBWARD_API__PORT", "9090")
    s = load_settings(data_dir=tmp_path)
    assert s.log_level == "DEBUG"
    assert s.proxy.mysql_port == 3307
    assert s.api.port == 9090


def test_the_init_template_is_valid_and_equals_the_defaults(tmp_path: Path) -> None:
    from dbward.cli import DEFAULT_SETTINGS_YAML

    (tmp_path / "dbward.yaml").write_text(DEFAULT_SETTINGS_YAML)
    assert load_settings(data_dir=tmp_path).model_dump() == load_settings(
        data_dir=tmp_path / "none"
    ).model_dump() | {"data_dir": tmp_path}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("proxy:\n  mysql_prot: 1\n", "proxy.mysql_prot: unknown setting"),
        ("colour: blue\n", "colour: unknown setting"),
        ("proxy:\n  mysql_port: 70000\n", "proxy.mysql_port: Input should be less than or equal to 65535"),
        (
            "log_level: chatty\n",
            "log_level: Value error, log_level must be one of DEBUG, INFO, WARNING, ERROR",
        ),
        ("api: [1, 2]\n", "api: Input should be a valid dictionary"),
        ("proxy:\n  mysql_port: [\n", "line 3: the settings file is not valid YAML"),
        ("- a\n- b\n", "the settings file must be a mapping of setting names"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "dbward.yaml").write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_settings(data_dir=tmp_path)
    assert expected in exc.value.message
    assert str(tmp_path / "dbward.yaml") in exc.value.message


def test_a_bad_environment_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBWARD_PROXY__POSTGRES_PORT", "not-a-port")
    with pytest.raises(ConfigError) as exc:
        load_settings(data_dir=tmp_path)
    assert "proxy.postgres_port" in exc.value.message


def test_environment_variables_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dbward.yaml").write_text(
        "store_url: null\nproxy:\n  mysql_port: 3307\n  listen_host: 0.0.0.0\n"
    )
    monkeypatch.setenv("DBWARD_PROXY__MYSQL_PORT", "3308")
    monkeypatch.setenv("DBWARD_STORE_URL", "postgresql://dbward@db/dbward")
    s = load_settings(data_dir=tmp_path)
    assert s.proxy.mysql_port == 3308
    assert s.proxy.listen_host == "0.0.0.0"  # the rest of the file's section still applies
    assert s.store_url == "postgresql://dbward@db/dbward"
    assert load_settings(data_dir=tmp_path, store_url="sqlite:///x.db").store_url == "sqlite:///x.db"
