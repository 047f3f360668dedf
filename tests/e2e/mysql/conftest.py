"""Fixtures and helpers for end-to-end MySQL tests: real clients -> dbward -> real MariaDB."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import uvloop

from dbward.domain import SessionInfo, Statement
from dbward.policy.model import Decision
from tests.conftest import RunningNode


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run these tests on uvloop, as `dbward up` does (DBWARD_TEST_LOOP=asyncio for the stdlib loop)."""
    if os.environ.get("DBWARD_TEST_LOOP") == "asyncio":
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def maria_port(dbward_node: RunningNode) -> int:
    """The proxy port of connection `maria` (real MariaDB behind it)."""
    return await dbward_node.listen("maria")


async def listen_with_options(node: RunningNode, **options: Any) -> int:
    """A second listener for `maria` whose connection carries extra options."""
    target = dataclasses.replace(node.targets["maria"], options=options)
    lst = await node.node.listen_for(target, port=0)
    return lst.bound_port


@dataclasses.dataclass
class CompletedProcess:
    rc: int
    stdout: str
    stderr: str


async def run(*cmd: str, stdin: str | None = None, timeout: float = 60) -> CompletedProcess:
    """Run a real client program without blocking the event loop the node lives on."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CompletedProcess(proc.returncode, out.decode(), err.decode())


def decisions(node: RunningNode) -> list[dict[str, Any]]:
    return node.journal.of_type("statement.decision")


def completions(node: RunningNode) -> list[dict[str, Any]]:
    return node.journal.of_type("statement.complete")


class DenyContaining:
    """A tiny policy for tests: the real grant decider, but deny statements containing a word."""

    def __init__(self, inner: Any, word: str) -> None:
        self.inner = inner
        self.word = word.upper()

    async def decide_connection(self, principal: Any, target: Any, client_host: str) -> Decision:
        decision: Decision = await self.inner.decide_connection(principal, target, client_host)
        return decision

    async def decide_statement(self, session: SessionInfo, statement: Statement) -> Decision:
        if self.word in statement.sql.upper():
            return Decision.deny(
                f"denied by rule no-{self.word.lower()}: statements containing {self.word} are not allowed "
                f"on connection {session.target.name}",
                f"rule:no-{self.word.lower()}",
            )
        return Decision.allow("allowed by the test policy", "rule:test-allow")


def deny_word(node: RunningNode, word: str) -> None:
    """Swap the gate's policy for :class:`DenyContaining` (the gate and wire path stay real)."""
    node.node.gate.policy = DenyContaining(node.node.gate.policy, word)  # type: ignore[assignment]
