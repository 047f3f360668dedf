"""Result rows: the text protocol (COM_QUERY) and the binary protocol (COM_STMT_EXECUTE).

Text row (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_row.html):
one length-encoded string per column, 0xFB for NULL.

Binary row (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_binary_resultset.html#sect_protocol_binary_resultset_row)::

    0x00 | NULL bitmap ((columns + 7 + 2) / 8 bytes, offset 2) | values of non-NULL columns

Binary values (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_binary_resultset.html#sect_protocol_binary_resultset_row_value)
are also how COM_STMT_EXECUTE carries bound parameters, so ``messages.py`` uses
:func:`decode_binary_value`. The proxy relays rows without decoding them unless a masking plan
needs the values.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from dbward.wire.mysql.constants import FieldType
from dbward.wire.mysql.packets import ProtocolViolation, Reader, lenenc_bytes

_INT_SIZES = {
    FieldType.TINY: 1,
    FieldType.SHORT: 2,
    FieldType.YEAR: 2,
    FieldType.INT24: 4,
    FieldType.LONG: 4,
    FieldType.LONGLONG: 8,
}


def decode_text_row(payload: bytes, num_columns: int) -> tuple[bytes | None, ...]:
    r = Reader(payload)
    values = tuple(r.lenenc_bytes() for _ in range(num_columns))
    if r.remaining():
        raise ProtocolViolation("text row has bytes after its last column")
    return values


def encode_text_row(values: Sequence[bytes | None]) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_bytes(v) for v in values)


#: string types whose binary-protocol value is text (bytes when it is not UTF-8)
TEXT_TYPES = frozenset(
    int(t)
    for t in (
        FieldType.VARCHAR,
        FieldType.VAR_STRING,
        FieldType.STRING,
        FieldType.ENUM,
        FieldType.SET,
        FieldType.JSON,
        FieldType.TINY_BLOB,
        FieldType.MEDIUM_BLOB,
        FieldType.LONG_BLOB,
        FieldType.BLOB,
    )
)
#: length-encoded types whose binary-protocol value stays bytes
_RAW_TYPES = frozenset(int(t) for t in (FieldType.BIT, FieldType.GEOMETRY, FieldType.VECTOR))


def decode_binary_value(r: Reader, typ: int, unsigned: bool) -> Any:
    """One value of the binary protocol as a Python value (int, float, str, bytes, date/time)."""
    size = _INT_SIZES.get(typ)  # type: ignore[call-overload]
    if size is not None:
        raw = r.bytes_n(size)
        return int.from_bytes(raw, "little", signed=not unsigned)
    if typ == FieldType.FLOAT:
        return struct.unpack("<f", r.bytes_n(4))[0]
    if typ == FieldType.DOUBLE:
        return struct.unpack("<d", r.bytes_n(8))[0]
    if typ in (FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP, FieldType.NEWDATE):
        n = r.int1()
        if n not in (0, 4, 7, 11):
            raise ProtocolViolation(f"date/time value of length {n}")
        if n == 0:
            return dt.datetime(1, 1, 1) if typ != FieldType.DATE else None
        year, month, day = r.int2(), r.int1(), r.int1()
        hh = mm = ss = us = 0
        if n >= 7:
            hh, mm, ss = r.int1(), r.int1(), r.int1()
        if n == 11:
            us = r.int4()
        try:
            if typ == FieldType.DATE:
                return dt.date(year, month, day)
            return dt.datetime(year, month, day, hh, mm, ss, us)
        except ValueError:  # zero dates ('0000-00-00') are legal in MySQL, not in Python
            return f"{year:04d}-{month:02d}-{day:02d} {hh:02d}:{mm:02d}:{ss:02d}"
    if typ == FieldType.TIME:
        n = r.int1()
        if n not in (0, 8, 12):
            raise ProtocolViolation(f"time value of length {n}")
        if n == 0:
            return dt.timedelta(0)
        negative = r.int1()
        days, hh, mm, ss = r.int4(), r.int1(), r.int1(), r.int1()
        us = r.int4() if n == 12 else 0
        td = dt.timedelta(days=days, hours=hh, minutes=mm, seconds=ss, microseconds=us)
        return -td if negative else td
    if typ in (FieldType.DECIMAL, FieldType.NEWDECIMAL):
        raw = r.lenenc_bytes_nn()
        try:
            return Decimal(raw.decode("ascii"))
        except (ArithmeticError, UnicodeDecodeError):
            raise ProtocolViolation("DECIMAL value is not a number") from None
    if typ in TEXT_TYPES or typ in _RAW_TYPES:
        raw = r.lenenc_bytes_nn()
        if typ in _RAW_TYPES:
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    raise ProtocolViolation(f"binary value of unknown type {typ}")


def encode_binary_value(value: Any, typ: int, unsigned: bool) -> bytes:
    """The inverse of :func:`decode_binary_value` (used by tests and by the masking issue)."""
    size = _INT_SIZES.get(typ)  # type: ignore[call-overload]
    if size is not None:
        return int(value).to_bytes(size, "little", signed=not unsigned)
    if typ == FieldType.FLOAT:
        return struct.pack("<f", value)
    if typ == FieldType.DOUBLE:
        return struct.pack("<d", value)
    if typ in (FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP, FieldType.NEWDATE):
        if isinstance(value, dt.datetime):
            head = value.year.to_bytes(2, "little") + bytes((value.month, value.day))
            tail = bytes((value.hour, value.minute, value.second))
            if value.microsecond:
                return b"\x0b" + head + tail + value.microsecond.to_bytes(4, "little")
            return b"\x07" + head + tail
        if isinstance(value, dt.date):
            return b"\x04" + value.year.to_bytes(2, "little") + bytes((value.month, value.day))
        raise ValueError("date/time parameter must be a date or datetime")
    if typ == FieldType.TIME:
        td: dt.timedelta = value
        negative = td < dt.timedelta(0)
        td = -td if negative else td
        secs = td.seconds
        body = (
            bytes((int(negative),))
            + td.days.to_bytes(4, "little")
            + bytes((secs // 3600, secs // 60 % 60, secs % 60))
        )
        if td.microseconds:
            return b"\x0c" + body + td.microseconds.to_bytes(4, "little")
        return b"\x08" + body
    if isinstance(value, bytes):
        return lenenc_bytes(value)
    return lenenc_bytes(str(value).encode())


def decode_binary_row(payload: bytes, types: Sequence[tuple[int, bool]]) -> tuple[Any, ...]:
    r = Reader(payload)
    if r.int1() != 0x00:
        raise ProtocolViolation("binary row does not start with 0x00")
    bitmap = r.bytes_n((len(types) + 7 + 2) // 8)
    out: list[Any] = []
    for i, (typ, unsigned) in enumerate(types):
        bit = i + 2
        if bitmap[bit // 8] & (1 << (bit % 8)):
            out.append(None)
        else:
            out.append(decode_binary_value(r, typ, unsigned))
    if r.remaining():
        raise ProtocolViolation("binary row has bytes after its last column")
    return tuple(out)


def encode_binary_row(values: Sequence[Any], types: Sequence[tuple[int, bool]]) -> bytes:
    bitmap = bytearray((len(types) + 7 + 2) // 8)
    body = bytearray()
    for i, (v, (typ, unsigned)) in enumerate(zip(values, types, strict=True)):
        if v is None:
            bit = i + 2
            bitmap[bit // 8] |= 1 << (bit % 8)
        else:
            body += encode_binary_value(v, typ, unsigned)
    return b"\x00" + bytes(bitmap) + bytes(body)


# --------------------------------------------------------------------------- value spans and text forms
# What the masking path needs: where a value of a row begins and ends (only the masked
# columns are decoded; the bytes around them are copied as they are), and a binary value's
# text form as the text protocol would have sent it (masks work on text).

#: binary-protocol types whose value is a length-encoded string
LENENC_TYPES = TEXT_TYPES | _RAW_TYPES | {int(FieldType.DECIMAL), int(FieldType.NEWDECIMAL)}

_FIXED_SIZES = {**_INT_SIZES, FieldType.FLOAT: 4, FieldType.DOUBLE: 8, FieldType.NULL: 0}
_TEMPORAL = frozenset(
    {FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP, FieldType.NEWDATE, FieldType.TIME}
)


def lenenc_span(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(start, end) of the bytes of the length-encoded string at ``pos`` (not NULL)."""
    n = len(data)
    if pos >= n:
        raise ProtocolViolation("row truncated before a value")
    first = data[pos]
    if first < 0xFB:
        start, length = pos + 1, first
    elif first == 0xFC:
        start, length = pos + 3, int.from_bytes(data[pos + 1 : pos + 3], "little")
    elif first == 0xFD:
        start, length = pos + 4, int.from_bytes(data[pos + 1 : pos + 4], "little")
    elif first == 0xFE:
        start, length = pos + 9, int.from_bytes(data[pos + 1 : pos + 9], "little")
    else:
        raise ProtocolViolation(f"0x{first:02X} where a length-encoded string was expected")
    end = start + length
    if end > n:
        raise ProtocolViolation("row truncated in the middle of a value")
    return start, end


