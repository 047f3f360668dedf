"""Settings: one validated object, read from a YAML file and DBWARD_* environment variables.

Validated once at start (unknown keys and bad values are errors that name the key), never
re-read later. Everything else receives the values it needs explicitly.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dbward.errors import ConfigError

DEFAULT_DATA_DIR = Path(os.environ.get("DBWARD_DATA_DIR", ".dbward"))
CONFIG_FILE_NAME = "dbward.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProxySettings(_Strict):
    listen_host: str = "127.0.0.1"
    # Shared ports that route by database name "connection/db" (0 disables).
    mysql_port: int = Field(default=13306, ge=0, le=65535)
    postgres_port: int = Field(default=15432, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Peers allowed to send a PROXY protocol header (CIDR ranges).
    trusted_proxies: list[str] = Field(default_factory=list)
    idle_timeout_seconds: float = Field(default=8 * 3600, gt=0)
    connect_timeout_seconds: float = Field(default=10, gt=0)
    allow_load_data_local: bool = False
    # COPY ... TO/FROM PROGRAM and server-side files.
    allow_copy_program: bool = False
    # Masking: how often a target's catalog (tables, columns, views) is read again while it is
    # in use; it is also read again right after DDL run through dbward.
    catalog_refresh_seconds: float = Field(default=60, gt=0)
    # Processes that accept and relay client sessions: 1 runs everything in one process; more
    # start worker processes that share the node's listeners, so the node uses that many CPU
    # cores; 0 means one per CPU core. See docs/performance.md.
    workers: int = Field(default=1, ge=0, le=64)

    def worker_count(self) -> int:
        """The number of proxy processes ``workers`` asks for (0: one per CPU core)."""
        if self.workers:
            return self.workers
        import os

        return max(
            1,
            min(
                64, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            ),
        )


class ApiSettings(_Strict):
    listen_host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    # Console sessions: signed out after this long without a request, and after max hours in any case.
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    session_max_hours: int = Field(default=12, ge=1, le=24 * 30)
    # "auto": Secure cookies when the console is reached over HTTPS (or public_url is https).
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    # Lockout: this many failed sign-ins within lockout_window_minutes lock the user name
    # for lockout_minutes (the failures are audited as auth.signin_failed).
    lockout_failures: int = Field(default=5, ge=1, le=100)
    lockout_window_minutes: int = Field(default=15, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    # Password policy for console, API and proxy passwords set by people.
    password_min_length: int = Field(default=12, ge=8, le=128)
    password_min_classes: int = Field(default=3, ge=1, le=4)  # lower, upper, digit, other
    # Two-factor sign-in (TOTP): off, for administrators, or for everyone; plus these groups.
    totp_required: Literal["off", "admins", "everyone"] = "admins"
    totp_required_groups: list[str] = Field(default_factory=list)
    # Console and API client address ranges (CIDR); empty: any address.
    allowed_ips: list[str] = Field(default_factory=list)
    admin_allowed_ips: list[str] = Field(default_factory=list)
    # Peers (CIDR) whose X-Forwarded-For header names the real client (an HTTP load balancer).
    trusted_proxies: list[str] = Field(default_factory=list)
    # SQL editor: rows kept per result (the grid pages through them) and CSV export limit;
    # a connection's options.export_max_rows overrides the export limit for that connection.
    editor_max_rows: int = Field(default=5000, ge=1, le=1_000_000)
    export_max_rows: int = Field(default=10000, ge=1, le=10_000_000)
    editor_statement_timeout_seconds: float = Field(default=300, gt=0)
    # Failed API token authentication: token_failures failures from one client address within
    # token_failure_window_seconds refuse every API token from that address (429) for the rest
    # of the window. Kept per node in memory for at most token_failure_max_clients addresses.
    token_failures: int = Field(default=20, ge=1, le=100_000)
    token_failure_window_seconds: float = Field(default=60, gt=0, le=24 * 3600)
    token_failure_max_clients: int = Field(default=10_000, ge=10, le=10_000_000)

    @field_validator("allowed_ips", "admin_allowed_ips", "trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an IP address or CIDR range") from None
        return v


class ForwarderSettings(_Strict):
    """One audit forwarder. ``kind`` decides which of the other keys apply."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["syslog", "splunk_hec", "webhook", "jsonl"]
    enabled: bool = True
    batch_size: int = Field(default=500, ge=1, le=10000)
    # syslog
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "tcp"
    format: Literal["rfc5424", "rfc3164"] = "rfc5424"
    framing: Literal["octet-counting", "lf"] = "octet-counting"
    facility: int = Field(default=13, ge=0, le=23)  # 13: log audit
    app_name: str = "dbward"
    sd_id: str = "dbward@32473"
    ca_file: Path | None = None
    tls_verify: bool = True
    # splunk_hec / webhook
    url: str | None = None
    token: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # jsonl
    path: Path | None = None
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    backups: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> ForwarderSettings:
        if self.kind == "syslog" and (not self.host or not self.port):
            raise ValueError(f"forwarder {self.name}: a syslog forwarder needs host and port")
        if self.kind in ("splunk_hec", "webhook") and not self.url:
            raise ValueError(f"forwarder {self.name}: a {self.kind} forwarder needs url")
        if self.kind == "splunk_hec" and not self.token:
            raise ValueError(f"forwarder {self.name}: a splunk_hec forwarder needs token (the HEC token)")
        if self.kind == "jsonl" and not self.path:
            raise ValueError(f"forwarder {self.name}: a jsonl forwarder needs path")
        return self


