"""PROXY protocol v1/v2 header parsing (wire/proxy_protocol.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbward.wire import proxy_protocol as pp


def test_v2_ipv4_and_ipv6_round_trip() -> None:
    h = pp.build_v2(("203.0.113.7", 51000), ("10.0.0.5", 5432)) + b"payload"
    assert pp.needed(h) == len(h) - len(b"payload")
    hdr = pp.parse(h)
    assert (hdr.version, hdr.src_host, hdr.src_port, hdr.dst_host, hdr.dst_port) == (
        2,
        "203.0.113.7",
        51000,
        "10.0.0.5",
        5432,
    )
    assert h[hdr.length :] == b"payload"
    h6 = pp.build_v2(("2001:db8::7", 1), ("2001:db8::1", 3306))
    assert pp.parse(h6).src_host == "2001:db8::7"


def test_v1() -> None:
    h = pp.build_v1(("198.51.100.2", 40000), ("10.0.0.5", 3306))
    hdr = pp.parse(h + b"rest")
    assert (hdr.version, hdr.src_host, hdr.src_port) == (1, "198.51.100.2", 40000)
    assert pp.parse(b"PROXY UNKNOWN\r\n").src_host is None


def test_v2_local_command_keeps_the_peer() -> None:
    local = pp.V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
    assert pp.parse(local).src_host is None


@pytest.mark.parametrize(
    "bad",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4\r\n",
        b"PROXY TCP4 1.2.3.999 10.0.0.1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 10.0.0.1 1 99999\r\n",
        pp.V2_SIGNATURE + bytes([0x21, 0x11, 0x00, 0x04]) + b"\x01\x02\x03\x04",
        pp.V2_SIGNATURE + bytes([0x31, 0x11, 0x00, 0x00]),
        pp.V2_SIGNATURE + bytes([0x21, 0x11, 0x00, 0x0C]),
    ],
)
def test_bad_headers_are_refused(bad: bytes) -> None:
    with pytest.raises(pp.ProxyHeaderError):
        pp.parse(bad)


@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_else(data: bytes) -> None:
    try:
        pp.parse(data)
    except pp.ProxyHeaderError:
        pass
    pp.needed(data)


def test_a_second_process_cannot_share_a_listening_port() -> None:
    """SO_REUSEPORT would let an unrelated dbward bind the same port and silently take half
    the clients; the port claim makes the second one fail with a sentence saying why."""
    import subprocess
    import sys

    from dbward.proxy.server import bind_listening_socket

    sock, claim = bind_listening_socket("127.0.0.1", 0, "connection pg")
    port = sock.getsockname()[1]
    try:
        code = (
            "from dbward.proxy.server import bind_listening_socket\n"
            f"bind_listening_socket('127.0.0.1', {port}, 'connection pg')\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode != 0
        assert "another dbward process already listens there" in out.stderr
    finally:
        sock.close()
        if claim is not None:
            claim.close()
    # once the first one is gone, the port is free again
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from dbward.proxy.server import bind_listening_socket\nbind_listening_socket('127.0.0.1', {port}, 'x')",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
