"""Approval notifications against real receivers on loopback: an HTTP server and an SMTP server.

The HTTP receiver is a small asyncio HTTP/1.1 server that records every request and answers
with a scripted status (or never answers); the SMTP server is aiosmtpd, with STARTTLS on a
self-signed certificate, implicit TLS and AUTH. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from dbward.approvals.notice import ApprovalNotice, NoticeEvent
from dbward.approvals.notify import (
    IdleNotifier,
    NotificationHub,
    build_notifier,
    verify_signature,
)
from dbward.config import NotificationSettings, SmtpSettings, WebhookSettings
from dbward.proxy.tls import generate_self_signed

#: a safety net against a hang, not a measurement: every wait below normally ends at once
WAIT = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _notice(event: NoticeEvent = NoticeEvent.REQUESTED, **kw: Any) -> ApprovalNotice:
    values: dict[str, Any] = {
        "event": event,
        "request_id": "req-42",
        "request_type": "sql",
        "title": "bob asks to run an UPDATE on maria (ledger)",
        "requester": "bob",
        "occurred_at": datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
        "connection": "maria",
        "comment": "month-end fix, ticket OPS-7",
        "stage": 1,
        "url": "https://dbward.example.com/requests/req-42",
        "recipients": ("carol@example.com", "dave@example.com"),
        "details": {"statement": "UPDATE ledger SET amount = 10 WHERE id = 7"},
    }
    values.update(kw)
    return ApprovalNotice(**values)


async def _until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not cond():  # noqa: ASYNC110 - counters of the hub and the receiver, no event to wait on
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# HTTP receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records requests; answers each with the next scripted status (then 200), or hangs."""

    statuses: deque[int] = field(default_factory=deque)
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
            body = await r.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(path, headers, body))
            if self.hang:
                await self._release.wait()
                return
            status = self.statuses.popleft() if self.statuses else 200
            w.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[HttpReceiver, str]]:
    recv = HttpReceiver()
    port = await recv.start()
    yield recv, f"http://127.0.0.1:{port}/hook"
    await recv.stop()


