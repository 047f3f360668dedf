"""Forwarders against real receivers on loopback: syslog over UDP, TCP and TLS, HTTP, files."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dbward.audit.events import StatementDecided
from dbward.audit.forward import Dispatcher, build_forwarder
from dbward.audit.journal import FileJournal
from dbward.config import ForwarderSettings
from dbward.proxy.tls import generate_self_signed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _journal(tmp_path: Path, n: int, start: int = 0) -> FileJournal:
    j = FileJournal(tmp_path / "journal.jsonl", fsync=False, node="n1")
    for i in range(start, start + n):
        await j.append(StatementDecided(user="alice", connection="maria", sql=f"SELECT {i}", effect="allow"))
    return j


class SyslogReceiver:
    """A small RFC 6587 octet-counting syslog server (TCP or TLS)."""

    def __init__(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.messages: list[bytes] = []
        self.ssl_ctx = ssl_ctx
        self.server: asyncio.Server | None = None

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = await r.readuntil(b" ")
                self.messages.append(await r.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port, ssl=self.ssl_ctx)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


RFC5424 = re.compile(
    rb"^<(\d+)>1 (\S+) (\S+) dbward - (Q001I) \[dbward@32473 chain=\"\w+\" seq=\"(\d+)\" user=\"alice\" connection=\"maria\" effect=\"allow\"\] (\{.*\})$"
)


async def test_tcp_syslog_down_then_up_catches_up_without_loss_or_duplicates(tmp_path: Path) -> None:
    port = _free_port()
    j = await _journal(tmp_path, 5)
    cfg = ForwarderSettings(name="siem", kind="syslog", host="127.0.0.1", port=port, transport="tcp")
    d = Dispatcher(
        j.path,
        j.chain,
        [(build_forwarder(cfg), 3)],
        tmp_path / "cursors",
        poll_interval=0.05,
        max_backoff=0.2,
    )
    d.start()
    await asyncio.sleep(0.4)  # the receiver is down: nothing delivered, nothing lost
    assert d.delivered["siem"] == 0 and "siem" in d.failures
    recv = SyslogReceiver()
    await recv.start(port)
    for i in range(5, 8):
        await j.append(StatementDecided(user="alice", connection="maria", sql=f"SELECT {i}", effect="allow"))
    await d.wait_delivered(8)
    await d.stop()
    await recv.stop()
    seqs = []
    for m in recv.messages:
        match = RFC5424.match(m)
        assert match, m
        assert int(match.group(1)) == 13 * 8 + 6
        seqs.append(int(match.group(5)))
        assert json.loads(match.group(6))["sql"].startswith("SELECT ")
    assert seqs == list(range(1, 9))
    # A restarted dispatcher resumes from its cursor: nothing is sent twice.
    recv2 = SyslogReceiver()
    await recv2.start(port)
    d2 = Dispatcher(j.path, j.chain, [(build_forwarder(cfg), 100)], tmp_path / "cursors", poll_interval=0.05)
    d2.start()
    await j.append(StatementDecided(user="alice", connection="maria", sql="SELECT 99", effect="allow"))
    await d2.wait_delivered(9)
    await d2.stop()
    await recv2.stop()
    assert [int(RFC5424.match(m).group(5)) for m in recv2.messages] == [9]  # type: ignore[union-attr]
    await j.close()


async def test_tls_syslog_rfc3164(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    generate_self_signed(cert, key)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    port = _free_port()
    recv = SyslogReceiver(sctx)
    await recv.start(port)
    j = await _journal(tmp_path, 3)
    cfg = ForwarderSettings(
        name="tls",
        kind="syslog",
        host="127.0.0.1",
        port=port,
        transport="tls",
        format="rfc3164",
        ca_file=cert,
    )
    # The certificate names localhost and 127.0.0.1, so verification stays on.
    d = Dispatcher(j.path, j.chain, [(build_forwarder(cfg), 10)], tmp_path / "cursors", poll_interval=0.05)
    d.start()
    await d.wait_delivered(3)
    await d.stop()
    await recv.stop()
    assert len(recv.messages) == 3
    assert all(re.match(rb"^<110>\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ dbward: \{", m) for m in recv.messages)
    await j.close()


async def test_udp_syslog(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    j = await _journal(tmp_path, 2)
    cfg = ForwarderSettings(name="udp", kind="syslog", host="127.0.0.1", port=port, transport="udp")
    d = Dispatcher(j.path, j.chain, [(build_forwarder(cfg), 10)], tmp_path / "cursors", poll_interval=0.05)
    d.start()
    await d.wait_delivered(2)
    await d.stop()
    got = [sock.recv(65535) for _ in range(2)]
    sock.close()
    assert all(RFC5424.match(m) for m in got)
    await j.close()


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail_next = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.fail_next > 0:
            _Hook.fail_next -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"text":"Success","code":0}')

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def http_receiver() -> Iterator[str]:
    _Hook.received = []
    _Hook.fail_next = 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


async def test_splunk_hec_retries_after_a_503(tmp_path: Path, http_receiver: str) -> None:
    _Hook.fail_next = 1
    j = await _journal(tmp_path, 4)
    cfg = ForwarderSettings(
        name="hec", kind="splunk_hec", url=f"{http_receiver}/services/collector/event", token="tok-123"
    )
    d = Dispatcher(
        j.path,
        j.chain,
        [(build_forwarder(cfg), 10)],
        tmp_path / "cursors",
        poll_interval=0.05,
        max_backoff=0.1,
    )
    d.start()
    await d.wait_delivered(4)
    await d.stop()
    ((headers, body),) = _Hook.received
    assert headers["Authorization"] == "Splunk tok-123"
    events = [json.loads(x) for x in body.decode().splitlines()]
    assert [e["event"]["seq"] for e in events] == [1, 2, 3, 4]
    assert {e["sourcetype"] for e in events} == {"dbward:audit"}
    await j.close()


async def test_webhook_and_jsonl_rotation(tmp_path: Path, http_receiver: str) -> None:
    j = await _journal(tmp_path, 30)
    hook = ForwarderSettings(
        name="hook", kind="webhook", url=f"{http_receiver}/audit", headers={"X-Team": "sec"}
    )
    files = ForwarderSettings(
        name="files", kind="jsonl", path=tmp_path / "out" / "audit.jsonl", max_bytes=2048, backups=50
    )
    d = Dispatcher(
        j.path,
        j.chain,
        [(build_forwarder(hook), 10), (build_forwarder(files), 4)],
        tmp_path / "cursors",
        poll_interval=0.05,
    )
    d.start()
    await d.wait_delivered(30)
    await d.stop()
    seqs = [e["seq"] for _, body in _Hook.received for e in json.loads(body)["events"]]
    assert seqs == list(range(1, 31))
    assert all(h["X-Team"] == "sec" for h, _ in _Hook.received)
    out = sorted((tmp_path / "out").iterdir())
    assert len(out) > 1  # rotated
    lines = [ln for p in out for ln in p.read_text().splitlines()]
    assert sorted(json.loads(ln)["seq"] for ln in lines) == list(range(1, 31))
    await j.close()
