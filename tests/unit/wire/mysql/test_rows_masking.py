"""Value spans and text forms of result rows, what the masking path reads (wire/mysql/rows.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbward.wire.mysql.constants import FieldType
from dbward.wire.mysql.packets import ProtocolViolation, lenenc_bytes
from dbward.wire.mysql.rows import (
    binary_value_end,
    binary_value_text,
    encode_binary_value,
    lenenc_span,
    null_bitmap_size,
)


@pytest.mark.parametrize(
    ("value", "typ", "unsigned", "decimals", "text"),
    [
        (-5, FieldType.TINY, False, 0, "-5"),
        (250, FieldType.TINY, True, 0, "250"),
        (4111111111111111, FieldType.LONGLONG, True, 0, "4111111111111111"),
        (1999, FieldType.YEAR, True, 0, "1999"),
        (3.25, FieldType.DOUBLE, False, 0, "3.25"),
        (2.0, FieldType.DOUBLE, False, 0, "2"),
        (1.1, FieldType.FLOAT, False, 0, "1.1"),
        (Decimal("-7.25"), FieldType.NEWDECIMAL, False, 2, "-7.25"),
        (dt.date(1990, 1, 2), FieldType.DATE, False, 0, "1990-01-02"),
        (dt.datetime(2024, 1, 2, 3, 4, 5), FieldType.DATETIME, False, 0, "2024-01-02 03:04:05"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 678000), FieldType.DATETIME, False, 3, "2024-01-02 03:04:05.678"),
        (dt.datetime(2024, 1, 2), FieldType.TIMESTAMP, False, 0, "2024-01-02 00:00:00"),
        (dt.timedelta(hours=12, minutes=34, seconds=56), FieldType.TIME, False, 0, "12:34:56"),
        (-dt.timedelta(hours=1), FieldType.TIME, False, 0, "-01:00:00"),
        (dt.timedelta(days=2, hours=1), FieldType.TIME, False, 0, "49:00:00"),
        (dt.timedelta(0), FieldType.TIME, False, 0, "00:00:00"),
    ],
)
def test_binary_value_text_is_what_the_text_protocol_sends(
    value: Any, typ: FieldType, unsigned: bool, decimals: int, text: str
) -> None:
    raw = encode_binary_value(value, typ, unsigned)
    assert binary_value_end(raw + b"tail", 0, typ) == len(raw)
    assert binary_value_text(raw, typ, unsigned, decimals) == text


def test_string_values_come_back_as_bytes_and_zero_dates_as_text() -> None:
    raw = lenenc_bytes("김민지".encode())
    assert binary_value_text(raw, FieldType.VAR_STRING, False) == "김민지".encode()
    assert binary_value_end(raw, 0, FieldType.BLOB) == len(raw)
    assert binary_value_text(b"\x00", FieldType.DATE, False) == "0000-00-00"
    assert binary_value_text(b"\x00", FieldType.DATETIME, False) == "0000-00-00 00:00:00"


def test_spans_and_bitmap() -> None:
    assert lenenc_span(b"\x03abcX", 0) == (1, 4)
    long = b"x" * 300
    data = b"\xfc" + len(long).to_bytes(2, "little") + long
    assert lenenc_span(data, 0) == (3, 303)
    assert null_bitmap_size(1) == 1 and null_bitmap_size(6) == 1 and null_bitmap_size(7) == 2
    with pytest.raises(ProtocolViolation):
        lenenc_span(b"\x05ab", 0)
    with pytest.raises(ProtocolViolation):
        lenenc_span(b"\xff", 0)
    with pytest.raises(ProtocolViolation):
        binary_value_end(b"\x0b\x01", 0, FieldType.DATETIME)
    with pytest.raises(ProtocolViolation):
        binary_value_end(b"\x00", 0, 99)


@given(st.binary(max_size=40), st.sampled_from(list(FieldType)))
def test_garbage_raises_only_protocol_violation(data: bytes, typ: FieldType) -> None:
    try:
        end = binary_value_end(data, 0, typ)
        binary_value_text(data[:end], typ, False, 6)
    except ProtocolViolation:
        pass
