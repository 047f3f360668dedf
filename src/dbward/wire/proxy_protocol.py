"""PROXY protocol v1 (text) and v2 (binary) header parsing, sans-IO.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

v1:  "PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n" (at most 107 bytes), or "PROXY UNKNOWN..."
v2:  12-byte signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n
     +------+------+--------+------------------------+
     | 0x2X | fam  | len(2) | addresses + TLVs (len)  |
     +------+------+--------+------------------------+
     ver/cmd: high nibble 2 (version), low nibble 0 LOCAL / 1 PROXY
     fam: 0x11 TCP/IPv4 (12 bytes of addresses), 0x21 TCP/IPv6 (36 bytes), 0x00 UNSPEC
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    src_host: str | None  # None for LOCAL / UNKNOWN: use the socket peer
    src_port: int | None
    dst_host: str | None
    dst_port: int | None
    length: int  # bytes the header occupied


def needed(data: bytes) -> int | None:
    """How many bytes in total the header needs, if known from ``data``; None: need more."""
    if len(data) >= 16 and data.startswith(V2_SIGNATURE):
        return 16 + int(struct.unpack_from("!H", data, 14)[0])
    idx = data.find(b"\r\n")
    if data.startswith(V1_PREFIX[: len(data)]) and idx >= 0:
        return idx + 2
    return None


def parse(data: bytes) -> ProxyHeader:
    """Parse a complete header at the start of ``data`` (may be followed by payload)."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyHeaderError("the connection did not start with a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader:
    end = data.find(b"\r\n")
    if end < 0 or end + 2 > V1_MAX:
        raise ProxyHeaderError("PROXY v1 header is not terminated within 107 bytes")
    try:
        parts = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError as exc:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from exc
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None, None, None, end + 2)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 header has the wrong number of fields or protocol")
    _, proto, src, dst, sport, dport = parts
    try:
        s = ipaddress.ip_address(src)
        d = ipaddress.ip_address(dst)
        sp, dp = int(sport), int(dport)
    except ValueError as exc:
        raise ProxyHeaderError("PROXY v1 header has a bad address or port") from exc
    if (proto == "TCP4") != (s.version == 4) or not (0 <= sp <= 65535 and 0 <= dp <= 65535):
        raise ProxyHeaderError("PROXY v1 header address family or port is inconsistent")
    return ProxyHeader(1, str(s), sp, str(d), dp, end + 2)


def _parse_v2(data: bytes) -> ProxyHeader:
    if len(data) < 16:
        raise ProxyHeaderError("PROXY v2 header is truncated")
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError("PROXY v2 header has an unsupported version")
    total = 16 + length
    if len(data) < total:
        raise ProxyHeaderError("PROXY v2 header is truncated")
    cmd = ver_cmd & 0x0F
    if cmd == 0:  # LOCAL: health check from the balancer itself
        return ProxyHeader(2, None, None, None, None, total)
    if cmd != 1:
        raise ProxyHeaderError("PROXY v2 header has an unknown command")
    body = data[16:total]
    if fam == 0x11:
        if length < 12:
            raise ProxyHeaderError("PROXY v2 IPv4 address block is too short")
        src, dst, sp, dp = struct.unpack_from("!4s4sHH", body)
        return ProxyHeader(2, str(ipaddress.IPv4Address(src)), sp, str(ipaddress.IPv4Address(dst)), dp, total)
    if fam == 0x21:
        if length < 36:
            raise ProxyHeaderError("PROXY v2 IPv6 address block is too short")
        src, dst, sp, dp = struct.unpack_from("!16s16sHH", body)
        return ProxyHeader(2, str(ipaddress.IPv6Address(src)), sp, str(ipaddress.IPv6Address(dst)), dp, total)
    if fam == 0x00:
        return ProxyHeader(2, None, None, None, None, total)
    raise ProxyHeaderError("PROXY v2 header has an unsupported address family (only TCP over IPv4/IPv6)")


def build_v2(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """Encode a PROXY v2 header (used by tests and the benchmark's load balancer stand-in)."""
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version == 4:
        body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x11
    else:
        body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x21
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, fam, len(body)) + body


def build_v1(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    proto = "TCP4" if ipaddress.ip_address(src[0]).version == 4 else "TCP6"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()
