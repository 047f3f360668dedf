"""The audit journal: append-only, sequence-numbered, hash-chained, durable before return.

``append`` returns only after the event's line is written (and fsynced when configured), so a
decision is on disk before it takes effect. Writers are batched (group commit): every event
appended while a write is in flight goes out in the next write with one fsync, so the journal
costs one fsync per batch, not per statement. The file is locked (flock) during each write and
the chain state re-read if another process (``dbward apply`` beside a running node) appended,
so several writers on one data directory keep one valid chain.

Every ``checkpoint_every`` events or ``checkpoint_interval`` seconds, and at close, a signed
checkpoint record joins the chain (see ``audit/chain.py``). Counterparts: ``audit/verify.py``
checks what this writes; ``audit/forward.py`` ships it to the store and SIEM forwarders.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol

import orjson

from dbward.audit.chain import (
    CHECKPOINT_TYPE,
    GENESIS,
    Signer,
    canonical,
    canonical_bytes,
    record_hash,
    record_hash_bytes,
)
from dbward.audit.events import AuditEvent
from dbward.errors import AuditUnavailable

log = logging.getLogger(__name__)

try:  # the background fsync in a thread of its own that never takes the GIL (_syncer.c)
    from dbward.audit._syncer import Syncer
except ImportError:  # not built: an fsync in a worker thread of the event loop instead
    Syncer = None  # type: ignore[assignment,misc]


def c_syncer_built() -> bool:
    """Whether the journal fsyncs in the background through the C thread (``_syncer.c``)."""
    return Syncer is not None


__all__ = [
    "GENESIS",
    "AuditJournal",
    "AuditReceipt",
    "FileJournal",
    "MemoryJournal",
    "QueuedAuditJournal",
    "SyncAuditJournal",
    "Writer",
    "iter_records",
]


@dataclass(frozen=True)
class AuditReceipt:
    seq: int
    hash: str


class AuditJournal(Protocol):
    async def append(self, event: AuditEvent) -> AuditReceipt:
        """Durably record ``event`` or raise :class:`AuditUnavailable`."""
        ...

    def append_soon(self, event: AuditEvent) -> None:
        """Record ``event`` without waiting: it is written before the next :meth:`append`
        (the order of the trail is kept) or at the end of the current loop iteration, whichever
        comes first. For events nothing waits on (a statement's completion); a write failure
        makes the next :meth:`append` raise :class:`AuditUnavailable`."""
        ...

    async def close(self) -> None: ...


class SyncAuditJournal(AuditJournal, Protocol):
    """A journal that can also record an event without awaiting (the gate's fast path looks
    for ``append_now``; journals without it send every statement to the awaiting path)."""

    def append_now(self, event: AuditEvent) -> AuditReceipt | None:
        """Record ``event`` as :meth:`append` would, synchronously, and return its receipt;
        or return None, having done nothing, when this journal cannot do that without
        waiting (then await :meth:`append`). Raises :class:`AuditUnavailable` like it."""
        ...


class Writer(Protocol):
    """Where a statement's bytes go once its decision is recorded (a transport, a stream)."""

    def write(self, data: bytes | bytearray) -> None: ...


class QueuedAuditJournal(SyncAuditJournal, Protocol):
    """A journal that can write the records of one loop iteration together (the gate looks
    for ``append_queued``): a decision is queued, and the statement it decided is held back
    (:meth:`forward`) until the write that carries the record has returned."""

    def append_queued(self, event: AuditEvent) -> bool:
        """Queue ``event`` for the journal's write at the end of this loop iteration and
        return True; or return False, having done nothing, when this journal cannot (then
        use :meth:`append_now`). Raises :class:`AuditUnavailable` when the journal failed."""
        ...

    def forward(
        self, writer: Writer, data: bytes | bytearray, fail: Callable[[AuditUnavailable], None]
    ) -> None:
        """``writer.write(data)`` once every record queued so far is written: at once when
        none waits, else right after the write that carries them; when that write fails,
        ``fail(error)`` instead, and ``data`` is never written."""
        ...

    def flush(self) -> None:
        """Write the queued records now (and what waits for them), before a write to a
        target that may not wait for the end of the iteration."""
        ...


def _send_held(writer: Writer, data: bytes | bytearray) -> None:
    """Send a statement held for its audit record, now that the record is written."""
    try:
        writer.write(data)
    except Exception as exc:  # its session ended meanwhile (a closed transport)
        log.debug("a statement held for its audit record was not sent: %s", exc)


class MemoryJournal:
    """A journal kept in memory, hash chain included; for tests and the gate benchmark."""

    def __init__(self, chain: str = "memory") -> None:
        self.chain = chain
        self.records: list[dict[str, Any]] = []
        self._prev = GENESIS
        self._waiting: list[tuple[Writer, bytes | bytearray]] = []
        self._release_scheduled = False

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.records

    async def append(self, event: AuditEvent) -> AuditReceipt:
        return self.append_now(event)

    def append_now(self, event: AuditEvent) -> AuditReceipt:
        rec = {"chain": self.chain, "seq": len(self.records) + 1, "prev": self._prev, **event.to_dict()}
        self._prev = record_hash(canonical(rec))
        self.records.append(rec)
        return AuditReceipt(rec["seq"], self._prev)

    def append_soon(self, event: AuditEvent) -> None:
        rec = {"chain": self.chain, "seq": len(self.records) + 1, "prev": self._prev, **event.to_dict()}
        self._prev = record_hash(canonical(rec))
        self.records.append(rec)

    # Queued decisions as FileJournal has them: the record is kept at once, but what waits
    # for it (forward) goes out only at the end of the loop iteration, so that the engines'
    # held writes run in every test as they do in a node.
    def append_queued(self, event: AuditEvent) -> bool:
        self.append_now(event)
        if not self._release_scheduled:
            self._release_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return True

    def forward(
        self, writer: Writer, data: bytes | bytearray, fail: Callable[[AuditUnavailable], None]
    ) -> None:
        if self._release_scheduled or self._waiting:
            self._waiting.append((writer, data))
        else:
            writer.write(data)

    def flush(self) -> None:
        self._release_scheduled = False
        waiting, self._waiting = self._waiting, []
        for writer, data in waiting:
            _send_held(writer, data)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]

    async def close(self) -> None:
        return None