def _hub(
    *, webhooks: list[WebhookSettings] | None = None, smtp: SmtpSettings | None = None, **kw: Any
) -> NotificationHub:
    opts: dict[str, Any] = {"initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.1, "max_attempts": 5}
    opts.update(kw)
    notifier = build_notifier(NotificationSettings(webhooks=webhooks or [], smtp=smtp, **opts))
    assert isinstance(notifier, NotificationHub)
    notifier.start()
    return notifier


async def test_json_webhook_payload_and_signature(
    receiver: tuple[HttpReceiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recv, url = receiver
    monkeypatch.setenv("HOOK_SECRET", "s3cret-key")
    hub = _hub(
        webhooks=[
            WebhookSettings(
                name="itsm",
                url=url,
                format="json",
                secret="env:HOOK_SECRET",
                headers={"Authorization": "Bearer t1"},
            )
        ]
    )
    notice = _notice(actor="bob", urgent=True)
    await hub.notify(notice)
    await hub.idle()
    await hub.aclose()
    assert len(recv.requests) == 1
    req = recv.requests[0]
    assert req.path == "/hook"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["authorization"] == "Bearer t1"
    assert req.headers["x-dbward-event"] == "requested"
    body = req.json()
    assert body["schema"] == "dbward.approval-notice" and body["version"] == 1
    assert body["delivery_id"] == req.headers["x-dbward-delivery"]
    assert body["event"] == "requested" and body["request_id"] == "req-42" and body["request_type"] == "sql"
    assert body["title"] == notice.title and body["requester"] == "bob" and body["actor"] == "bob"
    assert body["connection"] == "maria" and body["comment"] == notice.comment and body["stage"] == 1
    assert body["urgent"] is True and body["url"] == notice.url
    assert body["recipients"] == ["carol@example.com", "dave@example.com"]
    assert body["details"] == notice.details
    assert body["occurred_at"] == "2025-03-01T09:30:00Z"
    # The receiver's check, as documented: HMAC-SHA256 over "<timestamp>.<raw body>".
    ts, sig = req.headers["x-dbward-timestamp"], req.headers["x-dbward-signature"]
    expected = hmac.new(b"s3cret-key", ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert sig == "sha256=" + expected
    assert verify_signature(b"s3cret-key", ts, req.body, sig)
    assert not verify_signature(b"other-key", ts, req.body, sig)
    assert not verify_signature(b"s3cret-key", ts, req.body.replace(b"bob", b"eve"), sig)
    assert hub.stats["webhook itsm"].delivered == 1


async def test_slack_webhook_payload(receiver: tuple[HttpReceiver, str]) -> None:
    recv, url = receiver
    hub = _hub(webhooks=[WebhookSettings(name="slack", url=url, format="slack")])
    await hub.notify(_notice(NoticeEvent.STAGE_APPROVED, actor="carol", urgent=True, title="a <b> & c"))
    await hub.idle()
    await hub.aclose()
    (req,) = recv.requests
    assert "x-dbward-signature" not in req.headers  # no secret configured
    body = req.json()
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("Stage 1 approved: a &lt;b&gt; &amp; c")
    assert "<https://dbward.example.com/requests/req-42|Open in dbward>" in body["text"]
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds[0] == "header" and "actions" in kinds and kinds[-1] == "context"
    assert "Stage 1 approved" in body["blocks"][0]["text"]["text"]
    section = body["blocks"][1]
    field_text = "\n".join(f["text"] for f in section["fields"])
    for expected in (
        "*Type*\nSQL execution",
        "*Requester*\nbob",
        "*Connection*\nmaria",
        "*Stage*\n1",
        "*By*\ncarol",
    ):
        assert expected in field_text
    assert "*Urgent*\n:rotating_light: yes" in field_text
    blocks_text = json.dumps(body["blocks"])
    assert "month-end fix, ticket OPS-7" in blocks_text
    (button,) = next(b for b in body["blocks"] if b["type"] == "actions")["elements"]
    assert button["type"] == "button" and button["url"] == "https://dbward.example.com/requests/req-42"


async def test_event_filter(receiver: tuple[HttpReceiver, str]) -> None:
    recv, url = receiver
    hub = _hub(webhooks=[WebhookSettings(name="done", url=url, events=["approved", "rejected"])])
    for event in (NoticeEvent.REQUESTED, NoticeEvent.APPROVED, NoticeEvent.EXECUTED, NoticeEvent.REJECTED):
        await hub.notify(_notice(event))
    await hub.idle()
    await hub.aclose()
    assert [r.json()["event"] for r in recv.requests] == ["approved", "rejected"]


async def test_retried_after_two_500s_with_the_same_delivery_id(receiver: tuple[HttpReceiver, str]) -> None:
    recv, url = receiver
    recv.statuses.extend([500, 503])
    hub = _hub(webhooks=[WebhookSettings(name="flaky", url=url)])
    await hub.notify(_notice())
    await hub.idle()
    await hub.aclose()
    assert len(recv.requests) == 3
    assert len({r.headers["x-dbward-delivery"] for r in recv.requests}) == 1
    stats = hub.stats["webhook flaky"]
    assert (stats.delivered, stats.given_up, stats.attempts) == (1, 0, 3)


async def test_400_is_not_retried_but_429_is(
    receiver: tuple[HttpReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    recv, url = receiver
    recv.statuses.extend([400, 429])
    hub = _hub(webhooks=[WebhookSettings(name="strict", url=url, secret="topsecret")])
    await hub.notify(_notice(NoticeEvent.APPROVED))
    await hub.notify(_notice(NoticeEvent.EXECUTED))
    await hub.idle()
    await hub.aclose()
    assert [r.json()["event"] for r in recv.requests] == ["approved", "executed", "executed"]
    stats = hub.stats["webhook strict"]
    assert (stats.delivered, stats.given_up) == (1, 1)
    warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "request req-42" in warning and "webhook strict" in warning and "HTTP 400" in warning
    assert "not retried" in warning
    logged = caplog.text
    assert "topsecret" not in logged and "UPDATE ledger" not in logged and url not in logged


async def test_gives_up_after_max_attempts(
    receiver: tuple[HttpReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    recv, url = receiver
    recv.statuses.extend([502] * 10)
    hub = _hub(webhooks=[WebhookSettings(name="broken", url=url)], max_attempts=3)
    await hub.notify(_notice())
    await hub.idle()
    await hub.aclose()
    assert len(recv.requests) == 3
    assert hub.stats["webhook broken"].given_up == 1
    assert any("giving up after 3 attempts" in r.getMessage() for r in caplog.records)


async def test_receiver_down_at_first_gets_the_notice_when_it_comes_up() -> None:
    port = _free_port()
    hub = _hub(webhooks=[WebhookSettings(name="late", url=f"http://127.0.0.1:{port}/in")], max_attempts=100)
    await hub.notify(_notice())
    stats = hub.stats["webhook late"]
    await _until(lambda: stats.attempts >= 2)  # connection refused, and refused again
    assert stats.delivered == 0
    recv = HttpReceiver()
    await recv.start(port)
    try:
        await hub.idle()
        await hub.aclose()
    finally:
        await recv.stop()
    assert len(recv.requests) == 1 and recv.requests[0].json()["request_id"] == "req-42"
    assert stats.delivered == 1 and stats.given_up == 0


async def test_notify_returns_while_the_receiver_hangs_and_shutdown_drains_with_a_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recv = HttpReceiver(hang=True)
    port = await recv.start()
    try:
        hub = _hub(
            webhooks=[WebhookSettings(name="slow", url=f"http://127.0.0.1:{port}/", timeout_seconds=300)],
            drain_timeout_seconds=0.2,
        )
        await hub.notify(_notice())
        await hub.notify(_notice(NoticeEvent.APPROVED))
        # Both calls came back although the receiver has not answered the first delivery.
        await _until(lambda: len(recv.requests) == 1)
        stats = hub.stats["webhook slow"]
        assert stats.delivered == 0 and stats.attempts == 1
        await hub.aclose()  # gives up the two pending notices after drain_timeout_seconds
        assert stats.dropped == 2 and stats.delivered == 0
        assert any("2 approval notifications" in r.getMessage() for r in caplog.records)
        await hub.notify(_notice(NoticeEvent.EXECUTED))  # after close: dropped, no error
    finally:
        await recv.stop()


async def test_one_channel_failing_does_not_hold_up_another(receiver: tuple[HttpReceiver, str]) -> None:
    recv, url = receiver
    down = f"http://127.0.0.1:{_free_port()}/"
    hub = _hub(
        webhooks=[WebhookSettings(name="down", url=down), WebhookSettings(name="up", url=url)],
        max_attempts=100,
        drain_timeout_seconds=0,
    )
    await hub.notify(_notice())
    up, down_stats = hub.stats["webhook up"], hub.stats["webhook down"]
    # The receiver records the request before it answers; the hub counts the delivery only
    # when the answer is read, so wait for the hub's counter, not the receiver's list.
    await _until(lambda: up.delivered == 1)
    assert len(recv.requests) == 1 and down_stats.delivered == 0 and down_stats.given_up == 0
    await hub.aclose()
    assert down_stats.dropped == 1


def test_nothing_configured_is_a_null_notifier() -> None:
    assert isinstance(build_notifier(NotificationSettings()), IdleNotifier)


# --------------------------------------------------------------------------------------------
# SMTP server


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None


@dataclass
class MailHandler:
    mails: list[Mail] = field(default_factory=list)
    #: replies to send instead of accepting, one per DATA, before accepting
    replies: deque[str] = field(default_factory=deque)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.popleft()
        assert isinstance(envelope.content, bytes)
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        self.mails.append(
            Mail(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                msg,
                server.transport is not None and server.transport.get_extra_info("ssl_object") is not None,
                login,
            )
        )
        return "250 OK"


def _authenticator(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"dbward",
        b"mail-pass-1",
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert, key = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    generate_self_signed(cert, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return cert, ctx


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[MailHandler, int]]]:
    controllers: list[Controller] = []

    def start(**kw: Any) -> tuple[MailHandler, int]:
        handler = MailHandler()
        port = _free_port()
        c = Controller(handler, hostname="127.0.0.1", port=port, **kw)
        c.start()
        controllers.append(c)
        return handler, port

    yield start
    for c in controllers:
        c.stop()


async def test_plain_smtp_message(smtp_server: Callable[..., tuple[MailHandler, int]]) -> None:
    handler, port = smtp_server()
    hub = _hub(
        smtp=SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="none",
            sender="dbward <dbward@example.com>",
            subject_prefix="[DB]",
        )
    )
    await hub.notify(
        _notice(NoticeEvent.APPROVED, actor="carol", recipients=("erin@example.com", "not-an-address"))
    )
    await hub.notify(_notice(recipients=()))  # nobody to tell: no e-mail
    await hub.idle()
    await hub.aclose()
    (mail,) = handler.mails
    assert mail.mail_from == "dbward@example.com" and mail.rcpt_tos == ["erin@example.com"]
    assert mail.tls is False and mail.login is None
    msg = mail.message
    assert (
        msg["Subject"] == "[DB] SQL execution request approved: bob asks to run an UPDATE on maria (ledger)"
    )
    assert msg["To"] == "erin@example.com" and msg["X-Dbward-Request-Id"] == "req-42"
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    plain = text.get_content()
    assert "carol gave the final approval at stage 1; the request can be used now." in plain
    assert "Requested by: bob" in plain and "Connection: maria" in plain and "Done by: carol" in plain
    assert "month-end fix, ticket OPS-7" in plain
    assert "Open the request in dbward: https://dbward.example.com/requests/req-42" in plain
    assert 'href="https://dbward.example.com/requests/req-42"' in html.get_content()


async def test_starttls_with_auth_and_a_self_signed_certificate(
    smtp_server: Callable[..., tuple[MailHandler, int]],
    certs: tuple[Path, ssl.SSLContext],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, server_ctx = certs
    handler, port = smtp_server(
        tls_context=server_ctx, require_starttls=True, authenticator=_authenticator, auth_require_tls=True
    )
    monkeypatch.setenv("SMTP_PASSWORD", "mail-pass-1")
    hub = _hub(
        smtp=SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="starttls",
            username="dbward",
            password="env:SMTP_PASSWORD",
            sender="dbward@example.com",
            ca_file=cert,
        )
    )
    await hub.notify(_notice())
    await hub.idle()
    await hub.aclose()
    (mail,) = handler.mails
    assert mail.tls is True and mail.login == "dbward"
    assert mail.rcpt_tos == ["carol@example.com", "dave@example.com"]
    assert mail.message["Subject"].startswith("[dbward] New SQL execution request: ")
    assert "mail-pass-1" not in caplog.text


async def test_wrong_password_is_given_up_without_retry(
    smtp_server: Callable[..., tuple[MailHandler, int]],
    certs: tuple[Path, ssl.SSLContext],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, server_ctx = certs
    handler, port = smtp_server(tls_context=server_ctx, authenticator=_authenticator, auth_require_tls=True)
    hub = _hub(
        smtp=SmtpSettings(
            host="127.0.0.1",
            port=port,
            username="dbward",
            password="wrong-pass",
            sender="dbward@example.com",
            ca_file=cert,
        )
    )
    await hub.notify(_notice())
    await hub.idle()
    await hub.aclose()
    assert handler.mails == []
    stats = hub.stats[f"e-mail 127.0.0.1:{port}"]
    assert (stats.attempts, stats.given_up) == (1, 1)
    assert any("smtp.username/smtp.password" in r.getMessage() for r in caplog.records)
    assert "wrong-pass" not in caplog.text


async def test_implicit_tls_and_a_temporary_failure_retried(
    smtp_server: Callable[..., tuple[MailHandler, int]], certs: tuple[Path, ssl.SSLContext]
) -> None:
    cert, server_ctx = certs
    handler, port = smtp_server(ssl_context=server_ctx)
    handler.replies.append("451 4.3.0 try again later")
    hub = _hub(
        smtp=SmtpSettings(
            host="127.0.0.1", port=port, security="tls", sender="dbward@example.com", ca_file=cert
        )
    )
    await hub.notify(_notice(NoticeEvent.REVIEW_REQUIRED, urgent=True))
    await hub.idle()
    await hub.aclose()
    (mail,) = handler.mails
    assert mail.tls is True
    assert mail.message["Subject"] == (
        "[dbward] Urgent SQL execution request needs review: bob asks to run an UPDATE on maria (ledger)"
    )
    stats = hub.stats[f"e-mail 127.0.0.1:{port}"]
    assert (stats.attempts, stats.delivered) == (2, 1)


async def test_certificate_not_trusted_is_not_delivered(
    smtp_server: Callable[..., tuple[MailHandler, int]], certs: tuple[Path, ssl.SSLContext]
) -> None:
    _, server_ctx = certs
    handler, port = smtp_server(tls_context=server_ctx, require_starttls=True)
    hub = _hub(
        smtp=SmtpSettings(host="127.0.0.1", port=port, security="starttls", sender="dbward@example.com"),
        max_attempts=2,
    )
    await hub.notify(_notice())
    await hub.idle()
    await hub.aclose()
    assert handler.mails == []
    assert hub.stats[f"e-mail 127.0.0.1:{port}"].given_up == 1


async def test_webhook_and_email_together(
    receiver: tuple[HttpReceiver, str], smtp_server: Callable[..., tuple[MailHandler, int]]
) -> None:
    recv, url = receiver
    handler, port = smtp_server()
    hub = _hub(
        webhooks=[WebhookSettings(name="chat", url=url, format="slack")],
        smtp=SmtpSettings(host="127.0.0.1", port=port, security="none", sender="dbward@example.com"),
    )
    await hub.notify(_notice(NoticeEvent.REJECTED, actor="carol", comment="not during the freeze"))
    await hub.idle()
    await hub.aclose()
    assert len(recv.requests) == 1 and len(handler.mails) == 1
    assert (
        "carol rejected the request at stage 1."
        in handler.mails[0].message.get_body(("plain",)).get_content()
    )  # type: ignore[union-attr]
