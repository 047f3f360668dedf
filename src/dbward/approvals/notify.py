"""Delivering approval notices: webhooks (Slack-compatible or generic JSON) and e-mail over SMTP.

Counterpart of ``approvals/notice.py``: the approval service builds an :class:`ApprovalNotice`
for every step of a request and hands it to the notifier :func:`build_notifier` returns.
``notify()`` only puts the notice on a queue per channel and returns; a background task per
channel delivers it, retrying with exponential backoff up to a bounded number of attempts,
so a slow or broken receiver never delays or fails a workflow step. A delivery that is given
up is logged as a warning naming the channel and the request, never a secret or SQL text.

Payload formats, the signature scheme and the SMTP settings are documented in
docs/approval-notifications.md; keep it in step with :data:`PAYLOAD_VERSION`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import os
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import httpx
import orjson

from dbward import __version__
from dbward.approvals.notice import ApprovalNotice, NoticeEvent, Notifier, NullNotifier
from dbward.config import NotificationSettings, SmtpSettings, WebhookSettings
from dbward.errors import ConfigError

log = logging.getLogger(__name__)

#: version of the generic JSON payload (``"version"``); bumped only on incompatible changes
PAYLOAD_VERSION = 1
#: the ``"schema"`` member of the generic JSON payload
PAYLOAD_SCHEMA = "dbward.approval-notice"
SIGNATURE_HEADER = "X-Dbward-Signature"
TIMESTAMP_HEADER = "X-Dbward-Timestamp"
EVENT_HEADER = "X-Dbward-Event"
DELIVERY_HEADER = "X-Dbward-Delivery"

_TYPE_LABELS = {"access": "access", "sql": "SQL execution", "unmask": "unmasking", "export": "export"}
#: longest text of one ``details`` value shown in Slack messages and e-mails (the JSON has it all)
_DETAIL_MAX = 2000


# --------------------------------------------------------------------------------------------
# What the notice says, in words


def _type_label(notice: ApprovalNotice) -> str:
    return _TYPE_LABELS.get(notice.request_type, notice.request_type)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def headline(notice: ApprovalNotice) -> str:
    """A short heading: the e-mail subject and the Slack header."""
    kind = _type_label(notice)
    match notice.event:
        case NoticeEvent.REQUESTED:
            return f"{'Urgent' if notice.urgent else 'New'} {kind} request"
        case NoticeEvent.STAGE_APPROVED:
            return f"Stage {notice.stage} approved" if notice.stage else "A stage was approved"
        case NoticeEvent.APPROVED:
            return f"{_cap(kind)} request approved"
        case NoticeEvent.REJECTED:
            return f"{_cap(kind)} request rejected"
        case NoticeEvent.CANCELLED:
            return f"{_cap(kind)} request cancelled"
        case NoticeEvent.EXPIRED:
            return f"{_cap(kind)} request expired"
        case NoticeEvent.EXECUTED:
            return f"Approved {kind} request executed"
        case NoticeEvent.REVIEW_REQUIRED:
            return f"Urgent {kind} request needs review"
        case _:
            return f"{_cap(kind)} request updated"


def summary(notice: ApprovalNotice) -> str:
    """One sentence saying what happened and who did it."""
    who = notice.actor or "dbward"
    stage = f" stage {notice.stage}" if notice.stage else ""
    match notice.event:
        case NoticeEvent.REQUESTED:
            if notice.actor and notice.actor != notice.requester:
                return f"{notice.actor} filed this request on behalf of {notice.requester}."
            return f"{notice.requester} filed this request."
        case NoticeEvent.STAGE_APPROVED:
            return f"{who} approved{stage or ' a stage'}; the approvers of the next stage are asked now."
        case NoticeEvent.APPROVED:
            return f"{who} gave the final approval{(' at' + stage) if stage else ''}; the request can be used now."
        case NoticeEvent.REJECTED:
            return f"{who} rejected the request{(' at' + stage) if stage else ''}."
        case NoticeEvent.CANCELLED:
            return f"{notice.actor or notice.requester} cancelled the request."
        case NoticeEvent.EXPIRED:
            return "The request expired."
        case NoticeEvent.EXECUTED:
            return f"The approved request was executed by {who}."
        case NoticeEvent.REVIEW_REQUIRED:
            return f"{notice.requester} used the urgent path: the request ran before approval and now needs review."
        case _:
            return f"The request changed ({notice.event})."


def _iso(at: datetime) -> str:
    if at.tzinfo is None:  # the service works in UTC; a naive value is taken as UTC
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _detail_text(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) > _DETAIL_MAX:
        text = text[:_DETAIL_MAX] + " …(cut; the full text is on the request's page)"
    return text


# --------------------------------------------------------------------------------------------
# Payloads


def json_payload(notice: ApprovalNotice, delivery_id: str) -> dict[str, Any]:
    """The generic JSON payload, version :data:`PAYLOAD_VERSION` (every field of the notice)."""
    return {
        "schema": PAYLOAD_SCHEMA,
        "version": PAYLOAD_VERSION,
        "delivery_id": delivery_id,
        "event": notice.event.value,
        "headline": headline(notice),
        "summary": summary(notice),
        "request_id": notice.request_id,
        "request_type": notice.request_type,
        "title": notice.title,
        "requester": notice.requester,
        "actor": notice.actor,
        "connection": notice.connection,
        "comment": notice.comment,
        "stage": notice.stage,
        "urgent": notice.urgent,
        "url": notice.url,
        "recipients": list(notice.recipients),
        "details": notice.details,
        "occurred_at": _iso(notice.occurred_at),
    }


def _mrkdwn(text: str) -> str:
    """Slack's escaping for text in mrkdwn (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(notice: ApprovalNotice) -> dict[str, Any]:
    """A Slack incoming-webhook message (``text`` plus Block Kit ``blocks``).

    Mattermost and Microsoft Teams' Slack-compatible webhooks read the same object; clients that
    ignore ``blocks`` show ``text``, which therefore carries the heading, title and link itself.
    """
    head = headline(notice)
    text = f"{head}: {_mrkdwn(notice.title)}"
    if notice.url:
        text += f" <{notice.url}|Open in dbward>"
    fields_: list[dict[str, str]] = [
        {"type": "mrkdwn", "text": f"*Type*\n{_mrkdwn(_type_label(notice))}"},
        {"type": "mrkdwn", "text": f"*Requester*\n{_mrkdwn(notice.requester)}"},
    ]
    if notice.connection:
        fields_.append({"type": "mrkdwn", "text": f"*Connection*\n{_mrkdwn(notice.connection)}"})
    if notice.stage is not None:
        fields_.append({"type": "mrkdwn", "text": f"*Stage*\n{notice.stage}"})
    if notice.actor:
        fields_.append({"type": "mrkdwn", "text": f"*By*\n{_mrkdwn(notice.actor)}"})
    fields_.append(
        {
            "type": "mrkdwn",
            "text": "*Urgent*\n:rotating_light: yes, runs first and is reviewed after"
            if notice.urgent
            else "*Urgent*\nno",
        }
    )
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut((":rotating_light: " if notice.urgent else "") + head, 150),
                "emoji": True,
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(f"*{_mrkdwn(notice.title)}*\n{_mrkdwn(summary(notice))}", 3000),
            },
            "fields": fields_,
        },
    ]
    if notice.comment:
        quoted = "\n".join("> " + _mrkdwn(line) for line in notice.comment.splitlines() or [""])
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*Comment*\n{quoted}", 3000)}}
        )
    if any(v is not None for v in notice.details.values()):
        lines = []
        for key, value in notice.details.items():
            if value is None:
                continue
            shown = _detail_text(value)
            if "\n" in shown or len(shown) > 80 or key in ("sql", "statement"):
                lines.append(f"*{_mrkdwn(str(key))}*\n```{_mrkdwn(shown)}```")
            else:
                lines.append(f"*{_mrkdwn(str(key))}*: {_mrkdwn(shown)}")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut("\n".join(lines), 3000)}})
    if notice.url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "dbward_open_request",
                        "text": {"type": "plain_text", "text": "Open in dbward"},
                        "url": notice.url,
                        **({"style": "danger"} if notice.urgent else {"style": "primary"}),
                    }
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"dbward · request {_mrkdwn(notice.request_id)} · {_iso(notice.occurred_at)}",
                }
            ],
        }
    )
    return {"text": text, "blocks": blocks}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Dbward-Signature`` value: ``sha256=`` + HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """What a receiver does (see docs/approval-notifications.md): a constant-time comparison and
    a timestamp no older (or newer) than ``tolerance_seconds``, which stops replays."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    if age > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def _clean_recipients(recipients: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for raw in recipients:
        addr = raw.strip()
        if "@" in parseaddr(addr)[1] and not any(c in addr for c in "\r\n,"):
            seen.setdefault(addr, None)
    return list(seen)


def email_message(
    notice: ApprovalNotice, *, sender: str, subject_prefix: str, recipients: Sequence[str]
) -> EmailMessage:
    """The e-mail for a notice: plain text with an HTML alternative."""
    head = headline(notice)
    title_line = " ".join(notice.title.split())  # no line breaks in a header
    subject = f"{subject_prefix} {head}: {title_line}" if subject_prefix else f"{head}: {title_line}"
    facts: list[tuple[str, str]] = [
        ("Request", notice.title),
        ("Request ID", notice.request_id),
        ("Type", _type_label(notice)),
        ("Requested by", notice.requester),
    ]
    if notice.connection:
        facts.append(("Connection", notice.connection))
    if notice.stage is not None:
        facts.append(("Stage", str(notice.stage)))
    if notice.actor:
        facts.append(("Done by", notice.actor))
    if notice.urgent:
        facts.append(("Urgent", "yes: it runs first and is reviewed after"))
    facts.append(("When", _iso(notice.occurred_at)))
    details = [(str(k), _detail_text(v)) for k, v in notice.details.items() if v is not None]

    text = [summary(notice), ""]
    text += [f"{label}: {value}" for label, value in facts]
    if notice.comment:
        text += ["", "Comment:"] + ["  " + line for line in notice.comment.splitlines()]
    if details:
        text += ["", "Details:"]
        for key, value in details:
            if "\n" in value:
                text += [f"  {key}:"] + ["    " + line for line in value.splitlines()]
            else:
                text.append(f"  {key}: {value}")
    if notice.url:
        text += ["", f"Open the request in dbward: {notice.url}"]
    text += ["", "-- ", "Sent by dbward because you take part in this request."]

    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in facts)
    parts = [f"<h2>{e(head)}</h2>", f"<p>{e(summary(notice))}</p>", f"<table>{rows}</table>"]
    if notice.comment:
        parts.append(f"<h3>Comment</h3><blockquote>{e(notice.comment).replace(chr(10), '<br>')}</blockquote>")
    if details:
        items = "".join(f"<dt>{e(k)}</dt><dd><pre>{e(v)}</pre></dd>" for k, v in details)
        parts.append(f"<h3>Details</h3><dl>{items}</dl>")
    if notice.url:
        parts.append(f'<p><a href="{e(notice.url)}">Open the request in dbward</a></p>')
    body_html = "<!doctype html><html><body>" + "".join(parts) + "</body></html>"

    msg = EmailMessage()
    msg["Subject"] = _cut(subject, 200)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    domain = parseaddr(sender)[1].rpartition("@")[2] or None
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    msg["X-Dbward-Request-Id"] = notice.request_id
    msg["X-Dbward-Event"] = notice.event.value
    msg.set_content("\n".join(text) + "\n")
    msg.add_alternative(body_html, subtype="html")
    return msg


# --------------------------------------------------------------------------------------------
# Channels


class DeliveryError(Exception):
    """One failed delivery attempt; ``reason`` is a sentence safe to log (no secrets, no SQL)."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    kind: str  # "webhook" | "e-mail"
    name: str

    def wants(self, notice: ApprovalNotice) -> bool: ...

    async def deliver(self, notice: ApprovalNotice, delivery_id: str) -> None:
        """Deliver once, or raise :class:`DeliveryError`."""
        ...

    async def aclose(self) -> None: ...


