"""SCRAM-SHA-256 server exchange against scramp's client, parameter decoding, statement splitting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scramp import ScramClient

from dbward.identity.secrets import scram_verifier
from dbward.wire.postgres.params import decode_params
from dbward.wire.postgres.scram import ScramError, ScramServer
from dbward.wire.postgres.sqlsplit import copy_kind, split_statements


def _server(password: str) -> ScramServer:
    v = scram_verifier(password, iterations=4096)
    return ScramServer(v.salt, v.stored_key, v.server_key, v.iterations)


def test_scram_exchange_with_scramp_client() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "alice", "s3cret")
    server = _server("s3cret")
    first = server.first("SCRAM-SHA-256", client.get_client_first().encode())
    client.set_server_first(first.decode())
    final = server.final(client.get_client_final().encode())
    assert final is not None
    client.set_server_final(final.decode())  # raises if the server signature were wrong


def _libpq_style_final(password: str, client_first_bare: str, server_first: str) -> str:
    """The client side of RFC 5802 as libpq computes it (libpq sends "n=" with no user name)."""
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth = f"{client_first_bare},{server_first},{without_proof}".encode()
    sig = hmac.new(hashlib.sha256(client_key).digest(), auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


def test_scram_with_the_empty_user_name_libpq_sends() -> None:
    server = _server("s3cret")
    bare = "n=,r=rOprNGfwEbeRWgbNEkqO"
    first = server.first("SCRAM-SHA-256", f"n,,{bare}".encode()).decode()
    assert first.startswith("r=rOprNGfwEbeRWgbNEkqO") and ",i=4096" in first
    assert server.final(_libpq_style_final("s3cret", bare, first).encode()) is not None
    server = _server("s3cret")
    first = server.first("SCRAM-SHA-256", f"n,,{bare}".encode()).decode()
    assert server.final(_libpq_style_final("wrong", bare, first).encode()) is None


def test_scram_wrong_password_and_refusals() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "bob", "wrong")
    server = _server("s3cret")
    client.set_server_first(server.first("SCRAM-SHA-256", client.get_client_first().encode()).decode())
    assert server.final(client.get_client_final().encode()) is None
    with pytest.raises(ScramError, match="not offered"):
        _server("x").first("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc")
    with pytest.raises(ScramError, match="channel binding"):
        _server("x").first("SCRAM-SHA-256", b"p=tls-server-end-point,,n=,r=abc")
    s = _server("x")
    s.first("SCRAM-SHA-256", b"n,,n=,r=abc")
    with pytest.raises(ScramError, match="nonce"):
        s.final(b"c=biws,r=other,p=" + base64.b64encode(bytes(32)))


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_scram_garbage_raises_scram_error_or_fails(a: bytes, b: bytes) -> None:
    s = _server("x")
    try:
        s.first("SCRAM-SHA-256", a)
        assert s.final(b) is None
    except ScramError:
        pass


def test_decode_params_text_and_binary() -> None:
    u = uuid.uuid4()
    values = (
        b"hello",
        None,
        struct.pack("!i", -5),
        struct.pack("!q", 2**40),
        struct.pack("!d", 1.5),
        b"\x01",
        u.bytes,
        struct.pack("!i", 1),
        struct.pack("!q", 0),
        b"\x01{}",
        b"\xde\xad",
    )
    oids = (25, 23, 23, 20, 701, 16, 2950, 1082, 1184, 3802, 17)
    got = decode_params(values, (0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), oids)
    assert got == (
        "hello",
        None,
        -5,
        2**40,
        1.5,
        True,
        str(u),
        "2000-01-02",
        "2000-01-01T00:00:00+00:00",
        "{}",
        "\\xdead",
    )
    assert decode_params((b"\xff\xfe",), (0,), ()) == ("\\xfffe",)
    assert decode_params((b"1", b"2"), (), ()) == ("1", "2")
    assert decode_params((b"\x00\x01",), (1,), (23,)) == ("\\x0001",)  # wrong size: hex, never an error


def test_split_statements() -> None:
    assert split_statements("SELECT 1; SELECT 2;") == ["SELECT 1", "SELECT 2"]
    assert split_statements("SELECT ';'; SELECT $$;$$; SELECT $a$ $$; $a$") == [
        "SELECT ';'",
        "SELECT $$;$$",
        "SELECT $a$ $$; $a$",
    ]
    assert split_statements("SELECT E'\\';'; SELECT 'it''s;'") == ["SELECT E'\\';'", "SELECT 'it''s;'"]
    assert split_statements('SELECT ";" FROM "a;b"; -- c;\n/* x; /* y; */ */ SELECT 2') == [
        'SELECT ";" FROM "a;b"',
        "-- c;\n/* x; /* y; */ */ SELECT 2",
    ]
    assert split_statements(";; -- only comments\n;") == []
    assert split_statements("SELECT $1; SELECT x$y") == ["SELECT $1", "SELECT x$y"]
    body = "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql"
    assert split_statements(body + "; SELECT f()") == [body, "SELECT f()"]


@given(
    st.lists(st.sampled_from(["SELECT 1", "SELECT ';'", "SELECT $$a;b$$", "SELECT /* ; */ 2"]), max_size=5)
)
def test_split_is_the_inverse_of_join(parts: list[str]) -> None:
    assert split_statements("; ".join(parts)) == parts


def test_copy_kind() -> None:
    assert copy_kind("COPY t FROM STDIN") == "stdio"
    assert copy_kind("copy (select 1 from x) to stdout with (format csv)") == "stdio"
    assert copy_kind("COPY t TO PROGRAM 'gzip > /tmp/x'") == "program"
    assert copy_kind("COPY t FROM '/etc/passwd'") == "file"
    assert copy_kind("COPY t FROM E'/etc/passwd'") == "file"
    assert copy_kind("SELECT 1") is None


@given(st.text(alphabet=st.sampled_from(list("ab;'\"$-/*\nEe\\ "))))
def test_split_never_fails_and_never_yields_empty_statements(sql: str) -> None:
    parts = split_statements(sql)
    assert all(p.strip() for p in parts)
    assert sum(len(p) for p in parts) <= len(sql)
