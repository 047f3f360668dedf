"""Result rows: RowDescription and DataRow bodies, and values by type OID in text and binary
format, for the few result paths that must look inside rows (masking).

Counterpart: ``framing.py`` finds frames without decoding them (the fast path); this module
decodes and re-encodes the ones a masking plan touches. Binary formats are those of the
server's ``*send`` functions: https://www.postgresql.org/docs/current/protocol-message-formats.html
(RowDescription, DataRow) and ``src/backend/utils/adt/*.c`` for each type.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from dbward.wire.postgres.messages import WireError

_H = struct.Struct("!h")
_I = struct.Struct("!i")
_FIELD = struct.Struct("!IhIhih")

# type OIDs (pg_type.dat)
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, UNKNOWN, BPCHAR, VARCHAR = 114, 700, 701, 705, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = 1082, 1083, 1114, 1184, 1700, 2950, 3802

#: types whose values are strings: a masked string still fits them (binary format = the bytes)
TEXT_TYPES = frozenset({TEXT, VARCHAR, BPCHAR, NAME, UNKNOWN})


@dataclass(frozen=True, slots=True)
class Field:
    """One RowDescription field: String name | Int32 table OID | Int16 attnum | Int32 type OID
    | Int16 type size | Int32 type modifier | Int16 format (0 text, 1 binary)."""

    name: bytes  # in the client encoding, without the terminating zero
    table_oid: int
    attnum: int
    type_oid: int
    type_size: int
    type_mod: int
    format: int

    def as_text(self) -> Field:
        """The same column announced as ``text`` (its masked values no longer fit the type)."""
        return replace(self, type_oid=TEXT, type_size=-1, type_mod=-1)


def decode_row_description(body: bytes) -> tuple[Field, ...]:
    """'T' | Int32 len | Int16 n | field * n"""
    if len(body) < 2:
        raise WireError("RowDescription is truncated")
    (n,) = _H.unpack_from(body, 0)
    pos = 2
    out: list[Field] = []
    for _ in range(n):
        end = body.find(b"\0", pos)
        if end < 0 or end + 1 + _FIELD.size > len(body):
            raise WireError("RowDescription is truncated")
        name = body[pos:end]
        table, attnum, typ, size, mod, fmt = _FIELD.unpack_from(body, end + 1)
        out.append(Field(name, table, attnum, typ, size, mod, fmt))
        pos = end + 1 + _FIELD.size
    return tuple(out)


def encode_row_description(fields: tuple[Field, ...]) -> bytes:
    body = bytearray(_H.pack(len(fields)))
    for f in fields:
        body += (
            f.name + b"\0" + _FIELD.pack(f.table_oid, f.attnum, f.type_oid, f.type_size, f.type_mod, f.format)
        )
    return b"T" + _I.pack(len(body) + 4) + body


def decode_data_row(body: bytes | memoryview) -> list[bytes | None]:
    """'D' | Int32 len | Int16 n | (Int32 len (-1 = NULL) | Byte[len]) * n"""
    (n,) = _H.unpack_from(body, 0)
    pos = 2
    out: list[bytes | None] = []
    size = len(body)
    for _ in range(n):
        (length,) = _I.unpack_from(body, pos)
        pos += 4
        if length < 0:
            out.append(None)
            continue
        if pos + length > size:
            raise WireError("DataRow is truncated")
        out.append(bytes(body[pos : pos + length]))
        pos += length
    return out


def encode_data_row(values: list[bytes | None]) -> bytes:
    parts = [_H.pack(len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I.pack(len(v)))
            parts.append(v)
    body = b"".join(parts)
    return b"D" + _I.pack(len(body) + 4) + body


# --------------------------------------------------------------------------- binary -> text
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_DATE = dt.date(2000, 1, 1)


def _numeric(b: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", b, 0)
    if sign == 0xC000:
        return "NaN"
    if sign == 0xD000:
        return "Infinity"
    if sign == 0xF000:
        return "-Infinity"
    digits = struct.unpack_from(f"!{ndigits}H", b, 8)
    value = Decimal(0)
    for i, d in enumerate(digits):
        value += Decimal(d).scaleb(4 * (weight - i))
    if sign == 0x4000:
        value = -value
    return f"{value:.{dscale}f}"


def _timestamp(b: bytes, tz: bool) -> str:
    (us,) = struct.unpack("!q", b)
    if us == 0x7FFFFFFFFFFFFFFF:
        return "infinity"
    if us == -0x8000000000000000:
        return "-infinity"
    try:
        t = _PG_EPOCH + dt.timedelta(microseconds=us)
    except OverflowError:
        return str(us)
    text = t.isoformat(sep=" ")
    return text + "+00" if tz else text


def _date(b: bytes) -> str:
    (days,) = struct.unpack("!i", b)
    if days == 0x7FFFFFFF:
        return "infinity"
    if days == -0x80000000:
        return "-infinity"
    try:
        return (_PG_EPOCH_DATE + dt.timedelta(days=days)).isoformat()
    except OverflowError:
        return str(days)


def _time(b: bytes) -> str:
    (us,) = struct.unpack("!q", b)
    return (dt.datetime.min + dt.timedelta(microseconds=us)).time().isoformat()


_BINARY: dict[int, Callable[[bytes], str]] = {
    BOOL: lambda b: "t" if b[:1] == b"\x01" else "f",
    BYTEA: lambda b: "\\x" + b.hex(),
    CHAR: lambda b: b.decode("latin-1"),
    INT2: lambda b: str(struct.unpack("!h", b)[0]),
    INT4: lambda b: str(struct.unpack("!i", b)[0]),
    INT8: lambda b: str(struct.unpack("!q", b)[0]),
    OID: lambda b: str(struct.unpack("!I", b)[0]),
    FLOAT4: lambda b: repr(struct.unpack("!f", b)[0]),
    FLOAT8: lambda b: repr(struct.unpack("!d", b)[0]),
    NUMERIC: _numeric,
    DATE: _date,
    TIME: _time,
    TIMESTAMP: lambda b: _timestamp(b, False),
    TIMESTAMPTZ: lambda b: _timestamp(b, True),
    UUID: lambda b: str(uuid.UUID(bytes=b)),
}


def binary_to_text(type_oid: int, value: bytes, encoding: str) -> str | None:
    """The text form of a binary-format value of the types people mask, or None when dbward
    cannot read the type in binary (the caller then masks it without looking at it)."""
    if type_oid in TEXT_TYPES or type_oid == JSON:
        return value.decode(encoding, "replace")
    if type_oid == JSONB:
        return value[1:].decode(encoding, "replace") if value[:1] == b"\x01" else None
    conv = _BINARY.get(type_oid)
    if conv is None:
        return None
    try:
        return conv(value)
    except (struct.error, ValueError, OverflowError, ArithmeticError):
        return None


# --------------------------------------------------------------------------- COPY text and CSV
_COPY_UNESCAPE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def split_copy_text(line: str, delimiter: str, null: str) -> list[str | None]:
    """One row of COPY's text format (without its newline) as values (None for NULL)."""
    out: list[str | None] = []
    for raw in line.split(delimiter):
        if raw == null:
            out.append(None)
            continue
        if "\\" not in raw:
            out.append(raw)
            continue
        buf: list[str] = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\" and i + 1 < len(raw):
                nxt = raw[i + 1]
                if nxt in _COPY_UNESCAPE:
                    buf.append(_COPY_UNESCAPE[nxt])
                    i += 2
                    continue
                if nxt in "01234567":
                    j = i + 1
                    while j < len(raw) and j < i + 4 and raw[j] in "01234567":
                        j += 1
                    buf.append(chr(int(raw[i + 1 : j], 8)))
                    i = j
                    continue
                buf.append(nxt)
                i += 2
                continue
            buf.append(ch)
            i += 1
        out.append("".join(buf))
    return out


def join_copy_text(values: list[str | None], delimiter: str, null: str) -> str:
    def esc(v: str) -> str:
        v = v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return v.replace(delimiter, "\\" + delimiter) if delimiter not in "\\nrt" else v

    return delimiter.join(null if v is None else esc(v) for v in values)
