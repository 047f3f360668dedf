"""Forwarding the journal to the store and to SIEM: syslog, Splunk HEC, webhooks, JSON lines.

Forwarders never sit on the statement path. Each one follows the journal file from its own
cursor (``<data_dir>/audit/cursors/<name>``), sends batches, and moves the cursor only after
the receiver accepted the batch; a receiver that is down is retried with backoff and catches
up from the journal when it returns, losing nothing. Counterpart: ``audit/journal.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from dbward.audit import syslog
from dbward.config import ForwarderSettings

log = logging.getLogger(__name__)

Batch = Sequence[tuple[str, dict[str, Any]]]


class Forwarder(Protocol):
    name: str

    async def send(self, batch: Batch) -> None:
        """Deliver the batch or raise; the dispatcher retries from the same cursor."""
        ...

    async def close(self) -> None: ...


class SyslogForwarder:
    def __init__(self, cfg: ForwarderSettings, hostname: str | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.hostname = hostname or socket.gethostname()
        self._writer: asyncio.StreamWriter | None = None
        self._udp: socket.socket | None = None

    def _format(self, line: str, rec: dict[str, Any]) -> bytes:
        if self.cfg.format == "rfc3164":
            return syslog.format_rfc3164(
                line, rec, hostname=self.hostname, app_name=self.cfg.app_name, facility=self.cfg.facility
            )
        return syslog.format_rfc5424(
            line,
            rec,
            hostname=self.hostname,
            app_name=self.cfg.app_name,
            facility=self.cfg.facility,
            sd_id=self.cfg.sd_id,
        )

    async def _connect(self) -> asyncio.StreamWriter:
        current = self._writer
        if current is not None and not current.is_closing():
            return current
        ctx: ssl.SSLContext | None = None
        if self.cfg.transport == "tls":
            ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None)
            if not self.cfg.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        assert self.cfg.host and self.cfg.port
        _, writer = await asyncio.wait_for(asyncio.open_connection(self.cfg.host, self.cfg.port, ssl=ctx), 10)
        self._writer = writer
        return writer

    async def send(self, batch: Batch) -> None:
        msgs = [self._format(line, rec) for line, rec in batch]
        if self.cfg.transport == "udp":
            if self._udp is None:
                self._udp = socket.socket(
                    socket.AF_INET6 if ":" in (self.cfg.host or "") else socket.AF_INET, socket.SOCK_DGRAM
                )
            for m in msgs:
                self._udp.sendto(m[:65000], (self.cfg.host, self.cfg.port))
            return
        frame = syslog.frame_octet_counting if self.cfg.framing == "octet-counting" else syslog.frame_lf
        try:
            w = await self._connect()
            w.write(b"".join(frame(m) for m in msgs))
            await asyncio.wait_for(w.drain(), 30)
        except (OSError, TimeoutError):
            await self.close()
            raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
            self._writer = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None


class HttpForwarder:
    """Splunk HTTP Event Collector (``kind: splunk_hec``) or a generic JSON webhook."""

    def __init__(self, cfg: ForwarderSettings, hostname: str | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.hostname = hostname or socket.gethostname()
        verify: bool | str = cfg.tls_verify
        if cfg.ca_file:
            verify = str(cfg.ca_file)
        self._client = httpx.AsyncClient(timeout=30, verify=verify)

    async def send(self, batch: Batch) -> None:
        assert self.cfg.url
        headers = dict(self.cfg.headers)
        if self.cfg.kind == "splunk_hec":
            headers["Authorization"] = f"Splunk {self.cfg.token}"
            body = "\n".join(
                json.dumps(
                    {
                        "time": _epoch(rec),
                        "host": self.hostname,
                        "source": "dbward",
                        "sourcetype": "dbward:audit",
                        "event": rec,
                    }
                )
                for _, rec in batch
            )
            resp = await self._client.post(self.cfg.url, content=body.encode(), headers=headers)
        else:
            headers.setdefault("Content-Type", "application/json")
            payload = {"source": "dbward", "host": self.hostname, "events": [rec for _, rec in batch]}
            resp = await self._client.post(
                self.cfg.url, content=json.dumps(payload).encode(), headers=headers
            )
        if resp.status_code >= 300:
            raise OSError(
                f"{self.cfg.kind} forwarder {self.name}: {self.cfg.url} answered HTTP {resp.status_code}"
            )

    async def close(self) -> None:
        await self._client.aclose()


class JsonlForwarder:
    """JSON-lines files with size-based rotation (``path``, ``path.1`` ... ``path.N``)."""

    def __init__(self, cfg: ForwarderSettings) -> None:
        self.name = cfg.name
        assert cfg.path is not None
        self.path = cfg.path
        self.max_bytes = cfg.max_bytes
        self.backups = cfg.backups

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size + len(data) > self.max_bytes:
            self._rotate()
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    async def send(self, batch: Batch) -> None:
        data = "".join(line + "\n" for line, _ in batch).encode()
        await asyncio.to_thread(self._write, data)

    async def close(self) -> None:
        return None


def _epoch(rec: dict[str, Any]) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(rec.get("time"))).timestamp()
    except ValueError:
        return 0.0


def build_forwarder(cfg: ForwarderSettings) -> Forwarder:
    match cfg.kind:
        case "syslog":
            return SyslogForwarder(cfg)
        case "splunk_hec" | "webhook":
            return HttpForwarder(cfg)
        case "jsonl":
            return JsonlForwarder(cfg)
        case _:
            raise ValueError(f"unsupported forwarder kind {cfg.kind!r}")


class Cursor:
    """The last journal seq a forwarder delivered, kept in a small file (atomic replace)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, chain: str) -> int:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return 0
        return int(data.get("seq", 0)) if data.get("chain") == chain else 0

    def save(self, chain: str, seq: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"chain": chain, "seq": seq}))
        os.replace(tmp, self.path)


