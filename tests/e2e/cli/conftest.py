"""Running the real ``dbward`` command line in-process (typer's CliRunner) on a temporary data directory."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dbward.cli import app

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dbward.example.yaml"
EXAMPLE_ENV = {
    "DBWARD_ALICE_PASSWORD": "alice-password-1",
    "DBWARD_CONN_SHOP_MARIA_PASSWORD": "maria-secret-1",
    "DBWARD_CONN_HR_PG_PASSWORD": "pg-secret-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    code: int
    out: str  # stdout and stderr together, as a person sees them
    stdout: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("COLUMNS", "250")  # rich tables must not wrap the sentences tests look for
    runner = CliRunner()

    def invoke(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        r = runner.invoke(app, [str(a) for a in args], env=env, input=input)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return Result(r.exit_code, r.output, r.stdout)

    return invoke


def set_free_ports(data_dir: Path) -> dict[str, int]:
    """Point every port of the settings at a free one, so tests never meet a running dbward."""
    cfg = data_dir / "dbward.yaml"
    settings = yaml.safe_load(cfg.read_text())
    ports = {"mysql": free_port(), "postgres": free_port(), "api": free_port()}
    settings["proxy"]["mysql_port"] = ports["mysql"]
    settings["proxy"]["postgres_port"] = ports["postgres"]
    settings["api"]["port"] = ports["api"]
    cfg.write_text(yaml.safe_dump(settings))
    return ports


@dataclass
class Initialised:
    data_dir: Path
    admin_password: str
    ports: dict[str, int]


@pytest.fixture
def initialised(cli: Cli, tmp_path: Path) -> Initialised:
    data_dir = tmp_path / "data"
    r = cli("init", "--data-dir", data_dir)
    assert r.code == 0, r.out
    m = re.search(r"One-time password.*\n\s+(\S+)", r.out)
    assert m, r.out
    return Initialised(data_dir, m.group(1), set_free_ports(data_dir))


def start_up(data_dir: Path, *, wait: float = 30.0) -> tuple[subprocess.Popen[str], str]:
    """Start a real ``dbward up`` on ``data_dir`` and read its output up to the banner line
    "dbward is up" (or until it stops printing, or ``wait`` seconds): the process, still
    running, and what it printed. Wide columns so that rich keeps each line whole."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbward.cli", "up", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "250", "PYTHONUNBUFFERED": "1"},
    )
    out = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + wait
    while "dbward is up" not in out and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    return proc, out
