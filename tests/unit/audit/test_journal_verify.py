"""The journal writes a verifiable chain; verify catches every kind of tampering."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dbward.audit.chain import Signer, canonical, record_hash
from dbward.audit.events import StatementDecided
from dbward.audit.journal import FileJournal, checkpoints_path, iter_records
from dbward.audit.verify import ProblemKind, verify_lines


def _event(i: int) -> StatementDecided:
    return StatementDecided(
        user="alice", connection="maria", sql=f"SELECT {i}", effect="allow", statement_id=str(i)
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


async def _write(path: Path, key: Ed25519PrivateKey, n: int, *, every: int = 10) -> FileJournal:
    j = FileJournal(
        path, fsync=False, signer=Signer(key), node="n1", checkpoint_every=every, checkpoint_interval=3600
    )
    for start in range(0, n, 5):  # batches of five concurrent appends (group commit)
        await asyncio.gather(*(j.append(_event(i)) for i in range(start, min(n, start + 5))))
    await j.close()
    return j


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def test_intact_trail_verifies_with_checkpoints(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "journal.jsonl"
    await _write(path, key, 25)
    lines = _lines(path)
    recs = [json.loads(x) for x in lines]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert sum(r["type"] == "audit.checkpoint" for r in recs) >= 3  # every 10 events + final
    report = verify_lines(
        lines, public_key=key.public_key(), external_checkpoints=_lines(checkpoints_path(path))
    )
    assert report.ok, report.problems
    (summary,) = report.chains.values()
    assert summary.records == len(lines)
    assert summary.checkpoints >= 3


async def test_reopen_continues_the_chain_and_concurrent_writers_share_it(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "journal.jsonl"
    await _write(path, key, 5)
    a = FileJournal(path, fsync=False, signer=Signer(key), node="a")
    b = FileJournal(path, fsync=False, signer=Signer(key), node="b")
    for i in range(6):
        await (a if i % 2 else b).append(_event(100 + i))
    await a.close()
    await b.close()
    report = verify_lines(_lines(path), public_key=key.public_key())
    assert report.ok, report.problems
    assert len({json.loads(x)["chain"] for x in _lines(path)}) == 1


async def test_partial_last_line_from_a_crash_is_cut_on_open(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "journal.jsonl"
    await _write(path, key, 3)
    with path.open("a") as f:
        f.write('{"chain":"x","seq":')  # the crash happened mid-write
    j = FileJournal(path, fsync=False, signer=Signer(key))
    await j.append(_event(9))
    await j.close()
    assert verify_lines(_lines(path), public_key=key.public_key()).ok


def _rewrite(lines: list[str], idx: int, **changes: object) -> list[str]:
    rec = json.loads(lines[idx])
    rec.update(changes)
    out = list(lines)
    out[idx] = canonical(rec)
    return out


@pytest.mark.parametrize(
    ("tamper", "kind", "seq"),
    [
        (lambda ls: _rewrite(ls, 4, sql="SELECT 'harmless'"), ProblemKind.ALTERED, 6),
        (lambda ls: ls[:4] + ls[5:], ProblemKind.DELETED, 5),
        (lambda ls: [*ls[:4], ls[4], *ls[4:]], ProblemKind.INSERTED, 5),
        (lambda ls: [*ls[:4], ls[5], ls[4], *ls[6:]], ProblemKind.REORDERED, 6),
        (lambda ls: ls[:7], ProblemKind.TRUNCATED, 8),
    ],
    ids=["edit-a-field", "delete", "insert-duplicate", "reorder", "truncate-tail"],
)
async def test_verify_reports_the_first_problem_precisely(
    tmp_path: Path, key: Ed25519PrivateKey, tamper: object, kind: ProblemKind, seq: int
) -> None:
    path = tmp_path / "journal.jsonl"
    await _write(path, key, 20)
    lines = _lines(path)
    tampered = tamper(lines)  # type: ignore[operator]
    report = verify_lines(
        tampered, public_key=key.public_key(), external_checkpoints=_lines(checkpoints_path(path))
    )
    assert not report.ok
    first = report.problems[0]
    assert first.kind is kind, report.problems
    assert first.seq == seq, first.message
    assert first.message.startswith(f"chain {first.chain}: ")


async def test_full_rewrite_is_caught_by_signed_checkpoints(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """An attacker edits one record and recomputes every later hash: checkpoints no longer match."""
    path = tmp_path / "journal.jsonl"
    await _write(path, key, 20)
    recs = [json.loads(x) for x in _lines(path)]
    recs[2]["sql"] = "SELECT 'nothing to see'"
    prev = recs[0]["prev"]
    out = []
    for r in recs:
        r["prev"] = prev
        line = canonical(r)
        prev = record_hash(line)
        out.append(line)
    report = verify_lines(out, public_key=key.public_key())
    assert not report.ok
    assert report.problems[0].kind is ProblemKind.ALTERED
    assert "checkpoint" in report.problems[0].message


async def test_forged_checkpoint_is_caught(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "journal.jsonl"
    await _write(path, key, 20)
    lines = _lines(path)
    idx = next(i for i, x in enumerate(lines) if json.loads(x)["type"] == "audit.checkpoint")
    forger = Signer(Ed25519PrivateKey.generate())
    rec = json.loads(lines[idx])
    rec["signature"] = forger.sign(rec["chain"], rec["covers_seq"], rec["covers_hash"])
    lines[idx] = canonical(rec)
    report = verify_lines(lines, public_key=key.public_key())
    assert report.problems[0].kind is ProblemKind.BAD_CHECKPOINT
    assert "invalid signature" in report.problems[0].message


async def test_iter_records_skips_a_record_still_being_written(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "journal.jsonl"
    await _write(path, key, 3, every=100)
    with path.open("a") as f:
        f.write('{"partial":')
    assert [r["seq"] for _, r in iter_records(path, after_seq=1)] == [2, 3, 4]


async def test_write_durability_returns_after_write_and_syncs_in_the_background(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "journal.jsonl"
    j = FileJournal(path, signer=Signer(key), durability="write", fsync_interval=0.001, checkpoint_every=4)
    for i in range(10):
        receipt = await j.append(_event(i))
        # Already in the file (the OS has it) before append returned.
        assert json.loads(path.read_text().splitlines()[-1])["seq"] in (receipt.seq, receipt.seq + 1)
    await j.close()
    assert verify_lines(_lines(path), public_key=key.public_key()).ok


@pytest.mark.parametrize("durability", ["write", "fsync"])
async def test_deferred_events_keep_their_place_and_reach_the_file(
    tmp_path: Path, key: Ed25519PrivateKey, durability: str
) -> None:
    path = tmp_path / "journal.jsonl"
    j = FileJournal(path, fsync=durability == "fsync", signer=Signer(key), durability=durability)
    await j.append(_event(1))
    j.append_soon(_event(2))
    j.append_soon(_event(3))
    await j.append(_event(4))  # the deferred two are written first, in order
    j.append_soon(_event(5))
    await asyncio.sleep(0)  # the end of a loop iteration writes (or, with fsync, queues) it
    if j._writer is not None:  # durability "fsync": the group commit writes it in a thread
        await j._writer
    ids = [json.loads(x)["statement_id"] for x in _lines(path) if '"statement.decision"' in x]
    assert ids == ["1", "2", "3", "4", "5"]
    j.append_soon(_event(6))
    await j.close()  # and closing writes the rest
    recs = [json.loads(x) for x in _lines(path)]
    assert [r["statement_id"] for r in recs if r["type"] == "statement.decision"][-1] == "6"
    assert verify_lines(_lines(path), public_key=key.public_key()).ok


async def test_a_deferred_write_failure_fails_the_next_append_closed(tmp_path: Path) -> None:
    from dbward.errors import AuditUnavailable

    j = FileJournal(tmp_path / "journal.jsonl", fsync=False, durability="write")
    await j.append(_event(1))
    assert j._fd is not None
    import os

    os.close(j._fd)  # the file descriptor goes bad under the journal (a disk or mount failure)
    j._fd = os.open(os.devnull, os.O_RDONLY)  # writes now fail with EBADF
    j.append_soon(_event(2))
    await asyncio.sleep(0)
    with pytest.raises(AuditUnavailable, match="cannot be written"):
        await j.append(_event(3))


def test_an_event_is_written_as_its_dict_says() -> None:
    """The journal serialises ``record()`` (a UTC time left for orjson to write); the line is
    the one ``to_dict()`` gives, for times with and without a fraction and in another zone."""
    from datetime import UTC, datetime, timedelta, timezone

    from dbward.audit.chain import canonical_bytes

    for t in (
        datetime.now(UTC),
        datetime(2026, 1, 7, 12, 0, tzinfo=UTC),
        datetime(2026, 1, 7, 12, 0, 0, 5, tzinfo=UTC),
        datetime(2026, 1, 7, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ):
        ev = StatementDecided(time=t, user="alice", sql="SELECT 1", reasons=["r"], params=[1, "x"])
        assert canonical_bytes(ev.record()) == canonical(ev.to_dict()).encode()
        assert ev.to_dict()["time"] == t.isoformat()


async def test_writers_sharing_a_journal_resync_after_each_other_even_past_long_records(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "journal.jsonl"
    a = FileJournal(path, fsync=False, signer=Signer(key), node="a", durability="write", checkpoint_every=7)
    b = FileJournal(path, fsync=False, signer=Signer(key), node="b", durability="write", checkpoint_every=7)
    for i in range(20):
        writer = a if i % 3 else b
        sql = "SELECT " + "x" * (9000 if i % 4 == 0 else 10)  # some records longer than a read block
        receipt = writer.append_now(StatementDecided(user="alice", sql=sql, statement_id=str(i)))
        assert receipt is not None
        assert (
            receipt.seq == json.loads(_lines(path)[-1])["seq"]
            or receipt.seq + 1 == json.loads(_lines(path)[-1])["seq"]
        )
    await a.close()
    await b.close()
    report = verify_lines(_lines(path), public_key=key.public_key())
    assert report.ok, report.problems
    ids = [json.loads(x).get("statement_id") for x in _lines(path)]
    assert [i for i in ids if i is not None] == [str(i) for i in range(20)]


async def test_one_process_keeps_the_file_lock_for_a_while_and_other_writers_follow(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """hold_lock (one proxy process): the appends of the next ``hold_lock`` seconds, over any
    number of loop iterations, share one lock; another writer (an admin command) gets the
    lock when that time is over, and its records and the node's form one chain."""
    import fcntl
    import os
    import threading

    path = tmp_path / "journal.jsonl"
    node = FileJournal(path, fsync=False, signer=Signer(key), node="n", durability="write", hold_lock=0.05)
    admin = FileJournal(path, fsync=False, signer=Signer(key), node="admin", durability="write")

    def locked_elsewhere() -> bool:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also frees a lock it took
        return False

    for round_ in range(3):
        for i in range(4):
            assert node.append_now(_event(round_ * 10 + i)) is not None
            assert locked_elsewhere()  # held across iterations
            await asyncio.sleep(0)
        if round_ < 2:
            await asyncio.sleep(0.2)  # the time is over: the lock is freed
            assert not locked_elsewhere()
            assert admin.append_now(_event(100 + round_)) is not None  # takes and frees it per write
            assert not locked_elsewhere()
        else:
            # an admin command appending meanwhile waits for the node's lock, then follows
            done = threading.Event()

            def admin_appends(done: threading.Event = done) -> None:
                admin.append_now(_event(102))
                done.set()

            t = threading.Thread(target=admin_appends)
            t.start()
            assert not done.wait(0.01)  # blocked while the node holds the lock
            for _ in range(50):  # the loop runs on; its timer frees the lock
                await asyncio.sleep(0.01)
                if done.is_set():
                    break
            t.join(5)
            assert done.is_set()
    node.append_soon(_event(999))
    await asyncio.sleep(0.2)
    assert not locked_elsewhere()
    await node.close()
    await admin.close()
    report = verify_lines(_lines(path), public_key=key.public_key())
    assert report.ok, report.problems
    ids = [json.loads(x).get("statement_id") for x in _lines(path) if json.loads(x).get("statement_id")]
    assert ids == [
        "0",
        "1",
        "2",
        "3",
        "100",
        "10",
        "11",
        "12",
        "13",
        "101",
        "20",
        "21",
        "22",
        "23",
        "102",
        "999",
    ]
