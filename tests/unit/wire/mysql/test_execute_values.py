"""``execute_values`` (the engine's hot-path reading of COM_STMT_EXECUTE) agrees with
``ComStmtExecute.parse`` on every packet: the same values, types and errors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.wire.mysql.constants import FieldType
from dbward.wire.mysql.messages import ComStmtExecute, execute_values
from dbward.wire.mysql.packets import ProtocolViolation
from dbward.wire.mysql.rows import encode_binary_value

_VALUES: dict[int, Any] = {
    FieldType.TINY: st.integers(0, 127),
    FieldType.SHORT: st.integers(-(2**15), 2**15 - 1),
    FieldType.LONG: st.integers(-(2**31), 2**31 - 1),
    FieldType.LONGLONG: st.integers(-(2**63), 2**63 - 1),
    FieldType.DOUBLE: st.floats(allow_nan=False),
    FieldType.VAR_STRING: st.text(max_size=300).map(str.encode) | st.binary(max_size=300),
    FieldType.BLOB: st.binary(max_size=70000),
    FieldType.DATE: st.dates(min_value=dt.date(1, 1, 1)),
    FieldType.NEWDECIMAL: st.decimals(allow_nan=False, allow_infinity=False, places=2).map(Decimal),
    FieldType.NULL: st.none(),
}


@st.composite
def _packets(draw: st.DrawFn) -> tuple[bytes, int, Any, frozenset[int]]:
    n = draw(st.integers(0, 9))
    types = [(draw(st.sampled_from(sorted(_VALUES))), draw(st.booleans())) for _ in range(n)]
    types = [(t, u and t in (FieldType.TINY,)) for t, u in types]
    nulls = [draw(st.booleans()) and draw(st.booleans()) for _ in range(n)]
    long_data = frozenset(i for i in range(n) if draw(st.integers(0, 9)) == 0)
    bitmap = bytearray((n + 7) // 8)
    body = b""
    for i, (t, u) in enumerate(types):
        if nulls[i]:
            bitmap[i // 8] |= 1 << (i % 8)
        elif i not in long_data and t != FieldType.NULL:
            body += encode_binary_value(draw(_VALUES[t]), t, u)
    bound = draw(st.booleans())
    pkt = b"\x17" + (5).to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little")
    if n:
        type_bytes = b"".join(bytes((t, 0x80 if u else 0)) for t, u in types)
        pkt += bytes(bitmap) + (b"\x01" + type_bytes if bound else b"\x00") + body
    if draw(st.booleans()) and draw(st.booleans()):
        pkt = pkt[: draw(st.integers(0, len(pkt)))]
    previous = draw(st.sampled_from([None, tuple((int(t), u) for t, u in types)]))
    return pkt, n, previous, long_data


def _parse(pkt: bytes, n: int, previous: Any, long_data: frozenset[int]) -> Any:
    try:
        ex = ComStmtExecute.parse(pkt, n, previous, long_data)
    except ProtocolViolation:
        return "refused"
    return tuple("<long>" if p.long_data else p.value for p in ex.params), ex.types


def _fast(pkt: bytes, n: int, previous: Any, long_data: frozenset[int]) -> Any:
    try:
        return execute_values(pkt, n, previous, long_data, "<long>")
    except ProtocolViolation:
        return "refused"


@settings(max_examples=400, deadline=None)
@given(_packets())
def test_execute_values_agrees_with_the_message_parser(case: tuple[bytes, int, Any, frozenset[int]]) -> None:
    assert _fast(*case) == _parse(*case)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 5))
def test_execute_values_refuses_garbage_as_the_parser_does(data: bytes, n: int) -> None:
    pkt = b"\x17" + data
    assert _fast(pkt, n, None, frozenset()) == _parse(pkt, n, None, frozenset())
