"""The result paths' per-value and per-run shortcuts (``proxy/masking.py``,
``proxy/postgres_masking.py``, ``proxy/mysql_masking.py``) against their definitions: a
value masker gives exactly ``mask.apply(decoded value)`` encoded, and a run of rows masked in
one call gives exactly the rows masked one by one, for every algorithm, NULLs, non-ASCII and
undecodable bytes, long values and any position of the masked column. No sockets."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.patterns import BUILTIN, custom_pattern
from dbward.policy.model import ColumnMask, MaskingPlan
from dbward.proxy import masking as pm
from dbward.proxy import mysql_masking as mym
from dbward.proxy import postgres_masking as pgm
from dbward.proxy.masking import ResultMasks, always_null, span_mask, value_masker
from dbward.proxy.mysql_masking import ColumnMasker, ResponseRewriter, ResultPolicy
from dbward.proxy.postgres_masking import RowMasker
from dbward.wire.mysql.constants import MAX_FRAME, FieldType, ServerStatus
from dbward.wire.mysql.messages import ColumnDefinition41, OKPacket
from dbward.wire.mysql.packets import PacketDecoder, ProtocolViolation, encode_packet, lenenc_int
from dbward.wire.mysql.rows import decode_text_row, encode_text_row
from dbward.wire.mysql.scanner import ResponseKind
from dbward.wire.postgres import rows as r
from dbward.wire.postgres.messages import WireError

A = Algorithm
T = TypeVar("T")
MASKS: list[ColumnMask] = [
    ColumnMask(spec=MaskSpec(algorithm=A.FULL), rule_ids=("m:full",)),
    ColumnMask(spec=MaskSpec(algorithm=A.FULL, mask_char="한"), rule_ids=("m:full",)),
    ColumnMask(spec=MaskSpec(algorithm=A.REDACT), rule_ids=("m:redact",)),
    ColumnMask(spec=MaskSpec(algorithm=A.NULL), rule_ids=("m:null",)),
    ColumnMask(spec=MaskSpec(algorithm=A.FIXED, replacement="x\ty"), rule_ids=("m:fixed",)),
    ColumnMask(spec=MaskSpec(algorithm=A.PARTIAL, keep_first=4, keep_last=4), rule_ids=("m:p",)),
    ColumnMask(
        spec=MaskSpec(algorithm=A.PARTIAL, keep_first=2, keep_last=1, keep_separators=False), rule_ids=("p",)
    ),
    ColumnMask(
        spec=MaskSpec(algorithm=A.PARTIAL, keep_first=1, keep_last=2, mask_char="●"), rule_ids=("m:p",)
    ),
    ColumnMask(spec=MaskSpec(algorithm=A.KEEP_FIRST, keep_first=3), rule_ids=("m:kf",)),
    ColumnMask(spec=MaskSpec(algorithm=A.KEEP_LAST, keep_last=4), rule_ids=("m:kl",)),
    ColumnMask(spec=MaskSpec(algorithm=A.TOKEN), rule_ids=("m:tok",)),
    ColumnMask(spec=MaskSpec(algorithm=A.TOKEN, token_prefix="", token_length=99), rule_ids=()),
    ColumnMask(spec=None, rule_ids=("m:none",)),
    ColumnMask(pattern=BUILTIN["phone"], rule_ids=("m:phone",)),
    ColumnMask(pattern=BUILTIN["email"], rule_ids=("m:email",)),
    ColumnMask(pattern=BUILTIN["card"], rule_ids=("m:card",)),
    ColumnMask(
        pattern=custom_pattern("emp", r"E\d{6}", MaskSpec(algorithm=A.KEEP_FIRST, keep_first=1)),
        rule_ids=("c",),
    ),
]
KEY = b"k" * 32

texts = st.one_of(
    st.text(alphabet=st.sampled_from(list("ab09Z-. @()+/_:\\\t,\"'한é😀")), max_size=30),
    st.sampled_from(["010-1234-5678", "minji@example.com", "4111 1111 1111 1111", "E123456", "", "x" * 300]),
    st.text(max_size=12),
)
raw_values = st.one_of(
    texts.map(lambda t: t.encode("utf-8")),
    st.binary(max_size=20),
)


def reference(mask: ColumnMask, raw: bytes, decode_codec: str, out_codec: str) -> bytes | None:
    if decode_codec == "binary":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "0x" + raw.hex()
    else:
        text = raw.decode(decode_codec, "replace")
    out = mask.apply(text, token_key=KEY)
    return None if out is None else out.encode(out_codec, "replace")


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(range(len(MASKS))),
    raw_values,
    st.sampled_from(["utf-8", "latin-1", "euc_kr", "shift_jis", "cp1252", "binary", "utf-16"]),
    st.sampled_from(["utf-8", "latin-1", "euc_kr", "iso2022_jp"]),
    st.booleans(),
)
def test_value_masker_is_apply_then_encode(
    m: int, raw: bytes, codec_in: str, codec_out: str, as_array: bool
) -> None:
    mask = MASKS[m]

    fn = value_masker(mask, token_key=KEY, codec_in=codec_in, codec_out=codec_out)
    want = reference(mask, raw, codec_in, codec_out)
    for _ in range(2):  # the second time from a cache, where there is one
        got = fn(bytearray(raw) if as_array else raw)
        assert (None if got is None else bytes(got)) == want


def test_span_masks_only_for_full_and_partial_of_one_byte() -> None:
    assert span_mask(MASKS[0], codec_in="utf-8", codec_out="utf-8") == pm.SpanMask(
        first=0, last=0, unit=b"*", alnum=False
    )
    assert span_mask(MASKS[5], codec_in="binary", codec_out="utf-8") == pm.SpanMask(
        first=4, last=4, unit=b"*", alnum=True
    )
    assert span_mask(MASKS[1], codec_in="utf-8", codec_out="utf-8") is None  # 한: three bytes
    assert span_mask(MASKS[7], codec_in="utf-8", codec_out="utf-8") is None
    assert span_mask(MASKS[5], codec_in="utf-16", codec_out="utf-8") is None
    assert span_mask(MASKS[10], codec_in="utf-8", codec_out="utf-8") is None


def test_cache_stays_bounded_and_steps_aside_when_values_do_not_repeat() -> None:
    calls: list[bytes] = []

    def fn(raw: bytes | bytearray) -> bytes:
        calls.append(bytes(raw))
        return b"x"

    cached = pm._cached(fn)
    for i in range(pm.CACHE_ENTRIES * 3):
        assert cached(str(i).encode()) == b"x"
    assert len(calls) == pm.CACHE_ENTRIES * 3
    # values that repeat are computed once while the cache is on
    calls.clear()
    again = pm._cached(fn)
    for _ in range(5):
        for i in range(100):
            again(bytearray(str(i).encode()))
    assert len(calls) == 100


# ----------------------------------------------------------------------------- PostgreSQL
def pg_reference(
    fields: Sequence[r.Field], masks: dict[int, ColumnMask], values: list[bytes | None]
) -> bytes:
    out: list[bytes | None] = []
    for i, v in enumerate(values):
        mask = masks.get(i)
        if mask is None or v is None or i >= len(fields):
            out.append(v)
            continue
        if always_null(mask):
            out.append(None)
            continue
        f = fields[i]
        text = v.decode("utf-8", "replace") if f.format == 0 else r.binary_to_text(f.type_oid, v, "utf-8")
        got = mask.apply(text, token_key=KEY) if text is not None else "[REDACTED]"
        out.append(None if got is None else got.encode("utf-8", "replace"))
    return r.encode_data_row(out)


pg_rows = st.lists(
    st.lists(st.one_of(st.none(), raw_values), min_size=3, max_size=3), min_size=1, max_size=12
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(0, 3), st.sampled_from(range(len(MASKS))), min_size=1, max_size=3),
    pg_rows,
    st.integers(-1, 14),
    st.booleans(),
    st.lists(
        st.sampled_from([(r.TEXT, 0), (r.VARCHAR, 1), (r.INT4, 1), (r.JSONB, 1), (r.INT8, 0)]),
        min_size=3,
        max_size=3,
    ),
)
def test_pg_rows_in_one_call_are_the_rows_one_by_one(
    chosen: dict[int, int],
    values: list[list[bytes | None]],
    limit: int,
    tail: bool,
    types: list[tuple[int, int]],
) -> None:
    fields = tuple(r.Field(f"c{i}".encode(), 0, 0, t, -1, -1, fmt) for i, (t, fmt) in enumerate(types))
    masks = {i: MASKS[m] for i, m in chosen.items()}
    masker = RowMasker(fields, ResultMasks(masks), encoding="utf-8", token_key=KEY)
    frames = [r.encode_data_row(list(v)) for v in values]
    for f, v in zip(frames, values, strict=True):
        assert masker.row(f[5:]) == pg_reference(fields, masks, v)
    after = (
        b"C\x00\x00\x00\x0dSELECT 1\x00" if tail else b"D\x00\x00\x00\x20\x00"
    )  # a complete or a partial frame
    buf = bytearray(b"Zjunk" + b"".join(frames) + after)
    out, pos, taken = masker.rows(buf, 5, len(buf), limit)
    n = len(frames) if limit < 0 else min(limit, len(frames))
    assert taken == n
    assert pos == 5 + sum(len(f) for f in frames[:n])
    assert out == b"".join(pg_reference(fields, masks, v) for v in values[:n])
    rest, end, more = masker.rows(buf, pos, len(buf))  # the rest, up to the frame after them
    assert more == len(frames) - n and end == len(buf) - len(after)
    assert rest == b"".join(pg_reference(fields, masks, v) for v in values[n:])


def with_and_without_c(module: object, name: str, run: Callable[[], T]) -> tuple[T, T]:
    """``run()`` with the C loop ``module.name`` and again with it set to None, as when the
    accelerator is not built (the Python loop then does all the work)."""
    with_c = run()
    saved = getattr(module, name)
    setattr(module, name, None)
    try:
        return with_c, run()
    finally:
        setattr(module, name, saved)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0, 1, 5, 6, 7, 8, 9]),  # full and partial masks (span masks) and others
    st.integers(0, 2),
    pg_rows,
    st.integers(-1, 14),
    st.sampled_from([(r.TEXT, 0), (r.VARCHAR, 1), (r.JSON, 1), (r.INT4, 1)]),
    st.binary(max_size=16),
)
def test_pg_span_rows_in_c_are_the_rows_of_the_python_loop(
    m: int, column: int, values: list[list[bytes | None]], limit: int, typ: tuple[int, int], after: bytes
) -> None:
    """``RowMasker.rows`` hands runs of a span-masked column to ``wire/_speedups.c``; with
    the C loop and without it, the same frames, position and count, for any rows."""
    if pgm._mask_span_rows is None:
        pytest.skip("the C accelerator is not built")
    fields = tuple(r.Field(f"c{i}".encode(), 0, 0, typ[0], -1, -1, typ[1]) for i in range(3))
    masker = RowMasker(fields, ResultMasks({column: MASKS[m]}), encoding="utf-8", token_key=KEY)
    buf = bytearray(b"".join(r.encode_data_row(list(v)) for v in values) + after)

    def run() -> tuple[bytes, int, int] | str:
        try:
            return masker.rows(buf, 0, len(buf), limit)
        except WireError as exc:
            return str(exc)

    with_c, without_c = with_and_without_c(pgm, "_mask_span_rows", run)
    assert with_c == without_c


def test_pg_rows_stop_at_other_frames_and_keep_nothing() -> None:
    mask = MASKS[5]
    fields = (r.Field(b"id", 0, 0, r.INT4, 4, -1, 0), r.Field(b"p", 0, 0, r.TEXT, -1, -1, 0))
    masker = RowMasker(fields, ResultMasks({1: mask}), encoding="utf-8", token_key=b"")
    row = r.encode_data_row([b"1", b"abcdefghij"])
    buf = bytearray(row + row + b"C\x00\x00\x00\x0dSELECT 2\x00" + row)
    out, pos, taken = masker.rows(buf, 0, len(buf))
    assert taken == 2 and pos == 2 * len(row)
    assert out == 2 * r.encode_data_row([b"1", b"abcd**ghij"])
    assert masker.rows(buf, pos, len(buf)) == (b"", pos, 0)
    # a row shorter than the masked column, a NULL, a row with one column only
    short = r.encode_data_row([b"1"])
    null = r.encode_data_row([b"2", None])
    out, pos, taken = masker.rows(short + null, 0, len(short + null))
    assert (out, taken) == (short + null, 2)


def test_pg_rows_refuse_a_value_past_its_row() -> None:
    fields = (r.Field(b"p", 0, 0, r.TEXT, -1, -1, 0),)
    masker = RowMasker(fields, ResultMasks({0: MASKS[0]}), encoding="utf-8", token_key=b"")
    bad = b"D" + struct.pack("!ihi", 4 + 2 + 4 + 3, 1, 50) + b"abc"
    with pytest.raises(WireError):
        masker.rows(bad, 0, len(bad))
    with pytest.raises(WireError):
        masker.row(bad[5:])


# ----------------------------------------------------------------------------- MySQL text rows
def my_col(name: str, typ: int = FieldType.VAR_STRING, charset: int = 45) -> ColumnDefinition41:
    return ColumnDefinition41(
        schema="s",
        table="t",
        org_table="t",
        name=name,
        org_name=name,
        charset=charset,
        column_length=40,
        type=typ,
        flags=0,
        decimals=0,
    )


def my_reference(masks: dict[int, ColumnMask], values: Sequence[bytes | None]) -> bytes:
    out: list[bytes | None] = []
    for i, v in enumerate(values):
        mask = masks.get(i)
        if mask is None or v is None:
            out.append(v)
            continue
        got = mask.apply(v.decode("utf-8", "replace"), token_key=KEY)
        out.append(None if got is None else got.encode("utf-8", "replace"))
    return encode_text_row(out)


my_values = st.one_of(st.none(), raw_values, st.binary(min_size=251, max_size=300))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(0, 2), st.sampled_from(range(len(MASKS))), min_size=1, max_size=2),
    st.lists(st.lists(my_values, min_size=3, max_size=3), min_size=1, max_size=10),
    st.integers(1, 2000),
    st.one_of(st.none(), st.integers(0, 12)),
    st.integers(0, 3),
)
def test_mysql_text_rows_are_the_rows_one_by_one(
    chosen: dict[int, int], values: list[list[bytes | None]], step: int, limit: int | None, seq_skew: int
) -> None:
    cols = [my_col("a"), my_col("b"), my_col("c")]
    masks = {i: MASKS[m] for i, m in chosen.items()}
    packets = [lenenc_int(3), *(c.encode() for c in cols), *(encode_text_row(v) for v in values)]
    packets.append(OKPacket(header=0xFE, status=int(ServerStatus.AUTOCOMMIT)).encode())
    data = bytearray()
    seq = 1
    for i, p in enumerate(packets):
        # a target's sequence ids run on; a skew after the columns makes every row header new
        data += encode_packet(p, (seq + (seq_skew if i > 3 else 0)) & 0xFF)
        seq += 1
    plan = MaskingPlan(columns=masks)
    rw = ResponseRewriter(
        ResponseKind.QUERY,
        deprecate_eof=True,
        policies=[ResultPolicy(plan=plan, limit=limit, connection="c")],
        token_key=KEY,
    )
    out = bytearray()
    for i in range(0, len(data), step):
        out += rw.feed(bytes(data[i : i + step]))
    assert rw.done
    dec = PacketDecoder()
    dec.feed(bytes(out))
    got = []
    expect = 1
    while (p := dec.next_packet()) is not None:
        assert p.seq == expect & 0xFF
        expect = p.last_seq + 1
        got.append(p.payload)
    n = len(values) if limit is None else min(limit, len(values))
    rows = got[4:-1]
    assert [bytes(x) for x in rows] == [my_reference(masks, v) for v in values[:n]]
    for v, x in zip(values, rows, strict=False):
        assert len(decode_text_row(x, 3)) == len(v)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0, 1, 5, 6, 7, 8, 9]),  # full and partial masks (span masks) and others
    st.integers(0, 2),
    st.lists(st.lists(my_values, min_size=3, max_size=3), max_size=10),
    st.integers(-1, 12),
    st.integers(0, 300),
    st.binary(max_size=12),
)
def test_mysql_span_rows_in_c_are_the_rows_of_the_python_loop(
    m: int, column: int, values: list[list[bytes | None]], cap: int, seq: int, after: bytes
) -> None:
    """``ColumnMasker.text_rows`` hands runs of a span-masked column to ``wire/_speedups.c``;
    with the C loop and without it, the same packets, position, sequence ids and count."""
    if mym._mysql_mask_span_rows is None:
        pytest.skip("the C accelerator is not built")
    cm = ColumnMasker([my_col("a"), my_col("b"), my_col("c")], ResultMasks({column: MASKS[m]}), token_key=KEY)
    buf = bytearray()
    for i, v in enumerate(values):
        buf += encode_packet(encode_text_row(v), (seq + i * (i % 3)) & 0xFF)
    buf += after

    def run() -> tuple[bytes, int, int, int] | str:
        out: list[bytes | bytearray] = []
        try:
            pos, nxt, taken = cm.text_rows(buf, 0, len(buf), seq, cap, out)
        except ProtocolViolation as exc:
            return str(exc)
        return b"".join(out), pos, nxt, taken

    with_c, without_c = with_and_without_c(mym, "_mysql_mask_span_rows", run)
    assert with_c == without_c


def test_mysql_masked_row_of_16_mib_is_split_into_frames() -> None:
    masks = {0: ColumnMask(spec=MaskSpec(algorithm=A.FIXED, replacement="z" * 300), rule_ids=("f",))}
    big = b"y" * (MAX_FRAME - 200)
    cm = ColumnMasker([my_col("a"), my_col("b")], ResultMasks(masks), token_key=b"")
    row = encode_text_row([b"x", big])
    buf = bytearray(encode_packet(row, 5))
    out: list[bytes | bytearray] = []
    pos, seq, taken = cm.text_rows(buf, 0, len(buf), 5, -1, out)
    assert (pos, seq, taken) == (len(buf), 7, 1)
    dec = PacketDecoder()
    dec.feed(b"".join(out))
    p = dec.next_packet()
    assert p is not None and p.seq == 5 and p.payload == encode_text_row([b"z" * 300, big])