def resolve_secret(ref: str, setting: str, env: Mapping[str, str] | None = None) -> str:
    """The value of ``env:NAME``, ``file:PATH`` or a literal, or a ConfigError naming ``setting``."""
    env = os.environ if env is None else env
    if ref.startswith("env:"):
        name = ref[4:]
        if name not in env:
            raise ConfigError(f"{setting} refers to the environment variable {name}, which is not set")
        return env[name]
    if ref.startswith("file:"):
        path = Path(ref[5:]).expanduser()
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{setting} refers to the file {path}, which cannot be read ({exc.strerror})"
            ) from exc
    return ref


def _tls_context(ca_file: Path | None, verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the usual backoff applies


class WebhookChannel:
    kind = "webhook"

    def __init__(self, cfg: WebhookSettings, env: Mapping[str, str] | None = None) -> None:
        where = f"approvals.notifications.webhooks.{cfg.name}"
        self.name = cfg.name
        self.format = cfg.format
        self.events = frozenset(cfg.events)
        self._url = resolve_secret(cfg.url, f"{where}.url", env)
        if not self._url.startswith(("https://", "http://")):
            raise ConfigError(f"{where}.url must start with https:// or http://")
        self._headers = {k: resolve_secret(v, f"{where}.headers.{k}", env) for k, v in cfg.headers.items()}
        self._secret = resolve_secret(cfg.secret, f"{where}.secret", env).encode() if cfg.secret else None
        self._timeout = cfg.timeout_seconds
        self._client = httpx.AsyncClient(
            timeout=cfg.timeout_seconds,
            verify=_tls_context(cfg.ca_file, cfg.tls_verify),
            follow_redirects=False,
        )

    def wants(self, notice: ApprovalNotice) -> bool:
        return not self.events or notice.event.value in self.events

    def body(self, notice: ApprovalNotice, delivery_id: str) -> bytes:
        payload = slack_payload(notice) if self.format == "slack" else json_payload(notice, delivery_id)
        return orjson.dumps(payload, default=str)

    async def deliver(self, notice: ApprovalNotice, delivery_id: str) -> None:
        body = self.body(notice, delivery_id)
        timestamp = str(int(time.time()))  # signed afresh on every attempt, so retries stay fresh
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "User-Agent": f"dbward/{__version__}",
            EVENT_HEADER: notice.event.value,
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(
                f"the receiver did not answer within timeout_seconds={self._timeout:g}", retryable=True
            ) from None
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"the connection to the receiver failed ({type(exc).__name__})", retryable=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status >= 500 or status in (408, 429):
            raise DeliveryError(
                f"the receiver answered HTTP {status}", retryable=True, retry_after=_retry_after(response)
            )
        if 300 <= status < 400:
            raise DeliveryError(
                f"the receiver answered HTTP {status} (a redirect, which is not followed: set the final URL)",
                retryable=False,
            )
        raise DeliveryError(f"the receiver refused the notice with HTTP {status}", retryable=False)

    async def aclose(self) -> None:
        await self._client.aclose()


class EmailChannel:
    kind = "e-mail"

    def __init__(self, cfg: SmtpSettings, env: Mapping[str, str] | None = None) -> None:
        self.name = f"{cfg.host}:{cfg.effective_port}"
        self.cfg = cfg
        self.events = frozenset(cfg.events)
        self._password = (
            resolve_secret(cfg.password, "approvals.notifications.smtp.password", env)
            if cfg.password is not None
            else None
        )
        self._tls = _tls_context(cfg.ca_file, cfg.tls_verify) if cfg.security in ("starttls", "tls") else None

    def wants(self, notice: ApprovalNotice) -> bool:
        return bool(notice.recipients) and (not self.events or notice.event.value in self.events)

    async def deliver(self, notice: ApprovalNotice, delivery_id: str) -> None:
        recipients = _clean_recipients(notice.recipients)
        if not recipients:
            raise DeliveryError("the notice names no valid e-mail address", retryable=False)
        cfg = self.cfg
        msg = email_message(
            notice, sender=cfg.sender, subject_prefix=cfg.subject_prefix, recipients=recipients
        )
        msg["X-Dbward-Delivery"] = delivery_id
        try:
            refused, _ = await aiosmtplib.send(
                msg,
                hostname=cfg.host,
                port=cfg.effective_port,
                username=cfg.username,
                password=self._password,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",
                tls_context=self._tls,
                timeout=cfg.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused:
            raise DeliveryError("the SMTP server refused every recipient", retryable=False) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"the SMTP server refused smtp.username/smtp.password (reply {exc.code})", retryable=False
            ) from None
        except aiosmtplib.SMTPNotSupported:
            raise DeliveryError(
                f"the SMTP server does not support what smtp.security={cfg.security} needs (STARTTLS or AUTH)",
                retryable=False,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"the SMTP server answered {exc.code}", retryable=exc.code < 500) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise DeliveryError(
                f"the SMTP conversation failed ({type(exc).__name__})", retryable=True
            ) from None
        if refused:
            log.warning(
                "approval e-mail for request %s: the SMTP server %s refused %d of %d recipients",
                notice.request_id,
                self.name,
                len(refused),
                len(recipients),
            )

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------------------------
# Queues and retries


@dataclass(frozen=True)
class _Item:
    notice: ApprovalNotice
    delivery_id: str


@dataclass
class ChannelStats:
    delivered: int = 0
    given_up: int = 0  # failed for good (permanent error or attempts used up)
    dropped: int = 0  # the queue was full, or dbward was shutting down
    attempts: int = 0


class _Sender:
    """One channel's queue and the task that empties it, in order, with retries."""

    def __init__(
        self,
        channel: Channel,
        *,
        queue_size: int,
        max_attempts: int,
        initial_backoff: float,
        max_backoff: float,
    ) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(queue_size)
        self.stats = ChannelStats()
        self.pending = 0  # queued or being delivered
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.task: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"{self.channel.kind} {self.channel.name}"

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(
                self._run(), name=f"dbward-notify-{self.channel.kind}-{self.channel.name}"
            )

    def offer(self, item: _Item) -> bool:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        self.pending += 1
        return True

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self._deliver(item)
            finally:
                self.pending -= 1
                self.queue.task_done()

    async def _deliver(self, item: _Item) -> None:
        notice = item.notice
        delay = self.initial_backoff
        attempt = 0
        while True:
            attempt += 1
            self.stats.attempts += 1
            try:
                await self.channel.deliver(notice, item.delivery_id)
            except DeliveryError as exc:
                err = exc
            except Exception as exc:  # a bug must not stop the channel; the type is safe to log
                log.debug("approval notification to %s raised", self.label, exc_info=True)
                err = DeliveryError(f"unexpected error ({type(exc).__name__})", retryable=True)
            else:
                self.stats.delivered += 1
                return
            if not err.retryable or attempt >= self.max_attempts:
                self.stats.given_up += 1
                log.warning(
                    "approval notification %s for request %s was not delivered to %s: %s; %s",
                    notice.event.value,
                    notice.request_id,
                    self.label,
                    err.reason,
                    f"giving up after {attempt} attempts (approvals.notifications.max_attempts)"
                    if err.retryable
                    else "this is not retried",
                )
                return
            wait = min(self.max_backoff, max(delay, err.retry_after or 0.0))
            log.info(
                "approval notification %s for request %s to %s failed (%s); attempt %d of %d, retrying in %.1fs",
                notice.event.value,
                notice.request_id,
                self.label,
                err.reason,
                attempt,
                self.max_attempts,
                wait,
            )
            await asyncio.sleep(wait)
            delay = min(self.max_backoff, delay * 2)


class NotificationHub:
    """The notifier with channels: fans every notice out to each channel that wants it.

    ``notify()`` never blocks on a receiver and never raises. ``start()`` starts the sender
    tasks (``notify()`` starts them too if needed); ``aclose()`` stops taking notices, lets the
    queued ones be delivered for up to ``drain_timeout`` seconds, then gives up the rest.
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        max_attempts: int = 8,
        initial_backoff: float = 1.0,
        max_backoff: float = 300.0,
        queue_size: int = 1000,
        drain_timeout: float = 10.0,
    ) -> None:
        self._senders = [
            _Sender(
                c,
                queue_size=queue_size,
                max_attempts=max_attempts,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
            )
            for c in channels
        ]
        self.drain_timeout = drain_timeout
        self._closed = False

    @property
    def channels(self) -> list[Channel]:
        return [s.channel for s in self._senders]

    @property
    def stats(self) -> dict[str, ChannelStats]:
        """Counters per channel, keyed ``"<kind> <name>"`` (e.g. ``"webhook slack"``)."""
        return {s.label: s.stats for s in self._senders}

    def start(self) -> None:
        if not self._closed:
            for s in self._senders:
                s.start()

    async def notify(self, notice: ApprovalNotice) -> None:
        try:
            if self._closed:
                log.warning(
                    "approval notification %s for request %s was dropped: dbward is shutting down",
                    notice.event.value,
                    notice.request_id,
                )
                return
            self.start()
            item = _Item(notice, uuid.uuid4().hex)
            for s in self._senders:
                if not s.channel.wants(notice):
                    continue
                if not s.offer(item):
                    s.stats.dropped += 1
                    log.warning(
                        "approval notification %s for request %s was dropped for %s: %d notices are "
                        "already waiting (approvals.notifications.queue_size)",
                        notice.event.value,
                        notice.request_id,
                        s.label,
                        s.queue.maxsize,
                    )
        except Exception:  # the contract: notify never fails the workflow step
            log.exception("approval notification for request %s could not be queued", notice.request_id)

    async def idle(self) -> None:
        """Wait until every queued notice has been delivered or given up."""
        await asyncio.gather(*(s.queue.join() for s in self._senders))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        running = [s for s in self._senders if s.task is not None]
        if running:
            joins = [asyncio.ensure_future(s.queue.join()) for s in running]
            _, not_done = await asyncio.wait(joins, timeout=self.drain_timeout)
            for j in not_done:
                j.cancel()
        lost = {s.label: s.pending for s in self._senders}  # before cancelling the one in flight
        for s in running:
            assert s.task is not None
            s.task.cancel()
        if running:
            await asyncio.gather(*(s.task for s in running if s.task), *joins, return_exceptions=True)
        for s in self._senders:
            if lost[s.label]:
                s.stats.dropped += lost[s.label]
                log.warning(
                    "%d approval notifications for %s were not delivered before shutdown "
                    "(approvals.notifications.drain_timeout_seconds=%g)",
                    lost[s.label],
                    s.label,
                    self.drain_timeout,
                )
        for c in self.channels:
            try:
                await c.aclose()
            except Exception:
                log.warning("closing the %s %s failed", c.kind, c.name, exc_info=True)


class ManagedNotifier(Notifier, Protocol):
    """A notifier with a life cycle, as node.py runs it."""

    def start(self) -> None: ...

    async def aclose(self) -> None: ...


class IdleNotifier(NullNotifier):
    """No channel is configured: notices go nowhere (a NullNotifier with start/aclose)."""

    def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def build_notifier(
    settings: NotificationSettings, *, env: Mapping[str, str] | None = None
) -> ManagedNotifier:
    """The notifier for ``approvals.notifications``; secrets (``env:``/``file:``) are read here.

    Raises ConfigError naming the setting when a secret cannot be read.
    """
    channels: list[Channel] = [WebhookChannel(w, env) for w in settings.webhooks]
    if settings.smtp is not None:
        channels.append(EmailChannel(settings.smtp, env))
    if not channels:
        return IdleNotifier()
    return NotificationHub(
        channels,
        max_attempts=settings.max_attempts,
        initial_backoff=settings.initial_backoff_seconds,
        max_backoff=settings.max_backoff_seconds,
        queue_size=settings.queue_size,
        drain_timeout=settings.drain_timeout_seconds,
    )