def checkpoints_path(path: Path) -> Path:
    return path.with_name(path.name + ".checkpoints")


def chain_id_for(path: Path) -> str:
    """The journal's chain id, kept beside it (``journal.jsonl.chain``); created on first use."""
    id_path = path.with_name(path.name + ".chain")
    try:
        return id_path.read_text().strip()
    except FileNotFoundError:
        chain = uuid.uuid4().hex[:16]
        id_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(id_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return id_path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(chain + "\n")
        return chain


class FileJournal:
    """A JSON-lines journal file with group commit, file locking and signed checkpoints."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = True,
        signer: Signer | None = None,
        node: str | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 10.0,
        durability: str = "fsync",
        fsync_interval: float = 0.005,
        hold_lock: float = 0.0,
    ) -> None:
        if durability not in ("fsync", "write"):
            raise ValueError("durability must be 'fsync' or 'write'")
        self.path = path
        self.fsync = fsync
        self.durability = durability
        self.fsync_interval = fsync_interval
        self._fsync_task: asyncio.Task[None] | None = None
        #: durability "write" with fsync: the C syncer when built (see _after_write)
        self._syncer: Syncer | None = None
        self._failure: AuditUnavailable | None = None
        self.signer = signer
        self.node = node
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.chain = ""
        self._seq = 0
        self._prev = GENESIS
        self._size = 0
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._pending: list[tuple[dict[str, Any], asyncio.Future[AuditReceipt]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: records of append_soon() not yet written, and whether a flush is scheduled
        self._soon: list[dict[str, Any]] = []
        self._soon_scheduled = False
        #: statements held back until the queued records are written: (writer, data, fail)
        self._waiting: list[tuple[Writer, bytes | bytearray, Callable[[AuditUnavailable], None]]] = []
        self._fd: int | None = None
        #: one writer at a time within this process (the file lock is per open file, so it
        #: does not keep this process's threads apart)
        self._mutex = threading.Lock()
        #: the file lock is held after a write of the event loop's (see _unlock)
        self._held = False
        #: how long (seconds) the event loop keeps the file lock after one of its writes, so
        #: that the writes of that time share one lock, stat and unlock: for a journal one
        #: process writes nearly alone (one proxy process; an admin command appending waits
        #: at most that long). 0: taken and freed per write, as worker processes sharing a
        #: journal do (holding it, they would take turns by whole periods).
        self.hold_lock = hold_lock
        #: called (in the event loop) after each batch is durable; the dispatcher's wake-up
        self.on_durable: Callable[[], None] | None = None

    # -- opening and recovery ------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.chain = chain_id_for(self.path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._sync_state(repair=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if self.fsync and self.durability == "write" and Syncer is not None and self._syncer is None:
            self._syncer = Syncer(self._fd, self.fsync_interval)

    def _sync_state(self, *, repair: bool = False) -> None:
        """Read the chain state from the file's last complete line (under the lock)."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._seq, self._prev, self._size = 0, GENESIS, 0
            return
        tail, start = read_tail(self._fd, size)
        if not tail.endswith(b"\n"):
            # A write interrupted by a crash: that append never returned, so the decision it
            # carried never took effect. Cut the partial line so the chain stays valid.
            cut = tail.rfind(b"\n")
            new_size = start + cut + 1 if cut >= 0 else start
            if repair:
                log.warning("audit journal %s ended in a partial record; truncating it", self.path)
                os.ftruncate(self._fd, new_size)
                size = new_size
                tail = tail[: cut + 1] if cut >= 0 else b""
        lines = [ln for ln in tail.split(b"\n") if ln.strip()]
        if not lines:
            self._seq, self._prev, self._size = 0, GENESIS, size
            return
        last = lines[-1]
        rec = orjson.loads(last)
        self._seq = int(rec["seq"])
        self._prev = record_hash_bytes(last)
        self._size = size

    # -- appending -----------------------------------------------------------------------
    async def append(self, event: AuditEvent) -> AuditReceipt:
        if self._fd is None:
            self.open()
        failure = self._failure or self._sync_failure()
        if failure is not None:
            raise failure
        if self.durability == "write":
            return self._append_written(event)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[AuditReceipt] = loop.create_future()
        rec = event.record()
        if self.node and not rec.get("node"):
            rec["node"] = self.node
        if self._soon:
            self._queue_soon()
        self._pending.append((rec, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush(), name="audit-journal-writer")
        return await fut

    def append_now(self, event: AuditEvent) -> AuditReceipt | None:
        """durability "write": :meth:`append` without awaiting (it never waits in that mode),
        for the gate's fast path. durability "fsync": None, nothing done (the caller awaits
        :meth:`append`, which joins the group commit)."""
        if self.durability != "write":
            return None
        if self._fd is None:
            self.open()
        failure = self._failure or self._sync_failure()
        if failure is not None:
            raise failure
        return self._append_written(event)

    def append_soon(self, event: AuditEvent) -> None:
        if self._fd is None:
            self.open()
        rec = event.record()
        if self.node and not rec.get("node"):
            rec["node"] = self.node
        self._soon.append(rec)
        if not self._soon_scheduled:
            self._soon_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def append_queued(self, event: AuditEvent) -> bool:
        """durability "write": ``event`` joins the records written at the end of this loop
        iteration (:meth:`append_soon`'s), one write for all the statements the loop served
        in it instead of one each; the statement it decided goes out through
        :meth:`forward`. durability "fsync": False, nothing done."""
        if self.durability != "write":
            return False
        failure = self._failure or self._sync_failure()
        if failure is not None:
            raise failure
        self.append_soon(event)
        return True

    def forward(
        self, writer: Writer, data: bytes | bytearray, fail: Callable[[AuditUnavailable], None]
    ) -> None:
        if self._failure is not None and self._soon:
            fail(self._failure)  # its record is among those that could not be written
        elif self.durability != "write" or not (self._soon or self._waiting):
            writer.write(data)  # nothing it could depend on is still unwritten
        else:
            self._waiting.append((writer, data, fail))

    def flush(self) -> None:
        if self._soon and self.durability == "write":
            self._flush_soon()

    def _release_waiting(self) -> None:
        """The queued records are written: what waited for them goes out, in order."""
        waiting, self._waiting = self._waiting, []
        for writer, data, _ in waiting:
            _send_held(writer, data)

    def _fail_waiting(self, exc: AuditUnavailable) -> None:
        """The queued records could not be written: nothing that waited for them is sent."""
        waiting, self._waiting = self._waiting, []
        for _, _, fail in waiting:
            try:
                fail(exc)
            except Exception:
                log.exception("a session could not be ended after an audit journal failure")

    def _flush_soon(self) -> None:
        self._soon_scheduled = False
        if not self._soon:
            return
        failure = self._failure or self._sync_failure()
        if failure is not None:
            if self._waiting:
                self._fail_waiting(failure)
            return
        if self.durability == "write":
            records, self._soon = self._soon, []
            try:
                self._write_batch(records, do_fsync=False, hold=True)
            except OSError as exc:
                self._failure = self._unavailable(exc)
                log.error("audit journal %s cannot be written: %s", self.path, exc)
                self._fail_waiting(self._failure)
                return
            self._after_write()
            if self._waiting:
                self._release_waiting()
        else:
            self._queue_soon()

    def _queue_soon(self) -> None:
        """durability "fsync": deferred records join the group commit ahead of what follows."""
        loop = asyncio.get_running_loop()
        for rec in self._soon:
            fut: asyncio.Future[AuditReceipt] = loop.create_future()
            fut.add_done_callback(_lost_if_failed)
            self._pending.append((rec, fut))
        self._soon = []
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush(), name="audit-journal-writer")

    def _after_write(self) -> None:
        if self._syncer is not None:
            # its thread fsyncs within fsync_interval, without the GIL; a failure is read
            # back by _sync_failure before the next record
            self._syncer.note_write()
        elif self.fsync and (self._fsync_task is None or self._fsync_task.done()):
            self._fsync_task = asyncio.create_task(self._background_fsync(), name="audit-journal-fsync")
        if self.on_durable is not None:
            self.on_durable()

    def _append_written(self, event: AuditEvent) -> AuditReceipt:
        """durability "write": the record is in the OS (it survives a crash of dbward) when this
        returns; fsync follows within ``fsync_interval`` seconds, for all records written since."""
        rec = event.record()
        if self.node and not rec.get("node"):
            rec["node"] = self.node
        records = [*self._soon, rec] if self._soon else [rec]
        try:
            receipts = self._write_batch(records, do_fsync=False, hold=True)
        except OSError as exc:
            err = self._unavailable(exc)
            if self._waiting:  # their records were in this write
                self._fail_waiting(err)
            raise err from exc
        self._soon = []
        receipt = receipts[-1]
        self._after_write()
        if self._waiting:
            self._release_waiting()
        return receipt

    def _sync_failure(self, syncer: Syncer | None = None) -> AuditUnavailable | None:
        """The error of the syncer's thread (``syncer``, else the journal's own) when it
        failed to fsync the journal: then it is ``_failure`` from now on."""
        syncer = syncer or self._syncer
        if syncer is None or not syncer.error:
            return None
        if self._failure is None:
            self._fsync_failed(OSError(syncer.error, os.strerror(syncer.error)))
        return self._failure

    def _fsync_failed(self, exc: OSError) -> None:
        # Fail closed from now on: nothing more is allowed until the journal is healthy.
        self._failure = self._unavailable(exc)
        log.error("audit journal %s cannot be synced to disk: %s", self.path, exc)

    async def _background_fsync(self) -> None:
        await asyncio.sleep(self.fsync_interval)
        fd = self._fd
        if fd is None:
            return
        try:
            await asyncio.to_thread(os.fsync, fd)
        except OSError as exc:
            self._fsync_failed(exc)

    def _unavailable(self, exc: OSError) -> AuditUnavailable:
        return AuditUnavailable(
            f"the audit journal {self.path} cannot be written ({exc.strerror or exc}); "
            "statements are refused until it can (setting audit.fail_closed)"
        )

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                receipts = await asyncio.to_thread(self._write_batch, [rec for rec, _ in batch])
            except OSError as exc:
                log.error("audit journal %s cannot be written: %s", self.path, exc)
                err = AuditUnavailable(
                    f"the audit journal {self.path} cannot be written ({exc.strerror or exc}); "
                    "statements are refused until it can (setting audit.fail_closed)"
                )
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut), receipt in zip(batch, receipts, strict=True):
                if not fut.done():
                    fut.set_result(receipt)
            if self.on_durable is not None:
                self.on_durable()

    def _lock(self) -> None:
        """Take the file lock (under ``_mutex``) unless it is held already, and catch up with
        what other processes (worker processes, ``dbward`` admin commands) appended."""
        assert self._fd is not None
        if self._held:
            return  # nobody else could append since this process's last write
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        if os.fstat(self._fd).st_size != self._size:
            self._sync_state()  # another process appended since our last write

    def _unlock(self, hold: bool) -> None:
        """Release the file lock; with ``hold``, in the event loop's thread, only
        ``hold_lock`` seconds later. The writes of that time (every loop iteration writes
        once) then share one lock, stat and unlock instead of paying three system calls
        each; other processes wait at most that long."""
        assert self._fd is not None
        if self._held:
            return
        if hold and self.hold_lock > 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._held = True
                loop.call_later(self.hold_lock, self._release)
                return
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _release(self) -> None:
        with self._mutex:
            if self._held:
                self._held = False
                if self._fd is not None:
                    try:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
                    except OSError as exc:  # a failing file: the next write says so, fail closed
                        log.error("audit journal %s could not be unlocked: %s", self.path, exc)

    def _write_batch(
        self,
        records: list[dict[str, Any]],
        *,
        force_checkpoint: bool = False,
        do_fsync: bool = True,
        hold: bool = False,
    ) -> list[AuditReceipt]:
        with self._mutex:
            self._lock()
            try:
                return self._write_locked(records, force_checkpoint, do_fsync)
            finally:
                self._unlock(hold)

    def _write_locked(
        self, records: list[dict[str, Any]], force_checkpoint: bool, do_fsync: bool
    ) -> list[AuditReceipt]:
        assert self._fd is not None
        seq, prev = self._seq, self._prev
        chain = self.chain
        checkpoint_line: bytes | None = None
        lines: list[bytes] = []
        receipts: list[AuditReceipt] = []
        for rec in records:
            seq += 1
            # the record's own dict (events have no such fields): no copy per record
            rec["chain"], rec["seq"], rec["prev"] = chain, seq, prev
            line = canonical_bytes(rec)
            prev = sha256(line).hexdigest()
            lines.append(line)
            receipts.append(AuditReceipt(seq, prev))
        since = self._since_checkpoint + len(records)
        due = since >= self.checkpoint_every or (
            time.monotonic() - self._last_checkpoint >= self.checkpoint_interval and since > 0
        )
        if self.signer is not None and seq > 0 and (due or force_checkpoint):
            seq += 1
            cp = {
                "chain": self.chain,
                "seq": seq,
                "prev": prev,
                "type": CHECKPOINT_TYPE,
                "code": "X001I",
                "time": datetime.now(UTC).isoformat(),
                "node": self.node,
                "covers_seq": seq - 1,
                "covers_hash": prev,
                "key_id": self.signer.key_id(),
                "signature": self.signer.sign(self.chain, seq - 1, prev),
            }
            line = canonical_bytes(cp)
            prev = sha256(line).hexdigest()
            lines.append(line)
            checkpoint_line = line
            since = 0
            self._last_checkpoint = time.monotonic()
        if not lines:
            return receipts
        lines.append(b"")
        data = b"\n".join(lines)
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(28, "short write to the audit journal (disk full?)")
        if self.fsync and do_fsync:
            os.fsync(self._fd)
        if checkpoint_line is not None:
            # Kept apart from the journal too, so cutting the journal's tail is visible.
            with checkpoints_path(self.path).open("ab") as cf:
                cf.write(checkpoint_line + b"\n")
        self._seq, self._prev = seq, prev
        self._size += len(data)
        self._since_checkpoint = since
        return receipts

    async def checkpoint(self) -> None:
        """Write a signed checkpoint now (used at shutdown and by tests)."""
        if self._fd is None:
            self.open()
        if self._soon:
            self._flush_soon()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        await asyncio.to_thread(self._write_batch, [], force_checkpoint=True)

    async def close(self) -> None:
        if self._soon:
            self._flush_soon()
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._fsync_task is not None:
            await asyncio.shield(self._fsync_task)
        if self._syncer is not None:
            syncer, self._syncer = self._syncer, None
            await asyncio.to_thread(syncer.close)  # syncs what is unsynced, then ends
            self._sync_failure(syncer)  # reported once, if not already
        if self._fd is not None:
            if self.signer is not None and self._since_checkpoint > 0:
                try:
                    await asyncio.to_thread(self._write_batch, [], force_checkpoint=True)
                except OSError as exc:
                    log.error("final audit checkpoint could not be written: %s", exc)
            with self._mutex:
                self._held = False
                os.close(self._fd)  # releases the file lock too
                self._fd = None

    @property
    def last_seq(self) -> int:
        return self._seq


def _lost_if_failed(fut: asyncio.Future[AuditReceipt]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("a deferred audit event could not be written: %s", fut.exception())


def read_tail(fd: int, size: int) -> tuple[bytes, int]:
    """The end of the file holding at least two newlines (or all of it), and where it starts.

    Read in growing blocks from 4 KiB: a record is usually well under 1 KiB, and a journal
    shared by several processes is re-read this way whenever another one appended."""
    block = 4096
    start = max(0, size - block)
    while True:
        tail = os.pread(fd, size - start, start)
        if start == 0 or tail.count(b"\n") >= 2:
            return tail, start
        block = min(block * 4, 1 << 20)
        start = max(0, start - block)


def iter_records(path: Path, after_seq: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (line, record) for each complete record with seq > after_seq."""
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # a record still being written
            line = raw.decode().rstrip("\n")
            if not line:
                continue
            rec = json.loads(line)
            if int(rec.get("seq", 0)) > after_seq:
                yield line, rec
