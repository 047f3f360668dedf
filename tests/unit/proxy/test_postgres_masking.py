"""Masking PostgreSQL rows (``proxy/postgres_masking.py``): announced types, text and binary
values, NULL masking, COPY text and CSV rows, and refusals of COPY formats."""

from __future__ import annotations

import struct

import pytest

from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.patterns import BUILTIN
from dbward.policy.model import ColumnMask
from dbward.proxy.masking import ResultMasks, result_masks
from dbward.proxy.postgres_masking import CopyMasker, CopyUnmaskable, RowMasker, python_encoding
from dbward.wire.postgres import rows as r

PHONE = ColumnMask(pattern=BUILTIN["phone"], rule_ids=("masking:phone",), sources=("public.t.phone",))
FULL = ColumnMask(spec=MaskSpec(algorithm=Algorithm.FULL), rule_ids=("masking:full",))
NULL = ColumnMask(spec=MaskSpec(algorithm=Algorithm.NULL), rule_ids=("masking:null",))


def _fields(fmt: int) -> tuple[r.Field, ...]:
    return (
        r.Field(b"id", 10, 1, r.INT4, 4, -1, fmt),
        r.Field(b"phone", 10, 2, r.VARCHAR, -1, 24, fmt),
        r.Field(b"balance", 10, 3, r.NUMERIC, -1, 786438, fmt),
        r.Field(b"seen", 10, 4, r.TIMESTAMPTZ, 8, -1, fmt),
    )


@pytest.mark.parametrize("fmt", [0, 1])
def test_row_masker_types_and_values(fmt: int) -> None:
    masker = RowMasker(
        _fields(fmt), ResultMasks({1: PHONE, 2: FULL, 3: NULL}), encoding="utf-8", token_key=b""
    )
    announced = r.decode_row_description(masker.description()[5:])
    assert [f.type_oid for f in announced] == [r.INT4, r.VARCHAR, r.TEXT, r.TIMESTAMPTZ]
    assert announced[1].type_mod == -1 and announced[2].type_size == -1
    assert [f.format for f in announced] == [fmt] * 4
    if fmt == 0:
        raw = [b"1", b"010-1234-5678", b"1234.50", b"2024-01-02 03:04:05+00"]
    else:
        numeric = struct.pack("!hhHH2H", 2, 0, 0, 2, 1234, 5000)
        raw = [struct.pack("!i", 1), b"010-1234-5678", numeric, struct.pack("!q", 1)]
    out = r.decode_data_row(masker.row(r.encode_data_row(list(raw))[5:])[5:])
    assert out == [raw[0], b"010-****-5678", b"*******", None]
    # NULLs stay NULL
    assert r.decode_data_row(masker.row(r.encode_data_row([raw[0], None, None, None])[5:])[5:]) == [
        raw[0],
        None,
        None,
        None,
    ]


def test_unreadable_binary_value_is_redacted() -> None:
    fields = (r.Field(b"a", 0, 0, 1007, -1, -1, 1),)  # int4[] in binary
    masker = RowMasker(fields, ResultMasks({0: PHONE}), encoding="utf-8", token_key=b"")
    assert r.decode_data_row(masker.row(r.encode_data_row([b"\x00\x01"])[5:])[5:]) == [b"[REDACTED]"]


def test_wire_origin_adds_columns_lineage_missed() -> None:
    from dbward.policy.model import MaskingPlan

    plan = MaskingPlan(columns={}, by_source={"public.t.phone": PHONE})
    rm = result_masks(plan, [("public", "t", "id"), ("public", "t", "phone")])
    assert rm.masks == {1: PHONE} and rm.wire_only == frozenset({1})
    assert rm.audit_columns(["id", "phone"])[0]["wire_origin"] is True


def test_copy_text_and_csv() -> None:
    text = CopyMasker({1: PHONE}, "COPY t TO STDOUT", encoding="utf-8", token_key=b"")
    assert text.row(b"1\t010-1234-5678\n") == b"d" + struct.pack("!I", 20) + b"1\t010-****-5678\n"
    assert text.row(b"2\t\\N\n")[5:] == b"2\t\\N\n"
    csv_ = CopyMasker(
        {1: PHONE}, "COPY t TO STDOUT WITH (FORMAT csv, HEADER)", encoding="utf-8", token_key=b""
    )
    assert csv_.row(b"id,phone\n")[5:] == b"id,phone\n"
    assert csv_.row(b'1,"010-1234-5678"\n')[5:] == b"1,010-****-5678\n"
    with pytest.raises(CopyUnmaskable):
        CopyMasker({0: FULL}, "COPY t TO STDOUT (FORMAT binary)", encoding="utf-8", token_key=b"")
    with pytest.raises(CopyUnmaskable):
        CopyMasker({0: FULL}, "COPY t TO STDOUT (FORMAT csv, QUOTE '|')", encoding="utf-8", token_key=b"")


def test_client_encodings() -> None:
    assert python_encoding("UTF8") == "utf-8"
    assert python_encoding("EUC_KR") == "euc_kr"
    assert python_encoding(None) == "utf-8"
    assert python_encoding("NOT_AN_ENCODING") == "utf-8"
