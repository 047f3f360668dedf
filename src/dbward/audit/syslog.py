"""Syslog message formats for audit forwarding: RFC 5424 and RFC 3164, and TCP framing.

Field layout (RFC 5424), documented for SIEM/UBA teams in docs/audit-forwarding.md:

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [dbward@32473 chain= seq= user= ...] JSON

- PRI = facility * 8 + severity; severity 4 (warning) for events whose code ends in W,
  5 (notice) for denials, 6 (informational) otherwise.
- MSGID = the event code (e.g. Q001I); the structured-data element carries the fields a
  SIEM indexes; MSG is the whole record as canonical JSON.
- 32473 is the private enterprise number reserved for documentation (RFC 5612); set
  ``sd_id`` if your SIEM expects another.

TCP framing: octet counting (RFC 6587 3.4.1, "LEN SP MSG") by default, or LF-terminated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

SD_FIELDS = ("chain", "seq", "user", "connection", "database", "session_id", "client_addr", "effect")


def severity(rec: dict[str, Any]) -> int:
    code = str(rec.get("code", ""))
    if code.endswith("W") or code.endswith("E"):
        return 4
    if rec.get("effect") in ("deny", "require_approval"):
        return 5
    return 6


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str | None, limit: int) -> str:
    if not value:
        return "-"
    clean = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)
    return clean[:limit]


def _timestamp(rec: dict[str, Any]) -> datetime:
    raw = rec.get("time")
    if isinstance(raw, str):
        try:
            t = datetime.fromisoformat(raw)
            return t if t.tzinfo else t.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def format_rfc5424(
    line: str,
    rec: dict[str, Any],
    *,
    hostname: str,
    app_name: str = "dbward",
    facility: int = 13,
    sd_id: str = "dbward@32473",
    procid: str | None = None,
) -> bytes:
    pri = facility * 8 + severity(rec)
    ts = _timestamp(rec).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    params = " ".join(f'{k}="{_sd_escape(str(rec[k]))}"' for k in SD_FIELDS if rec.get(k) is not None)
    sd = f"[{sd_id} {params}]" if params else "-"
    header = (
        f"<{pri}>1 {ts} {_header_token(hostname, 255)} {_header_token(app_name, 48)} "
        f"{_header_token(procid, 128)} {_header_token(str(rec.get('code', '')), 32)} {sd} "
    )
    return header.encode() + line.encode()


def format_rfc3164(
    line: str, rec: dict[str, Any], *, hostname: str, app_name: str = "dbward", facility: int = 13
) -> bytes:
    pri = facility * 8 + severity(rec)
    t = _timestamp(rec).astimezone(UTC)
    ts = f"{t.strftime('%b')} {t.day:>2} {t.strftime('%H:%M:%S')}"
    tag = _header_token(app_name, 32)
    return f"<{pri}>{ts} {_header_token(hostname, 255)} {tag}: {line}".encode()


def frame_octet_counting(msg: bytes) -> bytes:
    return str(len(msg)).encode() + b" " + msg


def frame_lf(msg: bytes) -> bytes:
    return msg.replace(b"\n", b" ") + b"\n"
