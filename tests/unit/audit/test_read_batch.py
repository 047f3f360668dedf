"""Reading the journal in batches for the store copy and the forwarders (``forward._read_batch``):
every complete record once, in order, whatever the chunk size; a record still being written
ends the batch and is read whole later."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbward.audit import forward


def _line(seq: int, size: int = 10) -> bytes:
    return json.dumps({"seq": seq, "type": "t", "sql": "x" * size}).encode() + b"\n"


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_batches_cover_every_record_once_whatever_the_chunk(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forward, "READ_CHUNK", chunk)
    path = tmp_path / "journal.jsonl"
    sizes = [10, 300, 0, 5000, 10, 10, 2000]
    path.write_bytes(b"".join(_line(i + 1, n) for i, n in enumerate(sizes)) + b'{"seq": 8, "type": "t"')
    seen: list[int] = []
    offset, seq = 0, 0
    for _ in range(20):
        batch, offset = forward._read_batch(path, seq, 3, offset)
        if not batch:
            break
        assert len(batch) <= 3
        for line, rec in batch:
            assert json.loads(line) == rec
        seq = batch[-1][1]["seq"]
        seen += [rec["seq"] for _, rec in batch]
    assert seen == list(range(1, 8))
    assert offset == len(path.read_bytes()) - len(b'{"seq": 8, "type": "t"')  # the partial record waits
    with path.open("ab") as f:
        f.write(b"}\n")
    batch, offset = forward._read_batch(path, seq, 3, offset)
    assert [rec["seq"] for _, rec in batch] == [8] and offset == path.stat().st_size


def test_records_at_or_before_the_cursor_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(_line(i) for i in range(1, 11)))
    batch, offset = forward._read_batch(path, 6, 100, 0)
    assert [rec["seq"] for _, rec in batch] == [7, 8, 9, 10] and offset == path.stat().st_size
    batch, _ = forward._read_batch(path, 0, 2, 0)
    assert [rec["seq"] for _, rec in batch] == [1, 2]