def null_bitmap_size(num_columns: int) -> int:
    """Bytes of a binary row's NULL bitmap (offset 2)."""
    return (num_columns + 7 + 2) // 8


def binary_value_end(data: bytes | bytearray, pos: int, typ: int) -> int:
    """Where the binary-protocol value of type ``typ`` starting at ``pos`` ends."""
    size = _FIXED_SIZES.get(typ)  # type: ignore[call-overload]
    if size is not None:
        end: int = pos + size
    elif typ in _TEMPORAL:
        if pos >= len(data):
            raise ProtocolViolation("row truncated before a date/time value")
        end = pos + 1 + data[pos]
    elif typ in LENENC_TYPES:
        end = lenenc_span(data, pos)[1]
    else:
        raise ProtocolViolation(f"binary value of unknown type {typ}")
    if end > len(data):
        raise ProtocolViolation("row truncated in the middle of a value")
    return end


def _fraction(us: int, decimals: int) -> str:
    if not 0 < decimals <= 6:
        return ""
    return "." + f"{us:06d}"[:decimals]


def binary_value_text(raw: bytes, typ: int, unsigned: bool, decimals: int = 0) -> str | bytes:
    """The text-protocol form of one binary-protocol value (``raw`` is exactly its bytes):
    what ``SELECT`` over COM_QUERY would have sent for it. Strings come back as bytes in the
    column's character set; everything else as ``str``."""
    if typ in LENENC_TYPES:
        start, end = lenenc_span(raw, 0)
        v = raw[start:end]
        return v if typ not in (FieldType.DECIMAL, FieldType.NEWDECIMAL) else v.decode("ascii", "replace")
    r = Reader(raw)
    if typ in (FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP, FieldType.NEWDATE):
        n = r.int1()
        year = month = day = hh = mm = ss = us = 0
        if n >= 4:
            year, month, day = r.int2(), r.int1(), r.int1()
        if n >= 7:
            hh, mm, ss = r.int1(), r.int1(), r.int1()
        if n >= 11:
            us = r.int4()
        date = f"{year:04d}-{month:02d}-{day:02d}"
        if typ == FieldType.DATE:
            return date
        return f"{date} {hh:02d}:{mm:02d}:{ss:02d}" + _fraction(us, decimals)
    if typ == FieldType.TIME:
        n = r.int1()
        if n == 0:
            return "00:00:00"
        negative, days, hh, mm, ss = r.int1(), r.int4(), r.int1(), r.int1(), r.int1()
        us = r.int4() if n >= 12 else 0
        sign = "-" if negative else ""
        return f"{sign}{days * 24 + hh:02d}:{mm:02d}:{ss:02d}" + _fraction(us, decimals)
    value = decode_binary_value(r, typ, unsigned)
    if typ == FieldType.FLOAT:
        return format(value, ".6g")
    if typ == FieldType.DOUBLE:
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if typ == FieldType.YEAR:
        return f"{value:04d}"
    return str(value)
