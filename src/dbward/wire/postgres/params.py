"""Bind parameter values as the audit trail records them.

Text-format values are decoded as UTF-8. Binary-format values are decoded for common type
OIDs (``pg_type.dat`` in the PostgreSQL source: int2 21, int4 23, int8 20, float4 700,
float8 701, bool 16, text 25, varchar 1043, bpchar 1042, name 19, uuid 2950, json 114,
jsonb 3802, bytea 17, date 1082, timestamp 1114, timestamptz 1184, oid 26); anything
else is recorded as hex ("\\x..."), like bytea output. Values are never re-encoded: the
target receives the client's bytes unchanged.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from typing import Any

_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_TEXTLIKE = {25, 1043, 1042, 19, 114, 705, 0}


def _hex(b: bytes) -> str:
    return "\\x" + b.hex()


def decode_binary(oid: int, b: bytes) -> Any:
    try:
        match oid:
            case 21:
                return struct.unpack("!h", b)[0]
            case 23 | 26:
                return struct.unpack("!i" if oid == 23 else "!I", b)[0]
            case 20:
                return struct.unpack("!q", b)[0]
            case 700:
                return struct.unpack("!f", b)[0]
            case 701:
                return struct.unpack("!d", b)[0]
            case 16:
                if len(b) != 1:
                    return _hex(b)
                return b != b"\0"
            case 25 | 1043 | 1042 | 19 | 114:
                return b.decode("utf-8")
            case 3802:
                return b[1:].decode("utf-8") if b[:1] == b"\x01" else _hex(b)
            case 2950:
                return str(uuid.UUID(bytes=b))
            case 1082:
                (days,) = struct.unpack("!i", b)
                return (_PG_EPOCH_DATE + dt.timedelta(days=days)).isoformat()
            case 1114 | 1184:
                (us,) = struct.unpack("!q", b)
                ts = (_PG_EPOCH + dt.timedelta(microseconds=us)).isoformat()
                return ts + ("+00:00" if oid == 1184 else "")
            case _:
                return _hex(b)
    except (struct.error, ValueError, UnicodeDecodeError, OverflowError):
        return _hex(b)


def decode_param(value: bytes | None, fmt: int, oid: int) -> Any:
    """One parameter value for the audit trail (None for SQL NULL)."""
    if value is None:
        return None
    if fmt == 0:
        if oid == 17:
            return value.decode("latin-1")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return _hex(value)
    return decode_binary(oid, value)


def decode_params(
    values: tuple[bytes | None, ...], formats: tuple[int, ...], oids: tuple[int, ...]
) -> tuple[Any, ...]:
    """All parameters of a Bind, using the Bind format rules and the Parse type OIDs."""
    out: list[Any] = []
    for i, v in enumerate(values):
        if not formats:
            fmt = 0
        elif len(formats) == 1:
            fmt = formats[0]
        else:
            fmt = formats[i] if i < len(formats) else 0
        oid = oids[i] if i < len(oids) else 0
        out.append(decode_param(v, fmt, oid))
    return tuple(out)
