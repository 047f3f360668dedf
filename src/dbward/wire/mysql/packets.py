"""Packet framing and the basic field encodings of the MySQL protocol.

Every packet travels in frames (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html)::

    +------------------+-------------+------------------------+
    | payload_length 3 | sequence 1  | payload (length bytes) |
    +------------------+-------------+------------------------+

A payload of 0xFFFFFF bytes or more is split: every full frame of 0xFFFFFF bytes is followed
by another frame, and the packet ends with the first shorter frame (possibly empty). Each
frame takes the next sequence id (mod 256).

:class:`PacketDecoder` turns a byte stream into whole packets; :func:`encode_packet` does the
reverse. :class:`Reader` and :class:`Writer` read and write the field types of the protocol
(fixed integers, length-encoded integers and strings, NUL-terminated strings). Counterparts:
``messages.py`` builds typed messages on top; ``scanner.py`` follows a response frame by
frame without assembling it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbward.wire.mysql.constants import MAX_FRAME


class ProtocolViolation(Exception):
    """The bytes do not follow the MySQL protocol (truncated, overlong, or out of order)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One logical packet: the sequence id of its first frame and the joined payload."""

    seq: int
    payload: bytes

    @property
    def last_seq(self) -> int:
        """Sequence id of the packet's last frame (the reply continues from it)."""
        return (self.seq + len(self.payload) // MAX_FRAME) & 0xFF


def encode_packet(payload: bytes, seq: int) -> bytes:
    """Frame ``payload`` starting at sequence id ``seq``, splitting at 16 MiB."""
    if len(payload) < MAX_FRAME:
        n = len(payload)
        return bytes((n & 0xFF, (n >> 8) & 0xFF, n >> 16, seq & 0xFF)) + payload
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_FRAME]
        n = len(chunk)
        out += bytes((n & 0xFF, (n >> 8) & 0xFF, n >> 16, seq & 0xFF))
        out += chunk
        seq += 1
        pos += n
        if n < MAX_FRAME:
            return bytes(out)


def frame_header(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(payload length, sequence id) of the frame header at ``pos``."""
    return data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16), data[pos + 3]


class PacketDecoder:
    """Incremental decoder: feed bytes, take whole packets.

    ``max_packet`` bounds the memory one packet may take; a longer packet is a
    :class:`ProtocolViolation` (the session ends, the process does not).
    """

    def __init__(self, max_packet: int = 1 << 30) -> None:
        self._buf = bytearray()
        self._max = max_packet

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_rest(self) -> bytes:
        """The bytes after the last whole packet (handed over when the transport changes)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def next_packet(self) -> Packet | None:
        """The next whole packet, or None when more bytes are needed."""
        buf = self._buf
        pos = 0
        parts: list[bytes] = []
        first_seq = -1
        expect = -1
        total = 0
        while True:
            if len(buf) - pos < 4:
                return None
            length, seq = frame_header(buf, pos)
            if first_seq < 0:
                first_seq = seq
            elif seq != expect:
                raise ProtocolViolation(f"frame sequence id {seq} where {expect} was expected")
            total += length
            if total > self._max:
                raise ProtocolViolation(f"packet longer than the {self._max} bytes allowed")
            if len(buf) - pos - 4 < length:
                return None
            parts.append(bytes(buf[pos + 4 : pos + 4 + length]))
            pos += 4 + length
            if length < MAX_FRAME:
                del buf[:pos]
                return Packet(first_seq, parts[0] if len(parts) == 1 else b"".join(parts))
            expect = (seq + 1) & 0xFF


# --------------------------------------------------------------------------- field codecs
class Reader:
    """Reads protocol fields from one payload; running past the end is a ProtocolViolation."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolViolation(
                f"packet truncated: needed {n} bytes at offset {self.pos} of {len(self.data)}"
            )

    def int1(self) -> int:
        self._need(1)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def int_n(self, n: int) -> int:
        self._need(n)
        v = int.from_bytes(self.data[self.pos : self.pos + n], "little")
        self.pos += n
        return v

    def int2(self) -> int:
        return self.int_n(2)

    def int3(self) -> int:
        return self.int_n(3)

    def int4(self) -> int:
        return self.int_n(4)

    def int8(self) -> int:
        return self.int_n(8)

    def lenenc_int(self) -> int | None:
        """Length-encoded integer; None for the NULL marker 0xFB."""
        first = self.int1()
        if first < 0xFB:
            return first
        if first == 0xFB:
            return None
        if first == 0xFC:
            return self.int_n(2)
        if first == 0xFD:
            return self.int_n(3)
        if first == 0xFE:
            return self.int_n(8)
        raise ProtocolViolation("0xFF is not a valid length-encoded integer")

    def lenenc_int_nn(self) -> int:
        v = self.lenenc_int()
        if v is None:
            raise ProtocolViolation("NULL where a length was expected")
        return v

    def bytes_n(self, n: int) -> bytes:
        self._need(n)
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def lenenc_bytes(self) -> bytes | None:
        n = self.lenenc_int()
        if n is None:
            return None
        return self.bytes_n(n)

    def lenenc_bytes_nn(self) -> bytes:
        return self.bytes_n(self.lenenc_int_nn())

    def nul_bytes(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation("NUL-terminated string runs past the end of the packet")
        v = self.data[self.pos : end]
        self.pos = end + 1
        return v

    def rest(self) -> bytes:
        v = self.data[self.pos :]
        self.pos = len(self.data)
        return v


def lenenc_int(v: int) -> bytes:
    if v < 0:
        raise ValueError("length-encoded integers are unsigned")
    if v < 0xFB:
        return bytes((v,))
    if v < 1 << 16:
        return b"\xfc" + v.to_bytes(2, "little")
    if v < 1 << 24:
        return b"\xfd" + v.to_bytes(3, "little")
    return b"\xfe" + v.to_bytes(8, "little")


def lenenc_bytes(v: bytes) -> bytes:
    return lenenc_int(len(v)) + v
