"""The audit journal's background fsync (``dbward.audit._syncer``, a C thread that never takes
the GIL) and the journal's use of it: fsync within the interval of a write, one fsync for the
writes of that time, none while nothing is written, fail closed when fsync fails, and the
Python path (no C module built) keeping the same guarantees."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dbward.audit import journal as journal_module
from dbward.audit.chain import Signer
from dbward.audit.events import StatementDecided
from dbward.audit.journal import FileJournal
from dbward.audit.verify import verify_lines
from dbward.errors import AuditUnavailable

_syncer = pytest.importorskip("dbward.audit._syncer", reason="the C syncer is not built")
Syncer = _syncer.Syncer

#: a safety net against a hang, not a measurement: every wait below normally ends at once
WAIT = 30.0


def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, "the syncer did not get there"
        time.sleep(0.001)


def _event(i: int) -> StatementDecided:
    return StatementDecided(
        user="alice", connection="pg", sql=f"SELECT {i}", effect="allow", statement_id=str(i)
    )


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    f = os.open(tmp_path / "journal.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    yield f
    os.close(f)


def test_writes_are_synced_within_the_interval_and_share_one_fsync(fd: int) -> None:
    s = Syncer(fd, 0.05)
    try:
        assert s.running and (s.writes, s.synced, s.syncs, s.error) == (0, 0, 0, 0)
        for _ in range(200):  # far less than the interval apart: the first one starts it
            os.write(fd, b"{}\n")
            s.note_write()
        _until(lambda: s.synced == 200)
        assert s.error == 0
        assert 1 <= s.syncs < 200  # writes of one interval share an fsync
        synced_once = s.syncs
        time.sleep(0.25)  # five intervals with nothing written: the thread is parked
        assert s.syncs == synced_once
        os.write(fd, b"{}\n")
        s.note_write()  # wakes it
        _until(lambda: s.synced == 201)
        assert s.syncs == synced_once + 1
    finally:
        assert s.close() == 0
    assert not s.running


def test_close_syncs_what_is_unsynced_without_waiting_the_interval(fd: int) -> None:
    s = Syncer(fd, 3600.0)  # an hour: only closing makes it sync now
    os.write(fd, b"{}\n")
    s.note_write()
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(WAIT)
    assert not closer.is_alive(), "close() waited for the interval"
    assert (s.synced, s.syncs, s.error, s.running) == (1, 1, 0, False)
    with pytest.raises(ValueError, match="closed"):
        s.note_write()
    assert s.close() == 0  # closing twice is harmless


def test_the_syncer_keeps_a_descriptor_of_its_own(tmp_path: Path) -> None:
    """The journal may close or replace its descriptor: the syncer's still names the file, and
    never another one that took the same number."""
    f = os.open(tmp_path / "j", os.O_RDWR | os.O_CREAT, 0o600)
    s = Syncer(f, 0.001)
    os.write(f, b"x")
    os.close(f)
    r, w = os.pipe()  # likely to take the number just freed; fsync on a pipe would fail
    try:
        s.note_write()
        _until(lambda: s.synced == 1)
        assert s.error == 0
    finally:
        s.close()
        os.close(r)
        os.close(w)


def test_a_failed_fsync_is_reported_and_nothing_more_is_synced() -> None:
    r, w = os.pipe()  # fsync(2) on a pipe fails with EINVAL: a real failure of the call
    s = Syncer(w, 0.001)
    try:
        s.note_write()
        _until(lambda: s.error != 0)
        assert s.error == errno.EINVAL
        tried = s.syncs
        s.note_write()
        time.sleep(0.05)
        assert s.syncs == tried and s.synced == 0
    finally:
        assert s.close() == errno.EINVAL
        os.close(r)
        os.close(w)


def test_bad_arguments_are_refused(fd: int) -> None:
    with pytest.raises(ValueError, match="open file descriptor"):
        Syncer(-1, 0.005)
    with pytest.raises(ValueError, match="interval"):
        Syncer(fd, 0.0)
    with pytest.raises(OSError):
        Syncer(987654, 0.005)  # not open: dup() fails, no thread is started


# ------------------------------------------------------------------------------------------
# the journal


async def test_the_journal_syncs_through_the_c_thread(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = FileJournal(path, durability="write", fsync=True, fsync_interval=0.002)
    for i in range(20):
        assert j.append_now(_event(i)) is not None
    syncer = j._syncer
    assert syncer is not None and j._fsync_task is None  # no Python fsync task
    await asyncio.to_thread(_until, lambda: syncer.synced == syncer.writes == 20)
    await j.close()
    assert j._syncer is None and not syncer.running and syncer.error == 0
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == list(range(1, 21))


async def test_no_syncer_without_fsync_or_with_fsync_durability(tmp_path: Path) -> None:
    for kw in ({"durability": "write", "fsync": False}, {"durability": "fsync", "fsync": True}):
        j = FileJournal(tmp_path / f"j-{kw['durability']}-{kw['fsync']}.jsonl", **kw)  # type: ignore[arg-type]
        await j.append(_event(1))
        assert j._syncer is None
        await j.close()


async def test_a_failed_fsync_refuses_the_next_statements(tmp_path: Path) -> None:
    """The syncer's thread fails to fsync: from then on every append says the journal cannot
    be written and names audit.fail_closed, as a failed write does."""
    path = tmp_path / "journal.jsonl"
    j = FileJournal(path, durability="write", fsync=True, fsync_interval=0.001)
    assert j.append_now(_event(1)) is not None
    assert j._syncer is not None
    j._syncer.close()
    r, w = os.pipe()
    try:
        # the same C thread, on a descriptor whose fsync(2) fails for real (EINVAL)
        j._syncer = Syncer(w, 0.001)
        assert j.append_now(_event(2)) is not None  # written; its fsync will fail
        await asyncio.to_thread(_until, lambda: j._syncer is not None and j._syncer.error != 0)
        with pytest.raises(AuditUnavailable, match=r"cannot be written .*audit.fail_closed"):
            j.append_now(_event(3))
        with pytest.raises(AuditUnavailable):
            j.append_queued(_event(4))
        with pytest.raises(AuditUnavailable):
            await j.append(_event(5))
        await j.close()
    finally:
        os.close(r)
        os.close(w)
    ids = [json.loads(x).get("statement_id") for x in path.read_text().splitlines()]
    assert ids == ["1", "2"]


@pytest.mark.parametrize("c_syncer", [True, False], ids=["c-syncer", "python-fsync"])
async def test_write_durability_chain_verifies_with_either_syncer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, c_syncer: bool
) -> None:
    if not c_syncer:
        monkeypatch.setattr(journal_module, "Syncer", None)  # as when the C module is not built
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "journal.jsonl"
    j = FileJournal(path, signer=Signer(key), durability="write", fsync_interval=0.001, checkpoint_every=7)
    for i in range(30):
        j.append_soon(_event(i))
        if i % 3 == 0:
            await asyncio.sleep(0)  # the end of a loop iteration writes what is queued
    await asyncio.sleep(0.01)
    assert (j._syncer is not None) is c_syncer
    assert (j._fsync_task is not None) is not c_syncer
    await j.close()
    assert verify_lines(path.read_text().splitlines(), public_key=key.public_key()).ok
