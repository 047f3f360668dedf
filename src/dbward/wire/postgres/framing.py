"""Splitting a PostgreSQL byte stream into frames without decoding them.

A frame is ``Byte1 type | Int32 length | body`` (length counts itself, not the type byte):
https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS

The relay reads large chunks (hundreds of KiB) and only looks at frame headers, so a result
set of a million DataRows is relayed in a few hundred writes instead of a million awaits.
Frames the engine does not need (DataRow, RowDescription, CopyData, ...) are never decoded.
Counterpart: ``messages.py`` decodes the few frames the engine does need.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dbward.wire.postgres.messages import MAX_MESSAGE, WireError

_HDR = struct.Struct("!cI")
_LEN = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame within a buffer: ``buf[start:end]`` is the whole message, header included."""

    type: bytes
    start: int
    end: int

    @property
    def body_start(self) -> int:
        return self.start + 5


def scan(buf: bytes | bytearray | memoryview, pos: int = 0) -> Iterator[Frame]:
    """Yield the complete frames in ``buf`` from ``pos``; stop at the first incomplete one.

    The caller learns where the incomplete tail starts from the last frame's ``end`` (or
    ``pos`` when nothing was complete). Raises :class:`WireError` for an impossible length.
    """
    n = len(buf)
    while n - pos >= 5:
        t, length = _HDR.unpack_from(buf, pos)
        if length < 4 or length > MAX_MESSAGE:
            raise WireError(f"message type {t!r} declares an impossible length {length}")
        end = pos + 1 + length
        if end > n:
            return
        yield Frame(t, pos, end)
        pos = end


def header(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[bytes, int] | None:
    """(type, total frame size) of the frame starting at ``pos``, or None when fewer than 5 bytes."""
    if len(buf) - pos < 5:
        return None
    t, length = _HDR.unpack_from(buf, pos)
    if length < 4 or length > MAX_MESSAGE:
        raise WireError(f"message type {t!r} declares an impossible length {length}")
    return t, 1 + length


def startup_length(buf: bytes | bytearray) -> int | None:
    """Length of the startup-phase packet at the start of ``buf`` (no type byte), if known."""
    if len(buf) < 4:
        return None
    return int(_LEN.unpack_from(buf, 0)[0])


def data_rows_py(
    buf: bytes | bytearray, pos: int, end: int, max_length: int = MAX_MESSAGE
) -> tuple[int, int]:
    """(position after, count) of the complete DataRow frames that follow each other in
    ``buf[pos:end]`` from ``pos``.

    Stops, without consuming it, at a frame of another type, an incomplete frame, a length
    below 4 or above ``max_length``, or fewer than 5 bytes before ``end``: the caller looks at
    that frame itself. This is the reference implementation of the C accelerator
    (``dbward/wire/_speedups.c``), which :data:`data_rows` is when it was built."""
    end = min(end, len(buf))
    pos = max(pos, 0)
    rows = 0
    unpack = _HDR.unpack_from
    while end - pos >= 5:
        t, length = unpack(buf, pos)
        if t != b"D" or length < 4 or length > max_length or length >= end - pos:
            break
        pos += 1 + length
        rows += 1
    return pos, rows


#: the walk the relay uses: the C accelerator when it was built, else the reference
data_rows: Callable[[bytes | bytearray, int, int, int], tuple[int, int]] = data_rows_py
#: "c" or "python": which implementation :data:`data_rows` is (``dbward doctor`` reports it)
ACCELERATED = "python"
try:
    from dbward.wire import _speedups
except ImportError:  # not built (no C compiler at install time): the reference is used
    pass
else:
    data_rows = _speedups.data_rows
    ACCELERATED = "c"