class AuditSettings(_Strict):
    journal_fsync: bool = True
    # "write": each record reaches the OS before its statement is forwarded (it survives a
    # crash or SIGKILL of dbward) and is fsynced with every record of the next few ms
    # (fsync_interval_ms). "fsync": each statement waits until its record is on disk.
    durability: Literal["write", "fsync"] = "write"
    fsync_interval_ms: float = Field(default=5.0, gt=0, le=1000)
    # Fail closed: when the journal cannot be written, statements are refused.
    fail_closed: bool = True
    # Ed25519 key that signs checkpoints; default <data_dir>/audit-signing-key.pem
    signing_key_file: Path | None = None
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_seconds: float = Field(default=10.0, gt=0)
    # Kept for five years by default: Korea's electronic financial supervision regulation.
    retention_days: int = Field(default=5 * 365, ge=1)
    # Copy every event into the metadata store (search, export, API).
    store_events: bool = True
    # Where the store copy and the forwarders run: "process", a child process of the node
    # (their CPU does not compete with the proxy's event loop for the GIL), or "inline", in
    # the node's own event loop (one-core machines, tests).
    forwarding: Literal["process", "inline"] = "process"
    forwarders: list[ForwarderSettings] = Field(default_factory=list)


#: the steps of a request a notification can be about (``approvals.notice.NoticeEvent``'s values)
NoticeEventName = Literal[
    "requested",
    "stage_approved",
    "approved",
    "rejected",
    "cancelled",
    "expired",
    "executed",
    "review_required",
]


def _secret_ref_problem(ref: str) -> str | None:
    """Why an ``env:NAME`` / ``file:PATH`` reference cannot be read now, or None (literals are fine).

    ``approvals/notify.py`` reads the value when it builds the notifier; this only makes a
    missing variable or file an error at start, naming the setting.
    """
    if ref.startswith("env:"):
        name = ref[4:]
        if not name:
            return "env: must be followed by the name of an environment variable"
        if name not in os.environ:
            return f"refers to the environment variable {name}, which is not set"
    elif ref.startswith("file:"):
        path = Path(ref[5:]).expanduser()
        if not path.is_file() or not os.access(path, os.R_OK):
            return f"refers to the file {path}, which does not exist or cannot be read"
    return None


