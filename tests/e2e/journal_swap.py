"""A file journal for a test node's gate (the in-process node records into memory, which
never fails to write): what ``dbward up`` runs, to test the engines' queued decisions and
what happens when their write fails."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dbward.audit.events import AuditEvent
from dbward.audit.journal import FileJournal
from dbward.audit.verify import verify_lines
from tests.conftest import RunningNode


class CountingJournal(FileJournal):
    """A file journal that counts the decisions it queued (the engines' hot path took them)."""

    queued = 0

    def append_queued(self, event: AuditEvent) -> bool:
        taken = super().append_queued(event)
        self.queued += taken
        return taken


def file_journal(node: RunningNode, path: Path) -> CountingJournal:
    journal = CountingJournal(path, fsync=False, durability="write", node="test-node", hold_lock=0.002)
    node.node.gate.journal = journal
    return journal


def records(journal: FileJournal) -> list[dict[str, Any]]:
    lines = journal.path.read_text().splitlines()
    report = verify_lines(lines)
    assert report.ok, report.problems
    return [json.loads(line) for line in lines]


def break_journal(journal: FileJournal) -> None:
    """The journal's file descriptor goes bad under it (a disk or mount failure): writes fail."""
    assert journal._fd is not None
    os.close(journal._fd)
    journal._fd = os.open(os.devnull, os.O_RDONLY)
