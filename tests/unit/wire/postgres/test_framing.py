"""The DataRow walk of the relay (``framing.data_rows``): the C accelerator and the Python
reference agree on every input, well-formed or not, and stop exactly where the caller
must look for itself."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.wire.postgres import framing
from dbward.wire.postgres.framing import data_rows_py
from dbward.wire.postgres.messages import MAX_MESSAGE

try:
    from dbward.wire import _speedups
except ImportError:  # pragma: no cover - the install step builds it on CI's machine
    _speedups = None  # type: ignore[assignment]


def frame(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!I", 4 + len(body)) + body


def row(*values: bytes | None) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return frame(b"D", body)


def implementations() -> list[object]:
    impls: list[object] = [data_rows_py]
    if _speedups is not None:
        impls.append(_speedups.data_rows)
    return impls


def test_the_accelerator_is_built_where_a_compiler_is() -> None:
    """make install builds it (gcc and the Python headers are on every machine of ours), so
    the relay uses it; without it dbward still works, only slower."""
    assert _speedups is not None, "dbward.wire._speedups was not built: is gcc installed?"
    assert framing.data_rows is _speedups.data_rows and framing.ACCELERATED == "c"


@pytest.mark.parametrize("walk", implementations())
def test_a_run_of_rows_is_skipped_up_to_the_next_other_frame(walk: object) -> None:
    rows = row(b"1", b"alice") + row(None, b"") + row()
    complete = frame(b"C", b"SELECT 3\x00")
    buf = frame(b"T", b"\x00\x00") + rows + complete + frame(b"Z", b"I")
    start = len(frame(b"T", b"\x00\x00"))
    assert walk(buf, start, len(buf), MAX_MESSAGE) == (start + len(rows), 3)  # type: ignore[operator]
    assert walk(buf, 0, len(buf), MAX_MESSAGE) == (0, 0)  # type: ignore[operator]  # not a DataRow
    # stops before an incomplete row, and before fewer than 5 bytes
    cut = start + len(row(b"1", b"alice")) + 3
    assert walk(buf, start, cut, MAX_MESSAGE) == (start + len(row(b"1", b"alice")), 1)  # type: ignore[operator]
    # an impossible length is left for the caller to refuse
    bad = b"D" + struct.pack("!I", 3) + b"xx"
    assert walk(row(b"a") + bad, 0, 100, MAX_MESSAGE) == (len(row(b"a")), 1)  # type: ignore[operator]
    big = b"D" + struct.pack("!I", 1000) + b"x" * 996
    assert walk(big, 0, len(big), 999) == (0, 0)  # type: ignore[operator]
    # bytearray and an end beyond the buffer
    assert walk(bytearray(rows), 0, 10**9, MAX_MESSAGE) == (len(rows), 3)  # type: ignore[operator]


@settings(max_examples=400, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.sampled_from([b"D", b"D", b"D", b"C", b"d", b"\x00"]), st.binary(max_size=40)),
        max_size=12,
    ),
    garbage=st.binary(max_size=12),
    start=st.integers(min_value=-3, max_value=30),
    cut=st.integers(min_value=0, max_value=40),
    max_length=st.sampled_from([MAX_MESSAGE, 20, 4, 0]),
)
def test_the_accelerator_agrees_with_the_reference(
    frames: list[tuple[bytes, bytes]], garbage: bytes, start: int, cut: int, max_length: int
) -> None:
    if _speedups is None:
        pytest.skip("the accelerator is not built")
    buf = b"".join(frame(t, body) for t, body in frames) + garbage
    end = max(len(buf) - cut, 0)
    assert _speedups.data_rows(buf, start, end, max_length) == data_rows_py(buf, start, end, max_length)
    assert _speedups.data_rows(bytearray(buf), start, end, max_length) == data_rows_py(
        bytearray(buf), start, end, max_length
    )


def test_the_accelerator_refuses_what_is_not_a_buffer() -> None:
    if _speedups is None:
        pytest.skip("the accelerator is not built")
    with pytest.raises(TypeError):
        _speedups.data_rows("text", 0, 4, MAX_MESSAGE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.data_rows(b"D", 0)  # type: ignore[call-arg]
