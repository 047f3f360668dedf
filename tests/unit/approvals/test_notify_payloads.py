"""Approval notification payloads (generic JSON, Slack, e-mail), signatures and settings."""

from __future__ import annotations

import hmac
import json
import os
import typing
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dbward.approvals.notice import ApprovalNotice, NoticeEvent
from dbward.approvals.notify import (
    IdleNotifier,
    NotificationHub,
    build_notifier,
    email_message,
    headline,
    json_payload,
    resolve_secret,
    sign,
    slack_payload,
    summary,
    verify_signature,
)
from dbward.config import NoticeEventName, NotificationSettings, SmtpSettings, WebhookSettings, load_settings
from dbward.errors import ConfigError


def _notice(event: NoticeEvent = NoticeEvent.REQUESTED, **kw: Any) -> ApprovalNotice:
    values: dict[str, Any] = {
        "event": event,
        "request_id": "req-1",
        "request_type": "sql",
        "title": "bob asks to run an UPDATE on maria (ledger)",
        "requester": "bob",
        "occurred_at": datetime(2025, 3, 1, 18, 30, tzinfo=timezone(timedelta(hours=9))),
        "actor": "carol",
        "connection": "maria",
        "comment": "looks right",
        "stage": 2,
        "urgent": False,
        "url": "https://dbward.example.com/requests/req-1",
        "recipients": ("bob@example.com",),
        "details": {"statement": "UPDATE t SET a = 1", "rows": 3},
    }
    values.update(kw)
    return ApprovalNotice(**values)


def test_settings_event_names_are_the_notice_events() -> None:
    assert set(typing.get_args(NoticeEventName)) == {e.value for e in NoticeEvent}


def test_json_payload_has_every_field_of_the_notice() -> None:
    notice = _notice(NoticeEvent.STAGE_APPROVED)
    body = json_payload(notice, "d1")
    for f in fields(ApprovalNotice):
        assert f.name in body, f.name
    assert body["schema"] == "dbward.approval-notice" and body["version"] == 1 and body["delivery_id"] == "d1"
    assert body["occurred_at"] == "2025-03-01T09:30:00Z"  # normalised to UTC
    assert body["recipients"] == ["bob@example.com"] and body["details"] == {
        "statement": "UPDATE t SET a = 1",
        "rows": 3,
    }
    assert body["summary"] == "carol approved stage 2; the approvers of the next stage are asked now."
    json.dumps(body)  # plain JSON types only
    naive = json_payload(_notice(occurred_at=datetime(2025, 1, 2, 3, 4)), "d2")
    assert naive["occurred_at"] == "2025-01-02T03:04:00Z"


@pytest.mark.parametrize("event", list(NoticeEvent))
def test_every_event_has_its_own_words(event: NoticeEvent) -> None:
    n = _notice(event)
    assert "updated" not in headline(n) and "changed" not in summary(n)
    assert summary(n).endswith(".")


def test_headlines_and_summaries() -> None:
    assert headline(_notice(NoticeEvent.REQUESTED, urgent=True)) == "Urgent SQL execution request"
    assert headline(_notice(NoticeEvent.REQUESTED, request_type="access")) == "New access request"
    assert headline(_notice(NoticeEvent.APPROVED, request_type="unmask")) == "Unmasking request approved"
    assert summary(_notice(NoticeEvent.REQUESTED, actor=None)) == "bob filed this request."
    assert (
        summary(_notice(NoticeEvent.REQUESTED, actor="itsm")) == "itsm filed this request on behalf of bob."
    )
    assert (
        summary(_notice(NoticeEvent.EXECUTED, actor=None)) == "The approved request was executed by dbward."
    )
    assert summary(_notice(NoticeEvent.CANCELLED, actor=None)) == "bob cancelled the request."


