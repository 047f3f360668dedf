"""Fixtures shared by the end-to-end tests of both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import RunningNode
from tests.e2e.journal_swap import CountingJournal, file_journal


@pytest.fixture
async def queued_journal(dbward_node: RunningNode, tmp_path: Path) -> AsyncIterator[CountingJournal]:
    """The test node's gate records into a real file journal (see ``journal_swap``)."""
    j = file_journal(dbward_node, tmp_path / "journal.jsonl")
    yield j
    j._failure = None  # a test that broke the journal: closing it still runs
    await j.close()