class Dispatcher:
    """Runs one follower task per forwarder over the journal file."""

    def __init__(
        self,
        journal_path: Path,
        chain: str,
        forwarders: Sequence[tuple[Forwarder, int]],
        cursor_dir: Path,
        *,
        poll_interval: float = 0.5,
        max_backoff: float = 30.0,
        linger: float = 0.0,
    ) -> None:
        self.journal_path = journal_path
        self.chain = chain
        self.forwarders = forwarders
        self.cursor_dir = cursor_dir
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        # Once caught up, wait this long before the next small batch, so that a busy node
        # sends few large batches rather than one per statement (the journal already holds
        # every event durably; forwarding is never on the statement path).
        self.linger = linger
        self._urgent = False
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.delivered: dict[str, int] = {}
        self.failures: dict[str, str] = {}

    def start(self) -> None:
        for fwd, batch_size in self.forwarders:
            self._tasks.append(
                asyncio.create_task(self._follow(fwd, batch_size), name=f"audit-forwarder-{fwd.name}")
            )

    def notify(self) -> None:
        self._wake.set()

    async def _follow(self, fwd: Forwarder, batch_size: int) -> None:
        cursor = Cursor(self.cursor_dir / f"{fwd.name}.json")
        seq = cursor.load(self.chain)
        self.delivered[fwd.name] = seq
        backoff = 0.5
        offset = 0  # byte offset in the journal of the first record after `seq`
        while True:
            batch: list[tuple[str, dict[str, Any]]] = []
            next_offset = offset
            if self.journal_path.exists():
                # Read in the loop's thread: the journal tail is in the page cache, and a
                # worker thread parsing JSON would contend for the GIL with the proxy.
                batch, next_offset = _read_batch(self.journal_path, seq, batch_size, offset)
            if not batch:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                except TimeoutError:
                    pass
                continue
            try:
                await fwd.send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures[fwd.name] = str(exc)
                log.warning(
                    "audit forwarder %s failed (%s); retrying in %.1fs from seq %s",
                    fwd.name,
                    exc,
                    backoff,
                    seq + 1,
                )
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            backoff = 0.5
            self.failures.pop(fwd.name, None)
            seq = int(batch[-1][1]["seq"])
            offset = next_offset
            cursor.save(self.chain, seq)
            self.delivered[fwd.name] = seq
            if self.linger and len(batch) < batch_size and not self._urgent:
                await asyncio.sleep(self.linger)

    async def wait_delivered(self, seq: int, timeout: float = 10.0) -> None:
        """Wait until every forwarder delivered up to ``seq`` (tests, graceful shutdown)."""
        self._urgent = True
        try:
            async with asyncio.timeout(timeout):
                while any(v < seq for v in self.delivered.values()) or len(self.delivered) < len(
                    self.forwarders
                ):
                    self.notify()
                    await asyncio.sleep(0.05)
        finally:
            self._urgent = False

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fwd, _ in self.forwarders:
            await fwd.close()


#: bytes read from the journal at a time; a longer record is read in growing steps
READ_CHUNK = 1 << 20


def _read_batch(
    path: Path, after_seq: int, limit: int, offset: int
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """Up to ``limit`` complete records with seq > after_seq, reading from byte ``offset``.

    Reads a chunk at a time and splits it (a Python loop over the file's lines cost as much
    as parsing them); a record still being written (no newline yet) ends the batch."""
    out: list[tuple[str, dict[str, Any]]] = []
    loads = orjson.loads
    with path.open("rb") as f:
        f.seek(offset)
        pos = offset
        size = READ_CHUNK
        while len(out) < limit:
            data = f.read(size)
            if not data:
                break
            end = data.rfind(b"\n") + 1
            if end == 0:  # no whole record in it: one longer than the chunk, or one in writing
                if len(data) < size:
                    break
                f.seek(pos)
                size *= 4
                continue
            start = 0
            while start < end:
                nl = data.index(b"\n", start)
                raw = data[start:nl]
                if raw:
                    rec = loads(raw)
                    if int(rec.get("seq", 0)) > after_seq:
                        if len(out) >= limit:
                            return out, pos + start
                        out.append((raw.decode(), rec))
                start = nl + 1
            pos += end
            f.seek(pos)
            size = READ_CHUNK
    return out, pos