def test_slack_payload_escapes_and_limits() -> None:
    n = _notice(
        title="<!channel> & <http://evil|x>",
        comment="line one\nline <two>",
        details={"statement": "SELECT 1\n" + "x" * 10_000},
        urgent=True,
    )
    body = slack_payload(n)
    assert (
        "<!channel>" not in json.dumps(body)
        and "&lt;!channel&gt; &amp; &lt;http://evil|x&gt;" in body["text"]
    )
    header = body["blocks"][0]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert len(header["text"]["text"]) <= 150
    for block in body["blocks"]:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
    comment = next(b for b in body["blocks"] if "*Comment*" in b.get("text", {}).get("text", ""))
    assert comment["text"]["text"] == "*Comment*\n> line one\n> line &lt;two&gt;"


def test_slack_payload_without_url_or_optional_fields() -> None:
    n = _notice(url=None, connection=None, stage=None, actor=None, comment=None, details={})
    body = slack_payload(n)
    assert "Open in dbward" not in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    labels = [f["text"].split("\n")[0] for f in body["blocks"][1]["fields"]]
    assert labels == ["*Type*", "*Requester*", "*Urgent*"]


def test_signature() -> None:
    body = b'{"a":1}'
    sig = sign(b"k", "1700000000", body)
    assert sig == "sha256=" + hmac.new(b"k", b"1700000000." + body, "sha256").hexdigest()
    assert verify_signature(b"k", "1700000000", body, sig, now=1700000100)
    assert not verify_signature(b"k", "1700000000", body, sig, now=1700000000 + 301)  # too old: a replay
    assert not verify_signature(b"k", "1700000001", body, sig, now=1700000000)  # timestamp is signed
    assert not verify_signature(b"k", "soon", body, sig)


def test_email_message() -> None:
    n = _notice(
        NoticeEvent.REJECTED,
        title="two\nlines <script>",
        details={"statement": "UPDATE t\nSET a = 1"},
    )
    msg = email_message(
        n, sender="dbward <dbward@example.com>", subject_prefix="[x]", recipients=["a@example.com"]
    )
    assert msg["Subject"] == "[x] SQL execution request rejected: two lines <script>"
    assert msg["To"] == "a@example.com" and msg["From"] == "dbward <dbward@example.com>"
    assert msg["Message-ID"].endswith("@example.com>")
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert "carol rejected the request at stage 2." in text
    assert "  statement:\n    UPDATE t\n    SET a = 1" in text
    assert "<script>" not in html.get_content() and "&lt;script&gt;" in html.get_content()


