"""Framing and typed messages: transcripts of real bytes, round trips, and garbage input."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.domain import Principal
from dbward.identity.secrets import make_verifiers
from dbward.proxy.engine import StoredSecret, UserCredentials, verify_mysql_native, verify_mysql_sha2_fast
from dbward.wire.mysql import auth
from dbward.wire.mysql.constants import MAX_FRAME, Capability, FieldType
from dbward.wire.mysql.messages import (
    AuthSwitchRequest,
    ColumnDefinition41,
    ComChangeUser,
    ComFieldList,
    ComQuery,
    ComStmtExecute,
    ComStmtSendLongData,
    EOFPacket,
    ERRPacket,
    HandshakeResponse41,
    HandshakeV10,
    OKPacket,
    SSLRequest,
    StmtPrepareOK,
    parse_command,
)
from dbward.wire.mysql.packets import Packet, PacketDecoder, ProtocolViolation, encode_packet
from dbward.wire.mysql.rows import (
    decode_binary_row,
    decode_text_row,
    encode_binary_row,
    encode_binary_value,
    encode_text_row,
)

#: the greeting of MariaDB 10.11 on the test machine, as read from its socket
MARIADB_GREETING = (
    b"d\x00\x00\x00\n5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x06\x02\x00\x00dN8k7nGU\x00\xfe\xf7-\x02\x00"
    b"\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00U*px*fEeN6bl\x00mysql_native_password\x00"
)


def test_mariadb_greeting_transcript() -> None:
    dec = PacketDecoder()
    dec.feed(MARIADB_GREETING)
    pkt = dec.next_packet()
    assert pkt is not None and pkt.seq == 0 and dec.next_packet() is None
    hs = HandshakeV10.parse(pkt.payload)
    assert hs.server_version == "5.5.5-10.11.19-MariaDB-0+deb12u1"
    assert hs.connection_id == 518
    assert hs.auth_data == b"dN8k7nGUU*px*fEeN6bl"
    assert hs.auth_plugin == "mysql_native_password"
    assert not hs.capabilities & Capability.LONG_PASSWORD  # MariaDB: CLIENT_MYSQL off
    assert hs.capabilities & Capability.PROTOCOL_41 and hs.capabilities & Capability.DEPRECATE_EOF
    assert hs.mariadb_ext_capabilities == 0x1D
    assert HandshakeV10.parse(hs.encode()) == hs


def test_continuation_frames_at_16_mib() -> None:
    for size in (MAX_FRAME - 1, MAX_FRAME, MAX_FRAME + 1, 2 * MAX_FRAME):
        payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        wire = encode_packet(payload, 7)
        frames = size // MAX_FRAME + 1
        assert len(wire) == size + 4 * frames
        dec = PacketDecoder()
        dec.feed(wire[:1000])
        assert dec.next_packet() is None
        dec.feed(wire[1000:])
        pkt = dec.next_packet()
        assert pkt == Packet(7, payload)
        assert pkt.last_seq == (7 + frames - 1) & 0xFF


def test_out_of_order_continuation_and_oversize_are_violations() -> None:
    wire = bytearray(encode_packet(b"a" * MAX_FRAME, 0))
    wire[MAX_FRAME + 4 + 3] = 5  # second frame's sequence id should be 1
    dec = PacketDecoder()
    dec.feed(bytes(wire))
    with pytest.raises(ProtocolViolation):
        dec.next_packet()
    small = PacketDecoder(max_packet=10)
    small.feed(encode_packet(b"x" * 11, 0))
    with pytest.raises(ProtocolViolation):
        small.next_packet()


@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(1, 64))
def test_packet_stream_round_trip_any_split(payloads: list[bytes], step: int) -> None:
    wire = b"".join(encode_packet(p, i) for i, p in enumerate(payloads))
    dec = PacketDecoder()
    got: list[bytes] = []
    for i in range(0, len(wire), step):
        dec.feed(wire[i : i + step])
        while (pkt := dec.next_packet()) is not None:
            got.append(pkt.payload)
    assert got == payloads


def test_handshake_response_round_trip_with_attributes() -> None:
    caps = int(
        Capability.PROTOCOL_41
        | Capability.SECURE_CONNECTION
        | Capability.PLUGIN_AUTH
        | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
        | Capability.CONNECT_WITH_DB
        | Capability.CONNECT_ATTRS
    )
    hr = HandshakeResponse41(
        capabilities=caps,
        username="alice",
        auth_response=b"\x01" * 20,
        database="maria/dbward_test",
        auth_plugin="caching_sha2_password",
        attributes={"program_name": "mysql", "_os": "Linux"},
    )
    assert HandshakeResponse41.parse(hr.encode()) == hr
    ssl = SSLRequest(capabilities=caps | Capability.SSL)
    assert SSLRequest.is_ssl_request(ssl.encode()) and SSLRequest.parse(ssl.encode()) == ssl
    assert not SSLRequest.is_ssl_request(hr.encode())


def test_generic_responses_round_trip() -> None:
    ok = OKPacket(affected_rows=300, last_insert_id=70000, status=0x4002, warnings=1, info=b"Rows matched")
    assert OKPacket.parse(ok.encode()) == ok
    err = ERRPacket(error_code=1142, sql_state="42000", message="denied by rule r1")
    assert ERRPacket.parse(err.encode()) == err
    assert err.encode() == b"\xff\x76\x04#42000denied by rule r1"
    eof = EOFPacket(warnings=0, status=0x0022)
    assert EOFPacket.parse(eof.encode()) == eof
    switch = AuthSwitchRequest(plugin="mysql_native_password", data=b"n" * 20)
    assert AuthSwitchRequest.parse(switch.encode()) == switch
    col = ColumnDefinition41(
        schema="dbward_test",
        table="c",
        org_table="customers",
        name="id",
        org_name="id",
        charset=63,
        column_length=11,
        type=FieldType.LONG,
        flags=0x4203,
        decimals=0,
    )
    assert ColumnDefinition41.parse(col.encode()) == col
    prep = StmtPrepareOK(statement_id=9, num_columns=3, num_params=2, warnings=0)
    assert StmtPrepareOK.parse(prep.encode()) == prep


def test_commands() -> None:
    assert parse_command(ComQuery(query=b"SELECT 1").encode()) == ComQuery(query=b"SELECT 1")
    fl = ComFieldList(table=b"customers", wildcard=b"n%")
    assert parse_command(fl.encode()) == fl
    ld = ComStmtSendLongData(statement_id=4, param_id=1, data=b"chunk")
    assert parse_command(ld.encode()) == ld
    with pytest.raises(ProtocolViolation, match="COM_BINLOG_DUMP is not supported"):
        parse_command(b"\x12\x00\x00\x00\x00")
    cu = ComChangeUser.parse(
        b"\x11bob\x00\x14" + b"s" * 20 + b"db\x00\x2d\x00mysql_native_password\x00",
        int(Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH),
    )
    assert (cu.username, cu.schema, cu.charset, cu.auth_plugin) == ("bob", "db", 45, "mysql_native_password")


def _execute_packet(values: list[object], types: list[tuple[int, bool]], bound: bool = True) -> bytes:
    n = len(values)
    bitmap = bytearray((n + 7) // 8)
    body = b""
    for i, (v, (t, u)) in enumerate(zip(values, types, strict=True)):
        if v is None:
            bitmap[i // 8] |= 1 << (i % 8)
        else:
            body += encode_binary_value(v, t, u)
    head = b"\x17" + (5).to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little")
    type_bytes = b"".join(bytes((t, 0x80 if u else 0)) for t, u in types) if bound else b""
    return head + bytes(bitmap) + (b"\x01" if bound else b"\x00") + type_bytes + body


def test_stmt_execute_decodes_bound_values() -> None:
    types = [
        (FieldType.LONGLONG, False),
        (FieldType.VAR_STRING, False),
        (FieldType.DOUBLE, False),
        (FieldType.NULL, False),
        (FieldType.DATETIME, False),
        (FieldType.NEWDECIMAL, False),
        (FieldType.TINY, True),
        (FieldType.BLOB, False),
    ]
    values: list[object] = [
        -42,
        "Kim 민지",
        1.5,
        None,
        dt.datetime(2024, 1, 2, 3, 4, 5, 600),
        Decimal("12.30"),
        255,
        b"\x00\xff",
    ]
    ex = ComStmtExecute.parse(_execute_packet(values, types), 8, long_data=frozenset())
    assert ex.statement_id == 5 and ex.new_params_bound
    assert [p.value for p in ex.params] == values
    # a second execution may omit the types: the statement's previous ones apply
    again = ComStmtExecute.parse(_execute_packet(values, types, bound=False), 8, ex.types)
    assert [p.value for p in again.params] == values
    with pytest.raises(ProtocolViolation):
        ComStmtExecute.parse(_execute_packet(values, types, bound=False), 8, None)
    long = ComStmtExecute.parse(
        _execute_packet([1, None], [(FieldType.LONG, False), (FieldType.BLOB, False)]),
        2,
        long_data=frozenset({1}),
    )
    assert long.params[0].value == 1


def test_rows_round_trip() -> None:
    row = (b"1", None, "민지".encode(), b"x" * 300)
    assert decode_text_row(encode_text_row(row), 4) == row
    types = [
        (FieldType.LONG, False),
        (FieldType.VAR_STRING, False),
        (FieldType.DATE, False),
        (FieldType.TIME, False),
    ]
    values = (7, "a", dt.date(2024, 2, 29), dt.timedelta(hours=-1, seconds=5))
    assert decode_binary_row(encode_binary_row(values, types), types) == values
    assert decode_binary_row(encode_binary_row((None, None, None, None), types), types) == (None,) * 4


def test_scrambles_match_dbward_verifiers() -> None:
    v = make_verifiers("alice-password-1")
    creds = UserCredentials(
        principal=Principal(user_id=1, username="alice"),
        secrets=(StoredSecret(method="password", name="password", verifiers=v),),
    )
    nonce = auth.new_nonce()
    assert b"\x00" not in nonce and len(nonce) == 20
    assert verify_mysql_native(creds, nonce, auth.scramble_native(b"alice-password-1", nonce)) is not None
    assert verify_mysql_native(creds, nonce, auth.scramble_native(b"wrong", nonce)) is None
    assert (
        verify_mysql_sha2_fast(creds, nonce, auth.scramble_caching_sha2(b"alice-password-1", nonce))
        is not None
    )
    keys = auth.RsaKeyPair()
    sealed = auth.rsa_encrypt_password(b"alice-password-1", nonce, keys.public_pem)
    assert keys.decrypt_password(sealed, nonce) == b"alice-password-1"


_PARSERS = [
    HandshakeV10.parse,
    HandshakeResponse41.parse,
    OKPacket.parse,
    ERRPacket.parse,
    EOFPacket.parse,
    ColumnDefinition41.parse,
    StmtPrepareOK.parse,
    AuthSwitchRequest.parse,
    parse_command,
    lambda p: ComStmtExecute.parse(p, 3),
    lambda p: ComChangeUser.parse(p, 0xFFFFFFFF),
    lambda p: decode_text_row(p, 3),
    lambda p: decode_binary_row(p, [(FieldType.DATETIME, False), (FieldType.DOUBLE, False)]),
]


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(0, len(_PARSERS) - 1))
def test_garbage_raises_only_protocol_violation(data: bytes, which: int) -> None:
    try:
        _PARSERS[which](data)
    except ProtocolViolation:
        pass


@given(st.integers(0, 200))
def test_truncated_real_messages_raise_protocol_violation(cut: int) -> None:
    payload = MARIADB_GREETING[4:]
    if cut >= len(payload):
        return
    try:
        HandshakeV10.parse(payload[:cut])
    except ProtocolViolation:
        pass
