"""Codec transcripts and round trips for the PostgreSQL messages (no sockets)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbward.wire.postgres import messages as m
from dbward.wire.postgres.framing import Frame, header, scan

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
values = st.one_of(st.none(), st.binary(max_size=40))


def test_startup_transcript() -> None:
    # bytes as libpq 15 sends them for `psql -U alice -d db`
    raw = (
        b"\x00\x00\x00\x24\x00\x03\x00\x00user\x00alice\x00database\x00db\x00client_encoding\x00UTF8\x00\x00"
    )
    raw = struct.pack("!I", len(raw)) + raw[4:]
    msg = m.decode_startup(raw)
    assert msg == m.StartupMessage(
        m.PROTOCOL_3_0, {"user": "alice", "database": "db", "client_encoding": "UTF8"}
    )
    assert msg.encode() == raw
    assert m.decode_startup(b"\x00\x00\x00\x08\x04\xd2\x16\x2f") == m.SSLRequest()
    assert m.decode_startup(b"\x00\x00\x00\x08\x04\xd2\x16\x30") == m.GSSENCRequest()
    cancel = m.CancelRequest(1234, b"\x01\x02\x03\x04")
    assert cancel.encode() == b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x04\xd2\x01\x02\x03\x04"
    assert m.decode_startup(cancel.encode()) == cancel
    long_key = m.CancelRequest(7, bytes(range(32)))  # protocol 3.2 keys
    assert m.decode_startup(long_key.encode()) == long_key
    v32 = m.StartupMessage(m.PROTOCOL_3_2, {"user": "u"})
    assert m.decode_startup(v32.encode()).minor == 2  # type: ignore[union-attr]


def test_extended_query_transcript() -> None:
    # Parse/Bind/Describe/Execute/Sync as psycopg sends `SELECT $1::int` with one text parameter
    stream = (
        m.Parse("", "SELECT $1::int", (23,)).encode()
        + m.Bind("", "", (0,), (b"42",), (1,)).encode()
        + m.Describe("P", "").encode()
        + m.Execute("", 0).encode()
        + m.Sync().encode()
    )
    assert stream.startswith(b"P\x00\x00\x00\x1a\x00SELECT $1::int\x00\x00\x01\x00\x00\x00\x17")
    frames = list(scan(stream))
    assert [f.type for f in frames] == [b"P", b"B", b"D", b"E", b"S"]
    decoded = [m.decode_frontend(f.type[0], stream[f.body_start : f.end]) for f in frames]
    assert decoded[1] == m.Bind("", "", (0,), (b"42",), (1,))
    assert decoded[3] == m.Execute("", 0)


def test_backend_transcript() -> None:
    stream = (
        m.ParseComplete().encode()
        + m.BindComplete().encode()
        + m.DataRow((b"42", None)).encode()
        + m.CommandComplete("SELECT 1").encode()
        + m.ReadyForQuery("I").encode()
    )
    assert stream == (
        b"1\x00\x00\x00\x04"
        b"2\x00\x00\x00\x04"
        b"D\x00\x00\x00\x10\x00\x02\x00\x00\x00\x0242\xff\xff\xff\xff"
        b"C\x00\x00\x00\x0dSELECT 1\x00"
        b"Z\x00\x00\x00\x05I"
    )
    err = m.ErrorResponse.build("42501", "denied: no", hint="ask")
    assert m.decode_backend(ord("E"), err.encode()[5:]) == err
    assert err.sqlstate == "42501" and err.message == "denied: no" and err.get("H") == "ask"
    assert m.CommandComplete("INSERT 0 5").counts() == (None, 5)
    assert m.CommandComplete("SELECT 7").counts() == (7, None)
    assert m.CommandComplete("CREATE TABLE").counts() == (None, None)
    auth = m.Authentication.sasl("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS")
    assert m.decode_backend(ord("R"), auth.encode()[5:]).mechanisms() == (  # type: ignore[union-attr]
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
    )


frontend = st.one_of(
    st.builds(m.Query, names),
    st.builds(m.Parse, names, names, st.tuples(st.integers(0, 2**32 - 1))),
    st.builds(
        m.Bind,
        names,
        names,
        st.lists(st.integers(0, 1), max_size=3).map(tuple),
        st.lists(values, max_size=4).map(tuple),
        st.lists(st.integers(0, 1), max_size=3).map(tuple),
    ),
    st.builds(m.Describe, st.sampled_from("SP"), names),
    st.builds(m.Close, st.sampled_from("SP"), names),
    st.builds(m.Execute, names, st.integers(0, 2**31 - 1)),
    st.just(m.Sync()),
    st.just(m.Flush()),
    st.just(m.Terminate()),
    st.just(m.CopyDone()),
    st.builds(m.CopyData, st.binary(max_size=50)),
    st.builds(m.CopyFail, names),
    st.builds(m.FunctionCall, st.integers(0, 2**32 - 1), st.binary(max_size=20)),
)

backend = st.one_of(
    st.builds(m.ParameterStatus, names, names),
    st.builds(m.ReadyForQuery, st.sampled_from("ITE")),
    st.builds(m.ErrorResponse, st.lists(st.tuples(st.sampled_from("SVCMDH"), names), max_size=5).map(tuple)),
    st.builds(m.NoticeResponse, st.lists(st.tuples(st.sampled_from("SVCM"), names), max_size=5).map(tuple)),
    st.builds(m.CommandComplete, names),
    st.builds(m.DataRow, st.lists(values, max_size=5).map(tuple)),
    st.builds(m.BackendKeyData, st.integers(0, 2**32 - 1), st.binary(min_size=4, max_size=256)),
    st.builds(m.NotificationResponse, st.integers(0, 2**32 - 1), names, names),
    st.builds(m.NegotiateProtocolVersion, st.integers(0, 5), st.lists(names, max_size=3).map(tuple)),
    st.builds(m.ParameterDescription, st.lists(st.integers(0, 2**32 - 1), max_size=4).map(tuple)),
    st.sampled_from(
        [
            m.ParseComplete(),
            m.BindComplete(),
            m.CloseComplete(),
            m.NoData(),
            m.EmptyQueryResponse(),
            m.PortalSuspended(),
            m.CopyDone(),
        ]
    ),
)


@given(st.lists(frontend, max_size=6), st.data())
def test_frontend_round_trip_through_the_scanner(msgs: list[m.FrontendMessage], data: st.DataObject) -> None:
    stream = b"".join(x.encode() for x in msgs)
    # split the stream at an arbitrary point: the scanner yields only whole frames before it
    cut = data.draw(st.integers(0, len(stream)))
    first = list(scan(stream[:cut]))
    assert all(f.end <= cut for f in first)
    frames = list(scan(stream))
    assert len(frames) == len(msgs)
    assert [m.decode_frontend(f.type[0], stream[f.body_start : f.end]) for f in frames] == msgs


@given(backend)
def test_backend_round_trip(msg: m.BackendMessage) -> None:
    raw = msg.encode()
    assert m.decode_backend(raw[0], raw[5:]) == msg


@given(st.integers(0, 255), st.binary(max_size=64))
def test_garbage_bodies_raise_wire_error_only(type_: int, body: bytes) -> None:
    for decode in (m.decode_frontend, m.decode_backend):
        try:
            decode(type_, body)
        except m.WireError:
            pass


@given(st.binary(max_size=80))
def test_garbage_startup_packets_raise_wire_error_only(raw: bytes) -> None:
    try:
        m.decode_startup(raw)
    except m.WireError:
        pass
    try:
        m.decode_password(raw)
        m.decode_sasl_initial(raw)
    except m.WireError:
        pass


@given(frontend)
def test_truncated_messages_raise_wire_error(msg: m.FrontendMessage) -> None:
    raw = msg.encode()
    body = raw[5:]
    for n in range(len(body)):
        try:
            m.decode_frontend(raw[0], body[:n])
        except m.WireError:
            continue
        # some prefixes are themselves valid messages (e.g. CopyData); none may crash


def test_impossible_frame_lengths() -> None:
    with pytest.raises(m.WireError):
        list(scan(b"Q\x00\x00\x00\x02"))
    with pytest.raises(m.WireError):
        header(b"D\x7f\xff\xff\xff")
    assert header(b"Z\x00\x00\x00\x05I") == (b"Z", 6)
    assert list(scan(b"Z\x00\x00\x00\x05IZ\x00")) == [Frame(b"Z", 0, 6)]
    with pytest.raises(m.WireError):
        m.decode_startup(b"\x00\x00\x00\x08\x00\x02\x00\x00")  # protocol 2.0
    with pytest.raises(m.WireError):
        m.Query("a\x00b").encode()
