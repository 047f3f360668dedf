"""Row codecs of the masking path (``wire/postgres/rows.py``): round trips, binary values
read into the text form PostgreSQL prints, COPY text rows."""

from __future__ import annotations

import struct
import uuid

from hypothesis import given
from hypothesis import strategies as st

from dbward.wire.postgres import rows as r


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=12))
def test_data_row_round_trip(values: list[bytes | None]) -> None:
    frame = r.encode_data_row(values)
    assert frame[:1] == b"D" and struct.unpack("!I", frame[1:5])[0] == len(frame) - 1
    assert r.decode_data_row(frame[5:]) == values


@given(
    st.lists(
        st.tuples(
            st.binary(max_size=20).filter(lambda b: b"\0" not in b),
            st.integers(0, 2**32 - 1),
            st.integers(-(2**15), 2**15 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(-(2**15), 2**15 - 1),
            st.integers(-(2**31), 2**31 - 1),
            st.sampled_from([0, 1]),
        ),
        max_size=8,
    )
)
def test_row_description_round_trip(raw: list[tuple[bytes, int, int, int, int, int, int]]) -> None:
    fields = tuple(r.Field(*f) for f in raw)
    frame = r.encode_row_description(fields)
    assert r.decode_row_description(frame[5:]) == fields


def _numeric(text: str) -> bytes:
    """PostgreSQL's numeric_send for a plain decimal literal (test helper)."""
    neg = text.startswith("-")
    text = text.lstrip("-")
    whole, _, frac = text.partition(".")
    dscale = len(frac)
    whole = whole.lstrip("0")
    pad_w = (-len(whole)) % 4
    pad_f = (-len(frac)) % 4
    digits_s = "0" * pad_w + whole + frac + "0" * pad_f
    groups = [int(digits_s[i : i + 4]) for i in range(0, len(digits_s), 4)]
    weight = (len(whole) + pad_w) // 4 - 1
    while groups and groups[-1] == 0:
        groups.pop()
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    sign = 0x4000 if neg else 0
    return struct.pack(f"!hhHH{len(groups)}H", len(groups), weight, sign, dscale, *groups)


def test_binary_values_read_as_postgres_prints_them() -> None:
    enc = "utf-8"
    assert r.binary_to_text(r.INT4, struct.pack("!i", -42), enc) == "-42"
    assert r.binary_to_text(r.INT8, struct.pack("!q", 2**40), enc) == str(2**40)
    assert r.binary_to_text(r.INT2, struct.pack("!h", 7), enc) == "7"
    for text in ("1234.50", "-7.25", "0.001", "100000000.0001", "0"):
        assert r.binary_to_text(r.NUMERIC, _numeric(text), enc) == text
    assert r.binary_to_text(r.DATE, struct.pack("!i", -3652), enc) == "1990-01-01"
    us = ((24 * 366 + 3) * 3600 + 4 * 60 + 5) * 1_000_000  # 2001-01-01 03:04:05
    assert r.binary_to_text(r.TIMESTAMP, struct.pack("!q", us), enc) == "2001-01-01 03:04:05"
    assert r.binary_to_text(r.TIMESTAMPTZ, struct.pack("!q", us), enc) == "2001-01-01 03:04:05+00"
    u = uuid.uuid4()
    assert r.binary_to_text(r.UUID, u.bytes, enc) == str(u)
    assert r.binary_to_text(r.JSONB, b'\x01{"a": 1}', enc) == '{"a": 1}'
    assert r.binary_to_text(r.BYTEA, b"\x00\xff", enc) == "\\x00ff"
    assert r.binary_to_text(r.TEXT, "전화".encode(), enc) == "전화"
    assert r.binary_to_text(1007, b"\x00", enc) is None  # int4[]: not read, the caller redacts
    assert r.binary_to_text(r.INT4, b"\x00", enc) is None  # malformed: not read either


@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), min_size=1, max_size=6))
def test_copy_text_round_trip(values: list[str | None]) -> None:
    values = [v.replace("\0", "") if v is not None else None for v in values]
    line = r.join_copy_text(values, "\t", "\\N")
    assert "\n" not in line
    assert r.split_copy_text(line, "\t", "\\N") == values
