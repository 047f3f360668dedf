"""ResponseRewriter transcripts (proxy/mysql_masking.py): exact packet sequences in, what the
client gets out; masks over both row protocols, column types announced, sequence ids, row
limits, redacted errors, prepared statements, cursors, any byte split. No sockets."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.policy.model import ColumnMask, MaskingPlan
from dbward.proxy.mysql_masking import (
    MASKED_LENGTH,
    UTF8MB4,
    ResponseRewriter,
    ResultPolicy,
    diagnostics_mask,
)
from dbward.wire.mysql.constants import MAX_FRAME, FieldType, ServerStatus
from dbward.wire.mysql.messages import (
    ColumnDefinition41,
    EOFPacket,
    ERRPacket,
    OKPacket,
    StmtPrepareOK,
)
from dbward.wire.mysql.packets import PacketDecoder, ProtocolViolation, encode_packet, lenenc_int
from dbward.wire.mysql.rows import decode_binary_row, decode_text_row, encode_binary_row, encode_text_row
from dbward.wire.mysql.scanner import ResponseKind, ResponseScanner

AUTO = int(ServerStatus.AUTOCOMMIT)
MORE = int(ServerStatus.AUTOCOMMIT | ServerStatus.MORE_RESULTS_EXISTS)
FULL = ColumnMask(spec=MaskSpec(algorithm=Algorithm.FULL), rule_ids=("masking:full",), sources=("s.t.phone",))
LAST4 = ColumnMask(spec=MaskSpec(algorithm=Algorithm.KEEP_LAST, keep_last=4), rule_ids=("masking:card",))
NULL = ColumnMask(spec=MaskSpec(algorithm=Algorithm.NULL), rule_ids=("masking:null",))


def col(
    name: str,
    typ: int = FieldType.VAR_STRING,
    *,
    charset: int = UTF8MB4,
    flags: int = 0,
    table: str = "t",
    decimals: int = 0,
) -> ColumnDefinition41:
    return ColumnDefinition41(
        schema="s",
        table=table,
        org_table=table,
        name=name,
        org_name=name,
        charset=charset,
        column_length=40,
        type=typ,
        flags=flags,
        decimals=decimals,
    )


def frames(packets: Sequence[bytes], seq: int = 1) -> bytes:
    out = bytearray()
    for p in packets:
        out += encode_packet(p, seq)
        seq += len(p) // MAX_FRAME + 1
    return bytes(out)


def result(
    cols: Sequence[ColumnDefinition41],
    rows: Sequence[bytes],
    *,
    deprecate_eof: bool = True,
    status: int = AUTO,
    warnings: int = 0,
) -> list[bytes]:
    packets = [lenenc_int(len(cols))] + [c.encode() for c in cols]
    if not deprecate_eof:
        packets.append(EOFPacket(status=AUTO).encode())
    packets += list(rows)
    if deprecate_eof:
        packets.append(OKPacket(header=0xFE, status=status, warnings=warnings).encode())
    else:
        packets.append(EOFPacket(status=status, warnings=warnings).encode())
    return packets


def packets_of(data: bytes) -> list[tuple[int, bytes]]:
    """(sequence id of the first frame, payload) of every packet; sequence ids must run on."""
    dec = PacketDecoder()
    dec.feed(data)
    out = []
    expect = None
    while (p := dec.next_packet()) is not None:
        if expect is not None:
            assert p.seq == expect & 0xFF, "sequence ids do not run on"
        expect = p.last_seq + 1
        out.append((p.seq, p.payload))
    assert dec.buffered == 0
    return out


def rewrite(
    kind: ResponseKind,
    data: bytes,
    policies: Sequence[ResultPolicy],
    *,
    step: int = 0,
    deprecate_eof: bool = True,
    **kw: Any,
) -> tuple[ResponseRewriter, bytes]:
    rw = ResponseRewriter(kind, deprecate_eof=deprecate_eof, policies=policies, token_key=b"k" * 32, **kw)
    out = bytearray()
    step = step or len(data)
    for i in range(0, len(data), step):
        assert not rw.done
        out += rw.feed(data[i : i + step])
    assert rw.done
    sc = ResponseScanner(kind, deprecate_eof=deprecate_eof)
    sc.feed(bytes(out))
    assert sc.done, "the client would wait for more"
    return rw, bytes(out)


def plan(**columns: ColumnMask) -> MaskingPlan:
    return MaskingPlan(columns={int(k[1:]): m for k, m in columns.items()}, redact_errors=True)


def pol(p: MaskingPlan | None = None, limit: int | None = None) -> ResultPolicy:
    return ResultPolicy(plan=p, limit=limit, connection="maria")


# ----------------------------------------------------------------------------- text protocol
@pytest.mark.parametrize("deprecate_eof", [True, False])
@pytest.mark.parametrize("step", [0, 1, 3, 7, 64])
def test_text_rows_masked_others_copied(deprecate_eof: bool, step: int) -> None:
    cols = [col("id", FieldType.LONG, charset=63), col("phone"), col("name")]
    rows = [
        encode_text_row([b"1", b"010-1234-5678", "김민지".encode()]),
        encode_text_row([b"2", None, b"Lee"]),
        encode_text_row([b"3", b"x" * 300, b""]),
    ]
    data = frames(result(cols, rows, deprecate_eof=deprecate_eof))
    rw, out = rewrite(ResponseKind.QUERY, data, [pol(plan(c1=FULL))], step=step, deprecate_eof=deprecate_eof)
    pk = [p for _, p in packets_of(out)]
    assert pk[0] == b"\x03"
    announced = [ColumnDefinition41.parse(p) for p in pk[1:4]]
    assert announced[0] == cols[0] and announced[2] == cols[2]
    assert announced[1] == dataclasses.replace(cols[1], column_length=MASKED_LENGTH)  # a string stays one
    body = pk[4:7] if deprecate_eof else pk[5:8]
    got = [decode_text_row(p, 3) for p in body]
    assert got == [
        (b"1", b"*************", "김민지".encode()),
        (b"2", None, b"Lee"),
        (b"3", b"*" * 300, b""),
    ]
    assert rw.notes[0].audit == [
        {
            "column": "phone",
            "rule": "masking:full",
            "algorithm": "full",
            "position": 2,
            "rules": ["masking:full"],
            "sources": ["s.t.phone"],
            "wire_origin": False,
        }
    ]
    assert rw.notes[0].rows == 3 and not rw.notes[0].cut


def test_non_string_columns_are_announced_as_strings() -> None:
    cols = [
        col("balance", FieldType.NEWDECIMAL, charset=63, decimals=2),
        col("born", FieldType.DATE, charset=63, flags=0x0001 | 0x0080),
        col("raw", FieldType.BLOB, charset=63, flags=0x0010 | 0x0080),
        col("kind", FieldType.STRING, flags=0x0100),
        col("seen", FieldType.DATETIME, charset=63, flags=0x0001),
    ]
    rows = [encode_text_row([b"12.50", b"1990-01-02", b"\x00\xff", b"a", b"2024-01-02 03:04:05"])]
    p = MaskingPlan(columns={0: FULL, 1: LAST4, 2: FULL, 3: FULL, 4: NULL})
    _, out = rewrite(ResponseKind.QUERY, frames(result(cols, rows)), [pol(p)])
    pk = [p for _, p in packets_of(out)]
    announced = [ColumnDefinition41.parse(x) for x in pk[1:6]]
    for a in announced[:4]:
        assert (a.type, a.charset, a.decimals) == (FieldType.VAR_STRING, UTF8MB4, 0)
        assert a.column_length == MASKED_LENGTH and not a.flags & (0x0010 | 0x0080 | 0x0100)
    assert announced[1].flags & 0x0001  # NOT NULL kept
    assert announced[4].type == FieldType.DATETIME and not announced[4].flags & 0x0001  # NULL mask
    assert decode_text_row(pk[6], 5) == (b"*****", b"****-01-02", b"******", b"*", None)


# ----------------------------------------------------------------------------- binary protocol
def test_binary_rows_retyped_and_null_bitmap() -> None:
    types = [
        (FieldType.LONG, False),
        (FieldType.LONGLONG, True),
        (FieldType.DATETIME, False),
        (FieldType.NEWDECIMAL, False),
        (FieldType.VAR_STRING, False),
    ]
    cols = [
        col("id", FieldType.LONG, charset=63),
        col("card", FieldType.LONGLONG, charset=63, flags=0x0020),
        col("seen", FieldType.DATETIME, charset=63),
        col("balance", FieldType.NEWDECIMAL, charset=63, decimals=2),
        col("note"),
    ]
    import datetime as dt
    from decimal import Decimal

    rows = [
        encode_binary_row(
            (1, 4111111111111111, dt.datetime(2024, 1, 2, 3, 4, 5), Decimal("-7.25"), "hi"), types
        ),
        encode_binary_row((2, None, None, Decimal("0.00"), None), types),
    ]
    p = MaskingPlan(columns={1: LAST4, 2: NULL, 3: FULL})
    for step in (0, 5):
        _, out = rewrite(ResponseKind.EXECUTE, frames(result(cols, rows)), [pol(p)], step=step)
        pk = [x for _, x in packets_of(out)]
        announced = [ColumnDefinition41.parse(x) for x in pk[1:6]]
        new_types = [(a.type, bool(a.flags & 0x20)) for a in announced]
        assert new_types == [
            (FieldType.LONG, False),
            (FieldType.VAR_STRING, False),
            (FieldType.DATETIME, False),
            (FieldType.VAR_STRING, False),
            (FieldType.VAR_STRING, False),
        ]
        assert decode_binary_row(pk[6], new_types) == (1, "************1111", None, "*****", "hi")
        assert decode_binary_row(pk[7], new_types) == (2, None, None, "****", None)


# ----------------------------------------------------------------------------- row limits
@pytest.mark.parametrize("deprecate_eof", [True, False])
@pytest.mark.parametrize("step", [0, 2, 11])
def test_row_limit_cuts_each_result_and_renumbers(deprecate_eof: bool, step: int) -> None:
    cols = [col("g", FieldType.LONG, charset=63)]
    first = result(
        cols,
        [encode_text_row([str(i).encode()]) for i in range(10)],
        deprecate_eof=deprecate_eof,
        status=MORE,
        warnings=2,
    )
    second = result(cols, [encode_text_row([b"a"]), encode_text_row([b"b"])], deprecate_eof=deprecate_eof)
    data = frames(first + second)  # one response: sequence ids run on
    rw, out = rewrite(
        ResponseKind.QUERY, data, [pol(None, 3), pol(None, 3)], step=step, deprecate_eof=deprecate_eof
    )
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=deprecate_eof)
    sc.feed(out)
    assert [r.rows for r in sc.results] == [3, 2]
    pk = [p for _, p in packets_of(out)]
    term = pk[5] if deprecate_eof else pk[6]
    if deprecate_eof:
        ok = OKPacket.parse(term)
        assert (ok.warnings, ok.status) == (3, MORE)  # one warning more: dbward's
    else:
        eof = EOFPacket.parse(term)
        assert (eof.warnings, eof.status) == (3, MORE)
    assert [n.cut for n in rw.notes] == [True, False] and rw.cut


def test_row_limit_and_masks_together() -> None:
    cols = [col("phone")]
    rows = [encode_text_row([b"010-0000-000%d" % i]) for i in range(5)]
    _, out = rewrite(ResponseKind.QUERY, frames(result(cols, rows)), [pol(plan(c0=FULL), 2)])
    pk = [p for _, p in packets_of(out)]
    assert [decode_text_row(p, 1) for p in pk[2:4]] == [(b"*************",)] * 2
    assert OKPacket.parse(pk[4]).warnings == 1


def test_dropped_rows_larger_than_a_chunk_are_skipped_not_kept() -> None:
    cols = [col("doc")]
    rows = [encode_text_row([bytes([65 + i]) * 100_000]) for i in range(4)]
    data = frames(result(cols, rows))
    rw = ResponseRewriter(ResponseKind.QUERY, deprecate_eof=True, policies=[pol(None, 1)])
    out = bytearray()
    for i in range(0, len(data), 1000):
        out += rw.feed(data[i : i + 1000])
        assert len(rw._buf) < 101_000
    assert rw.done
    pk = [p for _, p in packets_of(bytes(out))]
    assert len(pk) == 4 and decode_text_row(pk[2], 1) == (b"A" * 100_000,)


def test_rows_of_16_mib_and_more_are_masked_and_reframed() -> None:
    big = b"y" * (MAX_FRAME + 10)
    cols = [col("doc"), col("phone")]
    rows = [encode_text_row([big, b"010-1111-2222"]), encode_text_row([b"small", b"x"])]
    data = frames(result(cols, rows))
    _, out = rewrite(ResponseKind.QUERY, data, [pol(plan(c1=FULL))], step=1 << 18)
    pk = [p for _, p in packets_of(out)]
    assert decode_text_row(pk[3], 2) == (big, b"*************")
    assert decode_text_row(pk[4], 2) == (b"small", b"*")
    # cut: a 16 MiB row past the limit is dropped
    _, out = rewrite(
        ResponseKind.QUERY, frames(result(cols, list(reversed(rows)))), [pol(None, 1)], step=1 << 18
    )
    assert [decode_text_row(p, 2) for _, p in packets_of(out)[3:4]] == [(b"small", b"x")]


# ----------------------------------------------------------------------------- errors, OK, infile
def test_errors_redacted_for_masked_statements_only() -> None:
    err = ERRPacket(
        error_code=1292, sql_state="22007", message="Truncated incorrect INTEGER value: '010-1234'"
    )
    data = frames([err.encode()])
    _, out = rewrite(ResponseKind.QUERY, data, [pol(plan(c0=FULL))])
    got = ERRPacket.parse(packets_of(out)[0][1])
    assert (got.error_code, got.sql_state) == (1292, "22007")
    assert "010-" not in got.message and "masking rule full" in got.message
    _, out = rewrite(ResponseKind.QUERY, data, [pol(None, 5)])
    assert out == data
    # an error in the middle of a masked result's rows (KILL QUERY, a failed conversion)
    cols = [col("phone")]
    packets = [*result(cols, [encode_text_row([b"010-1"])])[:-1], err.encode()]
    rw, out = rewrite(ResponseKind.QUERY, frames(packets), [pol(MaskingPlan(columns={0: FULL}))])
    assert "010-1234" not in out.decode("latin-1") and rw.notes[0].conditions


def test_ok_results_and_multi_statement_policies() -> None:
    cols = [col("phone")]
    packets = [OKPacket(affected_rows=2, status=MORE, warnings=1).encode()]
    packets += result(cols, [encode_text_row([b"010-1"])], status=MORE)
    packets += result(cols, [encode_text_row([b"010-2"])])
    rw, out = rewrite(ResponseKind.QUERY, frames(packets), [pol(), pol(plan(c0=FULL)), pol()])
    rows = [decode_text_row(p, 1) for _, p in packets_of(out) if p in (b"\x05010-2", b"\x05*****")]
    assert rows == [(b"*****",), (b"010-2",)]
    assert [n.policy_index for n in rw.notes] == [0, 1, 2]
    assert rw.notes[0].conditions and rw.notes[1].audit and rw.notes[2].audit is None


def test_call_results_use_the_last_policy() -> None:
    cols = [col("phone")]
    packets = result(cols, [encode_text_row([b"a"])], status=MORE)
    packets += result(cols, [encode_text_row([b"b"])], status=MORE)
    packets += [OKPacket(status=AUTO).encode()]
    p = MaskingPlan(columns={}, mask_all=True)
    rw, out = rewrite(ResponseKind.QUERY, frames(packets), [pol(p)])
    assert b"\x01a" not in out and b"\x01b" not in out
    assert [n.policy_index for n in rw.notes] == [0, 0, 0]


def test_local_infile_pauses_and_resumes() -> None:
    rw = ResponseRewriter(ResponseKind.QUERY, deprecate_eof=True, policies=[pol(None, 5)])
    assert rw.feed(encode_packet(b"\xfbdata.csv", 1)) == encode_packet(b"\xfbdata.csv", 1)
    assert rw.wants_infile
    rw.resume_after_infile()
    assert rw.feed(encode_packet(OKPacket(affected_rows=3).encode(), 4)) == encode_packet(
        OKPacket(affected_rows=3).encode(), 4
    )
    assert rw.done


def test_show_warnings_rows_appended_and_messages_replaced() -> None:
    cols = [col("Level"), col("Code", FieldType.LONG, charset=63), col("Message")]
    rows = [encode_text_row([b"Warning", b"1292", b"Truncated incorrect INTEGER value: '010-1234-5678'"])]
    extra = ((2, diagnostics_mask(MaskingPlan(columns={0: FULL}))),)
    policy = ResultPolicy(plan=None, limit=None, connection="maria", extra=extra)
    mine = (b"Warning", b"1105", b"dbward cut the result at 3 rows")
    _, out = rewrite(ResponseKind.QUERY, frames(result(cols, rows)), [policy], append_rows=(mine,))
    got = [decode_text_row(p, 3) for _, p in packets_of(out)[4:6]]
    assert got[1] == mine
    message = got[0][2] or b""
    assert got[0][:2] == (b"Warning", b"1292") and b"010-" not in message and b"masking rule full" in message


# ----------------------------------------------------------------------------- prepare and cursors
def test_prepare_announces_masked_types_and_cursor_fetches_are_masked() -> None:
    cols = [col("id", FieldType.LONG, charset=63), col("card", FieldType.LONGLONG, charset=63)]
    prep = StmtPrepareOK(statement_id=7, num_columns=2, num_params=1)
    packets = [
        prep.encode(),
        col("?").encode(),
        EOFPacket().encode(),
        *[c.encode() for c in cols],
        EOFPacket().encode(),
    ]
    p = MaskingPlan(columns={1: LAST4})
    _, out = rewrite(ResponseKind.PREPARE, frames(packets), [pol(p, 1)], deprecate_eof=False)
    pk = [x for _, x in packets_of(out)]
    assert pk[1] == col("?").encode()
    assert [ColumnDefinition41.parse(x).type for x in pk[3:5]] == [FieldType.LONG, FieldType.VAR_STRING]
    # COM_STMT_EXECUTE with a cursor: column definitions, then EOF with CURSOR_EXISTS
    cursor_eof = EOFPacket(status=AUTO | ServerStatus.CURSOR_EXISTS).encode()
    packets = [b"\x02", *[c.encode() for c in cols], cursor_eof]
    rw, out = rewrite(ResponseKind.EXECUTE, frames(packets), [pol(p, 1)], deprecate_eof=False)
    assert rw.cursor is not None
    types = [(FieldType.LONG, False), (FieldType.LONGLONG, True)]
    fetch = [encode_binary_row((i, 4111111111111111), types) for i in (1, 2)] + [
        EOFPacket(status=AUTO).encode()
    ]
    _, out = rewrite(
        ResponseKind.FETCH, frames(fetch), [rw.cursor.policy], deprecate_eof=False, cursor=rw.cursor
    )
    pk = [x for _, x in packets_of(out)]
    assert decode_binary_row(pk[0], [(FieldType.LONG, False), (FieldType.VAR_STRING, False)]) == (
        1,
        "************1111",
    )
    last = EOFPacket.parse(pk[1])
    assert last.warnings == 1 and last.status & ServerStatus.LAST_ROW_SENT  # the client stops fetching
    assert rw.cursor.rows == 1 and rw.cursor.cut


# ----------------------------------------------------------------------------- any split, garbage
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=30), st.integers(0, 6))
def test_any_split_gives_the_same_bytes(cuts: list[int], limit: int) -> None:
    cols = [col("id", FieldType.LONG, charset=63), col("phone")]
    rows = [encode_text_row([str(i).encode(), b"010-%04d-5678" % i]) for i in range(6)]
    data = frames(result(cols, rows, status=MORE) + result(cols, rows[:2]))
    policies = [pol(plan(c1=FULL), limit), pol(None, limit)]
    _, whole = rewrite(ResponseKind.QUERY, data, policies)
    rw = ResponseRewriter(ResponseKind.QUERY, deprecate_eof=True, policies=policies)
    out = bytearray()
    pos = 0
    for c in cuts:
        out += rw.feed(data[pos : pos + c])
        pos += c
    out += rw.feed(data[pos:]) if pos < len(data) else b""
    assert rw.done and bytes(out) == whole


@given(st.binary(min_size=1, max_size=200))
def test_garbage_raises_protocol_violation_only(data: bytes) -> None:
    rw = ResponseRewriter(ResponseKind.EXECUTE, deprecate_eof=True, policies=[pol(plan(c0=FULL), 2)])
    try:
        rw.feed(data)
    except ProtocolViolation:
        pass