def test_resolve_secret(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    assert resolve_secret("literal", "x") == "literal"
    assert resolve_secret("env:S", "x", {"S": "from-env"}) == "from-env"
    assert resolve_secret(f"file:{f}", "x") == "from-file"
    with pytest.raises(
        ConfigError, match=r"smtp\.password refers to the environment variable NOPE, which is not set"
    ):
        resolve_secret("env:NOPE", "smtp.password", {})
    with pytest.raises(ConfigError, match="cannot be read"):
        resolve_secret(f"file:{tmp_path / 'missing'}", "x")


async def test_build_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(build_notifier(NotificationSettings()), IdleNotifier)
    hub = build_notifier(
        NotificationSettings(
            webhooks=[WebhookSettings(name="a", url="https://hooks.example.com/x")],
            smtp=SmtpSettings(host="mail.example.com", sender="dbward@example.com"),
        )
    )
    assert isinstance(hub, NotificationHub)
    assert [c.kind for c in hub.channels] == ["webhook", "e-mail"]
    assert [c.name for c in hub.channels] == ["a", "mail.example.com:587"]
    await hub.aclose()
    monkeypatch.setenv("HOOK_SECRET_GONE", "x")  # set when the settings were validated, gone later
    cfg = WebhookSettings(name="a", url="https://hooks.example.com/x", secret="env:HOOK_SECRET_GONE")
    with pytest.raises(
        ConfigError, match=r"webhooks\.a\.secret refers to the environment variable HOOK_SECRET_GONE"
    ):
        build_notifier(NotificationSettings(webhooks=[cfg]), env={})


# --------------------------------------------------------------------------------------------
# Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("DBWARD_"):
            monkeypatch.delenv(key)


def _load(tmp_path: Path, yaml_text: str) -> NotificationSettings:
    (tmp_path / "dbward.yaml").write_text(yaml_text)
    return load_settings(data_dir=tmp_path).approvals.notifications


def test_settings_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T/B/X")
    monkeypatch.setenv("MAIL_PW", "pw")
    s = _load(
        tmp_path,
        """
approvals:
  notifications:
    max_attempts: 5
    webhooks:
      - name: slack
        url: env:SLACK_URL
        format: slack
        events: [requested, approved]
      - name: itsm
        url: https://itsm.example.com/dbward
        secret: env:MAIL_PW
        headers: {Authorization: Bearer abc}
    smtp:
      host: mail.example.com
      security: tls
      username: dbward
      password: env:MAIL_PW
      sender: dbward <dbward@example.com>
""",
    )
    assert [w.name for w in s.webhooks] == ["slack", "itsm"]
    assert s.webhooks[0].events == ["requested", "approved"] and s.webhooks[0].url == "env:SLACK_URL"
    assert s.smtp is not None and s.smtp.effective_port == 465 and s.max_attempts == 5


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "webhooks: [{name: a, url: 'env:NOT_SET_HOOK'}]",
            "approvals.notifications.webhooks.0: Value error, webhook a: url refers to the environment variable "
            "NOT_SET_HOOK, which is not set",
        ),
        ("webhooks: [{name: a, url: 'ftp://x'}]", "webhook a: url must start with https:// or http://"),
        (
            "webhooks: [{name: a, url: 'https://x', format: teams}]",
            "approvals.notifications.webhooks.0.format",
        ),
        (
            "webhooks: [{name: a, url: 'https://x', events: [approve]}]",
            "approvals.notifications.webhooks.0.events.0",
        ),
        (
            "webhooks: [{name: a, url: 'https://x', headers: {X-Dbward-Signature: x}}]",
            "webhook a: headers.X-Dbward-Signature is set by dbward itself and cannot be configured",
        ),
        (
            "webhooks: [{name: a, url: 'https://x'}, {name: a, url: 'https://y'}]",
            "webhooks: the name a is used more than once",
        ),
        ("webhooks: [{name: a, url: 'https://x', secret: ''}]", "webhook a: secret must not be empty"),
        ("smtp: {host: m, sender: nobody}", "smtp.sender 'nobody' is not an e-mail address"),
        (
            "smtp: {host: m, sender: a@b.c, password: x}",
            "smtp.username and smtp.password must be set together",
        ),
        (
            "smtp: {host: mail.example.com, sender: a@b.c, security: none, username: u, password: p}",
            "smtp.username/password need smtp.security starttls or tls",
        ),
        ("smtp: {host: m, sender: a@b.c, security: ssl}", "approvals.notifications.smtp.security"),
        ("smtp: {host: m, sender: a@b.c, port: 0}", "approvals.notifications.smtp.port"),
        ("smtp: {host: m, sendr: a@b.c}", "approvals.notifications.smtp.sendr: unknown setting"),
        ("initial_backoff_seconds: 10\nmax_backoff_seconds: 5", "max_backoff_seconds must not be less than"),
    ],
)
def test_settings_errors_name_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    body = "approvals:\n  notifications:\n" + "".join("    " + line + "\n" for line in yaml_text.splitlines())
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, body)
    assert message in str(exc.value)


def test_plain_smtp_with_a_password_is_allowed_on_loopback() -> None:
    s = SmtpSettings(host="127.0.0.1", sender="a@example.com", security="none", username="u", password="p")
    assert s.effective_port == 25
