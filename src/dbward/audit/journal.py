"""The audit journal: append-only, sequence-numbered, hash-chained, durable before return.

Every event is serialised as canonical JSON (sorted keys, no spaces) with ``seq`` and
``prev`` (the SHA-256 of the previous line); ``append`` returns only after the line is
written (and fsynced when configured). Writers are batched: all events appended while a
write is in flight go out in the next write with one fsync (group commit), so the journal
costs one fsync per batch, not per statement.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dbward.audit.events import AuditEvent
from dbward.errors import AuditUnavailable

log = logging.getLogger(__name__)

GENESIS = "0" * 64


def canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class AuditReceipt:
    seq: int
    hash: str


class AuditJournal(Protocol):
    async def append(self, event: AuditEvent) -> AuditReceipt:
        """Durably record ``event`` or raise :class:`AuditUnavailable`."""
        ...

    async def close(self) -> None: ...


class MemoryJournal:
    """A journal kept in memory, hash chain included; for tests and the gate benchmark."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._prev = GENESIS

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.records

    async def append(self, event: AuditEvent) -> AuditReceipt:
        rec = {"seq": len(self.records) + 1, "prev": self._prev, **event.to_dict()}
        self._prev = hashlib.sha256(canonical(rec).encode()).hexdigest()
        self.records.append(rec)
        return AuditReceipt(rec["seq"], self._prev)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]

    async def close(self) -> None:
        return None


class FileJournal:
    """A JSON-lines journal file with group commit."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._seq = 0
        self._prev = GENESIS
        self._pending: list[tuple[dict[str, Any], asyncio.Future[AuditReceipt]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._fd: int | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            last = _last_line(self.path)
            if last:
                rec = json.loads(last)
                self._seq = int(rec["seq"])
                self._prev = hashlib.sha256(last.encode()).hexdigest()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def append(self, event: AuditEvent) -> AuditReceipt:
        if self._fd is None:
            self.open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[AuditReceipt] = loop.create_future()
        self._pending.append((event.to_dict(), fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush(), name="audit-journal-writer")
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            lines: list[str] = []
            receipts: list[AuditReceipt] = []
            seq, prev = self._seq, self._prev
            for rec, _ in batch:
                seq += 1
                line = canonical({"seq": seq, "prev": prev, **rec})
                prev = hashlib.sha256(line.encode()).hexdigest()
                lines.append(line)
                receipts.append(AuditReceipt(seq, prev))
            data = ("\n".join(lines) + "\n").encode()
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:
                log.error("audit journal %s cannot be written: %s", self.path, exc)
                err = AuditUnavailable(
                    f"the audit journal {self.path} cannot be written ({exc.strerror}); "
                    "statements are refused until it can (audit.fail_closed)"
                )
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self._seq, self._prev = seq, prev
            for (_, fut), receipt in zip(batch, receipts, strict=True):
                if not fut.done():
                    fut.set_result(receipt)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        os.write(self._fd, data)
        if self.fsync:
            os.fsync(self._fd)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _last_line(path: Path) -> str | None:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        block = 65536
        pos = max(0, size - block)
        f.seek(pos)
        tail = f.read()
        while pos > 0 and tail.count(b"\n") < 2:
            pos = max(0, pos - block)
            f.seek(pos)
            tail = f.read()
    lines = [ln for ln in tail.decode().split("\n") if ln.strip()]
    return lines[-1] if lines else None