class WebhookSettings(_Strict):
    """One approval-notification webhook (Slack-compatible or generic JSON)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # names the webhook in logs
    # https://... ; may be env:NAME or file:PATH (a Slack webhook URL is itself a secret)
    url: str
    format: Literal["slack", "json"] = "json"
    # Only these events are sent; empty: every event.
    events: list[NoticeEventName] = Field(default_factory=list)
    # Extra request headers (e.g. Authorization); a value may be env:NAME or file:PATH.
    headers: dict[str, str] = Field(default_factory=dict)
    # HMAC-SHA256 key for the X-Dbward-Signature header; env:NAME or file:PATH (or the key itself).
    secret: str | None = None
    timeout_seconds: float = Field(default=10, gt=0, le=300)
    tls_verify: bool = True
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        where = f"webhook {self.name}"
        problem = _secret_ref_problem(self.url)
        if problem:
            raise ValueError(f"{where}: url {problem}")
        if not self.url.startswith(("env:", "file:")) and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"{where}: url must start with https:// or http://")
        for header, value in self.headers.items():
            low = header.lower()
            if low.startswith("x-dbward-") or low in {"content-type", "content-length", "host"}:
                raise ValueError(
                    f"{where}: headers.{header} is set by dbward itself and cannot be configured"
                )
            problem = _secret_ref_problem(value)
            if problem:
                raise ValueError(f"{where}: headers.{header} {problem}")
        if self.secret is not None:
            problem = _secret_ref_problem(self.secret) if self.secret else "must not be empty"
            if problem:
                raise ValueError(f"{where}: secret {problem}")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"{where}: ca_file {self.ca_file} does not exist")
        return self


class SmtpSettings(_Strict):
    """The SMTP server approval e-mails go through."""

    host: str = Field(min_length=1)
    # Default: 25 for security none, 587 for starttls, 465 for tls.
    port: int | None = Field(default=None, ge=1, le=65535)
    # none: plain SMTP; starttls: upgrade with STARTTLS (required); tls: TLS from the start (SMTPS).
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    # env:NAME or file:PATH (or, discouraged, the password itself)
    password: str | None = None
    # The From address, e.g. "dbward <dbward@example.com>".
    sender: str
    subject_prefix: str = "[dbward]"
    # Only these events are mailed; empty: every event (a notice without recipients is never mailed).
    events: list[NoticeEventName] = Field(default_factory=list)
    timeout_seconds: float = Field(default=30, gt=0, le=300)
    tls_verify: bool = True
    ca_file: Path | None = None

    @property
    def effective_port(self) -> int:
        return self.port or {"none": 25, "starttls": 587, "tls": 465}[self.security]

    @model_validator(mode="after")
    def _check(self) -> SmtpSettings:
        from email.utils import parseaddr

        if "@" not in parseaddr(self.sender)[1]:
            raise ValueError(f"smtp.sender {self.sender!r} is not an e-mail address")
        if (self.username is None) != (self.password is None):
            raise ValueError("smtp.username and smtp.password must be set together")
        if self.password is not None:
            problem = _secret_ref_problem(self.password)
            if problem:
                raise ValueError(f"smtp.password {problem}")
            if self.security == "none" and self.host not in {"localhost", "127.0.0.1", "::1"}:
                raise ValueError(
                    "smtp.username/password need smtp.security starttls or tls, so that the password "
                    "does not cross the network in clear text"
                )
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"smtp.ca_file {self.ca_file} does not exist")
        return self


class NotificationSettings(_Strict):
    """Where approval notifications go (webhooks, e-mail). Owned by ``approvals/notify.py``."""

    webhooks: list[WebhookSettings] = Field(default_factory=list)
    smtp: SmtpSettings | None = None
    # Delivery: each channel retries a failed delivery this many times in all, waiting
    # initial_backoff_seconds, then twice as long each time up to max_backoff_seconds.
    max_attempts: int = Field(default=8, ge=1, le=1000)
    initial_backoff_seconds: float = Field(default=1.0, gt=0)
    max_backoff_seconds: float = Field(default=300.0, gt=0)
    # Notices waiting per channel; beyond it new notices are dropped with a warning.
    queue_size: int = Field(default=1000, ge=1)
    # On shutdown, pending deliveries get this long before they are given up.
    drain_timeout_seconds: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> NotificationSettings:
        names = [w.name for w in self.webhooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"webhooks: the name {dupes[0]} is used more than once")
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must not be less than initial_backoff_seconds")
        return self


class ApprovalSettings(_Strict):
    """Approval workflows (``approvals/``): request lifetimes, execution windows, notifications."""

    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    # A pending request nobody decides within this many hours expires.
    request_lifetime_hours: float = Field(default=72, gt=0, le=24 * 90)
    # An approved SQL request can be run within this many hours after its approval (unless
    # the request asks for a shorter window); then it expires unused.
    sql_window_hours: float = Field(default=24, gt=0, le=24 * 90)
    # How many times one approved SQL request may run at most (a request asks 1 by default).
    max_uses: int = Field(default=10, ge=1, le=10_000)
    # Access, unmask and export requests: the longest period a request may ask for.
    max_period_hours: float = Field(default=24 * 30, gt=0, le=24 * 365)
    default_period_hours: float = Field(default=8, gt=0, le=24 * 365)
    # Whether any line may offer the urgent path (run first, review after); each line also
    # has to allow it (allow_urgent).
    urgent_allowed: bool = True
    # When no approval line serves a request: with fallback_approvers (subjects such as
    # "group:dba") a one-stage line of them ("any") serves it; without, filing is refused
    # with a message that names the approval_lines section.
    fallback_approvers: list[str] = Field(default_factory=list)
    # How often each node looks for requests to expire.
    expiry_interval_seconds: float = Field(default=30, gt=0, le=3600)
    # How often each node looks for scheduled SQL requests that are due, and for executions
    # left behind by a node that is gone (approvals/executor.py).
    executor_interval_seconds: float = Field(default=5, gt=0, le=3600)
    # A node running an approved statement renews its claim on the request every quarter of
    # this; a claim not renewed for this long belongs to a node that is gone, and another
    # node (or this one, restarted) finishes it: it records the outcome, fails it as
    # "outcome unknown", or runs it if it never reached the gate. Never run twice.
    execution_lease_seconds: float = Field(default=60, ge=1, le=24 * 3600)


#: the values read from the settings file by :func:`load_settings`, for :class:`_FileSource`
_file_values: ContextVar[dict[str, Any] | None] = ContextVar("dbward_settings_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The settings file as a source below the environment, so DBWARD_* variables override it."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ hands over the whole file at once

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get() or {})


class Settings(BaseSettings):
    """Everything dbward reads at start. File: ``<data_dir>/dbward.yaml``; env: ``DBWARD_*``.

    Precedence: explicit arguments, then ``DBWARD_*`` environment variables, then the file.
    """

    model_config = SettingsConfigDict(env_prefix="DBWARD_", env_nested_delimiter="__", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    data_dir: Path = DEFAULT_DATA_DIR
    # SQLAlchemy URL of the metadata store; default: SQLite file in the data directory.
    store_url: str | None = None
    # Fernet key (urlsafe base64, 32 bytes) for secrets at rest; default: <data_dir>/secret.key
    encryption_key: str | None = None
    encryption_key_file: Path | None = None
    log_level: str = "INFO"
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be one of DEBUG, INFO, WARNING, ERROR")
        return v

    @property
    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'dbward.db').resolve()}"

    @property
    def key_file(self) -> Path:
        return self.encryption_key_file or self.data_dir / "secret.key"

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "audit" / "journal.jsonl"

    @property
    def signing_key_path(self) -> Path:
        return self.audit.signing_key_file or self.data_dir / "audit-signing-key.pem"


def _format_validation_error(exc: PydanticValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        lines.append(f"{source}: {loc}: {msg}")
    return "; ".join(lines)


def load_settings(
    config_file: Path | None = None, data_dir: Path | None = None, **overrides: Any
) -> Settings:
    """Read the settings file (if any) and the environment, and validate them together."""
    base_dir = data_dir or Path(os.environ.get("DBWARD_DATA_DIR", str(DEFAULT_DATA_DIR)))
    path = config_file or Path(os.environ.get("DBWARD_CONFIG", str(base_dir / CONFIG_FILE_NAME)))
    values: dict[str, Any] = {}  # from the file
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: the settings file is not valid YAML") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the settings file must be a mapping of setting names")
        values.update(loaded)
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    token = _file_values.set(values)
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path))) from exc
    finally:
        _file_values.reset(token)
