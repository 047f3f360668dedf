"""ResponseScanner transcripts: where a response ends, rows counted, errors, any byte split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.wire.mysql.constants import MAX_FRAME, FieldType, ServerStatus
from dbward.wire.mysql.messages import ColumnDefinition41, EOFPacket, ERRPacket, OKPacket, StmtPrepareOK
from dbward.wire.mysql.packets import ProtocolViolation, encode_packet, lenenc_int
from dbward.wire.mysql.rows import encode_binary_row, encode_text_row
from dbward.wire.mysql.scanner import ResponseKind, ResponseScanner

COL = ColumnDefinition41(
    schema="s",
    table="t",
    org_table="t",
    name="c",
    org_name="c",
    charset=45,
    column_length=10,
    type=FieldType.VAR_STRING,
    flags=0,
    decimals=0,
)
AUTO = int(ServerStatus.AUTOCOMMIT)
MORE = int(ServerStatus.AUTOCOMMIT | ServerStatus.MORE_RESULTS_EXISTS)


def result_set(
    rows: list[list[bytes | None]], *, deprecate_eof: bool, status: int = AUTO, seq: int = 1
) -> bytes:
    """A text result set exactly as a server frames it (one frame per packet)."""
    ncols = len(rows[0]) if rows else 1
    packets = [lenenc_int(ncols)] + [COL.encode()] * ncols
    if not deprecate_eof:
        packets.append(EOFPacket(status=AUTO).encode())
    packets += [encode_text_row(r) for r in rows]
    if deprecate_eof:
        packets.append(OKPacket(header=0xFE, status=status).encode())
    else:
        packets.append(EOFPacket(status=status).encode())
    return b"".join(encode_packet(p, seq + i) for i, p in enumerate(packets))


def feed_all(scanner: ResponseScanner, data: bytes, step: int) -> None:
    for i in range(0, len(data), step):
        assert not scanner.done
        scanner.feed(data[i : i + step])


@pytest.mark.parametrize("deprecate_eof", [True, False])
def test_text_result_set_ends_at_terminator(deprecate_eof: bool) -> None:
    rows = [[b"a", None], [b"\xfe" + b"x" * 8, b""], [b"row3", b"3"]]
    data = result_set(rows, deprecate_eof=deprecate_eof)
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=deprecate_eof)
    sc.feed(data)
    assert sc.done and sc.results[0].rows == 3 and sc.results[0].error is None
    assert sc.bytes_seen == len(data)


def test_multi_results_ok_then_set_then_error() -> None:
    data = encode_packet(OKPacket(affected_rows=2, status=MORE).encode(), 1)
    data += result_set([[b"1"]], deprecate_eof=True, status=MORE)
    data += encode_packet(ERRPacket(error_code=1146, sql_state="42S02", message="no table").encode(), 1)
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=True)
    feed_all(sc, data, 3)
    assert sc.done
    assert [(r.affected, r.rows, r.error.error_code if r.error else None) for r in sc.results] == [
        (2, None, None),
        (None, 1, None),
        (None, None, 1146),
    ]


def test_error_in_the_middle_of_rows() -> None:
    data = result_set([[b"1"], [b"2"]], deprecate_eof=True)[:-11]  # drop the terminator
    data += encode_packet(ERRPacket(error_code=1317, sql_state="70100", message="interrupted").encode(), 9)
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=True)
    sc.feed(data)
    assert sc.done and sc.results[-1].error is not None and sc.results[-1].rows == 2


def test_row_over_16_mib_is_skipped_not_buffered() -> None:
    big = b"y" * (MAX_FRAME + 10)
    data = encode_packet(b"\x01", 1) + encode_packet(COL.encode(), 2)
    data += encode_packet(encode_text_row([big]), 3)
    data += encode_packet(OKPacket(header=0xFE, status=AUTO).encode(), 5)
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=True)
    for i in range(0, len(data), 1 << 18):
        sc.feed(data[i : i + (1 << 18)])
        assert len(sc._pending) < 64  # only partial headers are ever held
    assert sc.done and sc.results[0].rows == 1


def test_prepare_response_and_binary_execute() -> None:
    prep = StmtPrepareOK(statement_id=3, num_columns=2, num_params=1)
    packets = [
        prep.encode(),
        COL.encode(),
        EOFPacket().encode(),
        COL.encode(),
        COL.encode(),
        EOFPacket().encode(),
    ]
    data = b"".join(encode_packet(p, i + 1) for i, p in enumerate(packets))
    sc = ResponseScanner(ResponseKind.PREPARE, deprecate_eof=False)
    feed_all(sc, data, 5)
    assert sc.done and sc.prepare_ok == prep
    types = [(FieldType.LONG, False), (FieldType.VAR_STRING, False)]
    rows = [encode_binary_row((1, "a"), types), encode_binary_row((None, None), types)]
    packets = [b"\x02", COL.encode(), COL.encode(), *rows, OKPacket(header=0xFE, status=AUTO).encode()]
    data = b"".join(encode_packet(p, i + 1) for i, p in enumerate(packets))
    sc = ResponseScanner(ResponseKind.EXECUTE, deprecate_eof=True)
    sc.feed(data)
    assert sc.done and sc.results[0].rows == 2


def test_local_infile_request_pauses_the_response() -> None:
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=True)
    sc.feed(encode_packet(b"\xfb/etc/passwd", 1))
    assert sc.wants_infile and sc.infile_name == b"/etc/passwd"
    with pytest.raises(ProtocolViolation):
        sc.feed(encode_packet(OKPacket().encode(), 4))
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=True)
    sc.feed(encode_packet(b"\xfbf", 1))
    sc.resume_after_infile()
    sc.feed(encode_packet(OKPacket(affected_rows=5).encode(), 4))
    assert sc.done and sc.results[0].affected == 5


def test_field_list_and_single() -> None:
    data = encode_packet(COL.encode(), 1) + encode_packet(EOFPacket().encode(), 2)
    sc = ResponseScanner(ResponseKind.FIELD_LIST, deprecate_eof=True)
    sc.feed(data)
    assert sc.done and sc.results[0].rows == 1
    sc = ResponseScanner(ResponseKind.SINGLE, deprecate_eof=True)
    sc.feed(encode_packet(b"Uptime: 5  Threads: 1", 1))
    assert sc.done


@settings(max_examples=150)
@given(
    st.lists(st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=2, max_size=2), max_size=20),
    st.booleans(),
    st.integers(1, 97),
)
def test_any_split_gives_the_same_answer(
    rows: list[list[bytes | None]], deprecate_eof: bool, step: int
) -> None:
    data = result_set(rows, deprecate_eof=deprecate_eof)
    sc = ResponseScanner(ResponseKind.QUERY, deprecate_eof=deprecate_eof)
    feed_all(sc, data, step)
    assert sc.done and sc.results[0].rows == len(rows)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(list(ResponseKind)), st.booleans())
def test_garbage_raises_only_protocol_violation(data: bytes, kind: ResponseKind, deprecate_eof: bool) -> None:
    sc = ResponseScanner(kind, deprecate_eof=deprecate_eof)
    try:
        sc.feed(data)
    except ProtocolViolation:
        pass
