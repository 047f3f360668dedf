"""PostgreSQL frontend and backend messages as frozen dataclasses, with their byte layouts.

Names follow the "Message Formats" section of the protocol chapter:
https://www.postgresql.org/docs/current/protocol-message-formats.html

Every regular message is ``Byte1 type | Int32 length (includes itself, not the type) | body``.
The startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no
type byte: ``Int32 length | Int32 code | body``.

This module is sans-IO: ``decode_*`` take complete bodies (see ``framing.py`` for splitting a
byte stream) and ``encode()`` returns the whole message. Malformed input raises
:class:`WireError`, never anything else. Counterparts: ``framing.py`` (frames),
``scram.py`` (authentication exchange), ``proxy/postgres.py`` (the engine using them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

PROTOCOL_3_0 = 196608  # 3 << 16
PROTOCOL_3_2 = 196610  # 3 << 16 | 2; PostgreSQL 18 clients may ask for it
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
#: the largest message PostgreSQL itself accepts (PQ_LARGE_MESSAGE_LIMIT is 1 GB - 1)
MAX_MESSAGE = 0x3FFFFFFF
#: a startup packet is small; PostgreSQL caps it at MAX_STARTUP_PACKET_LENGTH (10000)
MAX_STARTUP = 10000


class WireError(ValueError):
    """A malformed or truncated message; the session that sent it must end."""


# --------------------------------------------------------------------------- body reader
class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WireError("message is shorter than its fields")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def byte(self) -> int:
        return self._take(1)[0]

    def int16(self) -> int:
        return int(struct.unpack("!h", self._take(2))[0])

    def uint16(self) -> int:
        return int(struct.unpack("!H", self._take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack("!i", self._take(4))[0])

    def uint32(self) -> int:
        return int(struct.unpack("!I", self._take(4))[0])

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise WireError("a string field is not NUL-terminated")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def bytes_(self, n: int) -> bytes:
        return self._take(n)

    def rest(self) -> bytes:
        b = self.data[self.pos :]
        self.pos = len(self.data)
        return b

    def end(self) -> None:
        if self.pos != len(self.data):
            raise WireError("message has trailing bytes after its fields")


# --------------------------------------------------------------------------- hot-path field readers
# The proxy's relay reads a few fields of the messages it sees on every statement; these
# read them straight from the body into plain values (the dataclass decoders below use them
# too, so both raise the same WireError for the same malformed body).
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _cstring_at(body: bytes, pos: int) -> tuple[str, int]:
    end = body.find(b"\0", pos)
    if end < 0:
        raise WireError("a string field is not NUL-terminated")
    return _text(body[pos:end]), end + 1


def _need(body: bytes, pos: int, n: int) -> None:
    if n < 0 or pos + n > len(body):
        raise WireError("message is shorter than its fields")


def _ended(body: bytes, pos: int) -> None:
    if pos != len(body):
        raise WireError("message has trailing bytes after its fields")


def _int16s(body: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    _need(body, pos, 2)
    (n,) = _U16.unpack_from(body, pos)
    pos += 2
    _need(body, pos, 2 * n)
    return struct.unpack_from(f"!{n}h", body, pos), pos + 2 * n


def query_fields(body: bytes) -> str:
    """Query body: the SQL text."""
    sql, pos = _cstring_at(body, 0)
    _ended(body, pos)
    return sql


def command_tag(body: bytes) -> str:
    """CommandComplete body: the command tag."""
    tag, pos = _cstring_at(body, 0)
    _ended(body, pos)
    return tag


def parse_fields(body: bytes) -> tuple[str, str, tuple[int, ...]]:
    """Parse body: (statement name, SQL text, parameter type OIDs)."""
    name, pos = _cstring_at(body, 0)
    sql, pos = _cstring_at(body, pos)
    _need(body, pos, 2)
    (n,) = _U16.unpack_from(body, pos)
    pos += 2
    _need(body, pos, 4 * n)
    types: tuple[int, ...] = struct.unpack_from(f"!{n}I", body, pos)
    _ended(body, pos + 4 * n)
    return name, sql, types


def bind_fields(
    body: bytes,
) -> tuple[str, str, tuple[int, ...], tuple[bytes | None, ...], tuple[int, ...]]:
    """Bind body: (portal, statement, parameter formats, parameter values, result formats)."""
    portal, pos = _cstring_at(body, 0)
    stmt, pos = _cstring_at(body, pos)
    formats, pos = _int16s(body, pos)
    _need(body, pos, 2)
    (count,) = _U16.unpack_from(body, pos)
    pos += 2
    params: list[bytes | None] = []
    for _ in range(count):
        _need(body, pos, 4)
        (n,) = _I32.unpack_from(body, pos)
        pos += 4
        if n < -1:
            raise WireError("a Bind parameter has a negative length")
        if n == -1:
            params.append(None)
        else:
            _need(body, pos, n)
            params.append(body[pos : pos + n])
            pos += n
    results, pos = _int16s(body, pos)
    _ended(body, pos)
    return portal, stmt, formats, tuple(params), results


def target_fields(body: bytes) -> tuple[str, str]:
    """Describe or Close body: ("S" or "P", name)."""
    _need(body, 0, 1)
    kind = chr(body[0])
    if kind not in ("S", "P"):
        raise WireError("Describe/Close must name 'S' (statement) or 'P' (portal)")
    name, pos = _cstring_at(body, 1)
    _ended(body, pos)
    return kind, name


def execute_fields(body: bytes) -> tuple[str, int]:
    """Execute body: (portal, maximum rows; 0 = no limit)."""
    portal, pos = _cstring_at(body, 0)
    _need(body, pos, 4)
    (max_rows,) = _I32.unpack_from(body, pos)
    _ended(body, pos + 4)
    return portal, max_rows


def tag_counts(tag: str) -> tuple[int | None, int | None]:
    """(rows returned, rows affected) of a CommandComplete tag, as the audit trail records them."""
    parts = tag.split()
    if not parts or not parts[-1].isdigit():
        return None, None
    n = int(parts[-1])
    if parts[0] in ("SELECT", "FETCH", "MOVE"):
        return n, None
    if parts[0] == "COPY":
        return n, n
    if parts[0] in ("INSERT", "UPDATE", "DELETE", "MERGE"):
        return None, n
    return None, None


def _cstr(s: str) -> bytes:
    b = s.encode("utf-8")
    if b"\0" in b:
        raise WireError("a string field cannot contain a NUL byte")
    return b + b"\0"


def _frame(type_: bytes, body: bytes) -> bytes:
    return type_ + struct.pack("!I", len(body) + 4) + body


# =========================================================================== startup phase
@dataclass(frozen=True)
class StartupMessage:
    """Int32 len | Int32 protocol (3.0 = 196608, 3.2 = 196610) | (String name, String value)* | 0"""

    protocol: int
    params: dict[str, str] = field(default_factory=dict)

    @property
    def major(self) -> int:
        return self.protocol >> 16

    @property
    def minor(self) -> int:
        return self.protocol & 0xFFFF

    def encode(self) -> bytes:
        body = struct.pack("!I", self.protocol)
        for k, v in self.params.items():
            body += _cstr(k) + _cstr(v)
        body += b"\0"
        return struct.pack("!I", len(body) + 4) + body


@dataclass(frozen=True)
class SSLRequest:
    """Int32 8 | Int32 80877103; the server answers one byte, 'S' or 'N'."""

    def encode(self) -> bytes:
        return struct.pack("!II", 8, SSL_REQUEST_CODE)


@dataclass(frozen=True)
class GSSENCRequest:
    """Int32 8 | Int32 80877104; dbward declines with 'N' (no GSSAPI encryption)."""

    def encode(self) -> bytes:
        return struct.pack("!II", 8, GSSENC_REQUEST_CODE)


@dataclass(frozen=True)
class CancelRequest:
    """Int32 len | Int32 80877102 | Int32 process id | Byte[n] secret key (4 bytes in 3.0, up to 256 in 3.2)."""

    pid: int
    secret: bytes

    def encode(self) -> bytes:
        body = struct.pack("!II", CANCEL_REQUEST_CODE, self.pid) + self.secret
        return struct.pack("!I", len(body) + 4) + body


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def decode_startup(packet: bytes) -> StartupPacket:
    """Decode one whole startup-phase packet (its length word included)."""
    r = _Reader(packet)
    length = r.uint32()
    if length != len(packet) or length < 8 or length > MAX_STARTUP:
        raise WireError("the startup packet length is invalid")
    code = r.uint32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = r.uint32()
        secret = r.rest()
        if not 4 <= len(secret) <= 256:
            raise WireError("the cancel request's secret key has an invalid length")
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise WireError(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if name == "":
            break
        params[name] = r.cstring()
    r.end()
    return StartupMessage(code, params)


# =========================================================================== frontend messages
@dataclass(frozen=True)
class Query:
    """'Q' | Int32 len | String query"""

    TYPE: ClassVar[bytes] = b"Q"
    sql: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.sql))


@dataclass(frozen=True)
class Parse:
    """'P' | Int32 len | String statement | String query | Int16 n | Int32 param type OID * n"""

    TYPE: ClassVar[bytes] = b"P"
    statement: str
    sql: str
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = _cstr(self.statement) + _cstr(self.sql) + struct.pack("!H", len(self.param_types))
        body += b"".join(struct.pack("!I", t) for t in self.param_types)
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class Bind:
    """'B' | Int32 len | String portal | String statement
    | Int16 nf | Int16 format * nf | Int16 np | (Int32 len (-1 = NULL) | Byte[len])* np
    | Int16 nr | Int16 result format * nr"""

    TYPE: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def format_of(self, i: int) -> int:
        """The format code of parameter ``i`` (0 text, 1 binary) per the Bind rules."""
        if not self.param_formats:
            return 0
        if len(self.param_formats) == 1:
            return self.param_formats[0]
        return self.param_formats[i] if i < len(self.param_formats) else 0

    def encode(self) -> bytes:
        body = _cstr(self.portal) + _cstr(self.statement)
        body += struct.pack("!H", len(self.param_formats))
        body += b"".join(struct.pack("!h", f) for f in self.param_formats)
        body += struct.pack("!H", len(self.params))
        for p in self.params:
            body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
        body += struct.pack("!H", len(self.result_formats))
        body += b"".join(struct.pack("!h", f) for f in self.result_formats)
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class Describe:
    """'D' | Int32 len | Byte1 'S' (statement) or 'P' (portal) | String name"""

    TYPE: ClassVar[bytes] = b"D"
    kind: str
    name: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.kind.encode() + _cstr(self.name))


@dataclass(frozen=True)
class Execute:
    """'E' | Int32 len | String portal | Int32 max rows (0 = no limit)"""

    TYPE: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.portal) + struct.pack("!i", self.max_rows))


@dataclass(frozen=True)
class Close:
    """'C' | Int32 len | Byte1 'S' or 'P' | String name"""

    TYPE: ClassVar[bytes] = b"C"
    kind: str
    name: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.kind.encode() + _cstr(self.name))


@dataclass(frozen=True)
class Sync:
    """'S' | Int32 4"""

    TYPE: ClassVar[bytes] = b"S"

    def encode(self) -> bytes:
        return _frame(self.TYPE, b"")


@dataclass(frozen=True)
class Flush:
    """'H' | Int32 4"""

    TYPE: ClassVar[bytes] = b"H"

    def encode(self) -> bytes:
        return _frame(self.TYPE, b"")


@dataclass(frozen=True)
class Terminate:
    """'X' | Int32 4"""

    TYPE: ClassVar[bytes] = b"X"

    def encode(self) -> bytes:
        return _frame(self.TYPE, b"")


@dataclass(frozen=True)
class CopyData:
    """'d' | Int32 len | Byte[len-4] data (both directions)"""

    TYPE: ClassVar[bytes] = b"d"
    data: bytes

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.data)


@dataclass(frozen=True)
class CopyDone:
    """'c' | Int32 4 (both directions)"""

    TYPE: ClassVar[bytes] = b"c"

    def encode(self) -> bytes:
        return _frame(self.TYPE, b"")


@dataclass(frozen=True)
class CopyFail:
    """'f' | Int32 len | String error message"""

    TYPE: ClassVar[bytes] = b"f"
    message: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.message))


@dataclass(frozen=True)
class FunctionCall:
    """'F' | Int32 len | Int32 function OID | ... (arguments); dbward refuses the fast path."""

    TYPE: ClassVar[bytes] = b"F"
    function_oid: int
    rest: bytes = b""

    def encode(self) -> bytes:
        return _frame(self.TYPE, struct.pack("!I", self.function_oid) + self.rest)


@dataclass(frozen=True)
class PasswordMessage:
    """'p' | Int32 len | String password (also md5 hash). The same type byte carries the
    SASL messages; which one it is depends on the authentication request that preceded it."""

    TYPE: ClassVar[bytes] = b"p"
    password: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.password))


@dataclass(frozen=True)
class SASLInitialResponse:
    """'p' | Int32 len | String mechanism | Int32 data length (-1 = none) | Byte[n] data"""

    TYPE: ClassVar[bytes] = b"p"
    mechanism: str
    data: bytes | None

    def encode(self) -> bytes:
        body = _cstr(self.mechanism)
        body += struct.pack("!i", -1) if self.data is None else struct.pack("!i", len(self.data)) + self.data
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class SASLResponse:
    """'p' | Int32 len | Byte[n] data"""

    TYPE: ClassVar[bytes] = b"p"
    data: bytes

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.data)


FrontendMessage = (
    Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Close
    | Sync
    | Flush
    | Terminate
    | CopyData
    | CopyDone
    | CopyFail
    | FunctionCall
)


def decode_frontend(type_: int, body: bytes) -> FrontendMessage:
    """Decode one frontend message of the normal phase (not 'p', which depends on context)."""
    r = _Reader(body)
    msg: FrontendMessage
    match bytes([type_]):
        case b"Q":
            return Query(query_fields(body))
        case b"P":
            return Parse(*parse_fields(body))
        case b"B":
            return Bind(*bind_fields(body))
        case b"D":
            return Describe(*target_fields(body))
        case b"C":
            return Close(*target_fields(body))
        case b"E":
            return Execute(*execute_fields(body))
        case b"S":
            msg = Sync()
        case b"H":
            msg = Flush()
        case b"X":
            msg = Terminate()
        case b"d":
            return CopyData(body)
        case b"c":
            msg = CopyDone()
        case b"f":
            msg = CopyFail(r.cstring())
        case b"F":
            return FunctionCall(r.uint32(), r.rest())
        case _:
            raise WireError(f"unknown frontend message type {type_!r}")
    r.end()
    return msg


def decode_password(body: bytes) -> PasswordMessage:
    r = _Reader(body)
    msg = PasswordMessage(r.cstring())
    r.end()
    return msg


def decode_sasl_initial(body: bytes) -> SASLInitialResponse:
    r = _Reader(body)
    mech = r.cstring()
    n = r.int32()
    if n < -1:
        raise WireError("SASLInitialResponse has a negative data length")
    data = None if n == -1 else r.bytes_(n)
    r.end()
    return SASLInitialResponse(mech, data)


# =========================================================================== backend messages
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True)
class Authentication:
    """'R' | Int32 len | Int32 code | data.

    code 0 Ok, 3 CleartextPassword, 5 MD5Password (data: Byte4 salt),
    10 SASL (data: String mechanism* | 0), 11 SASLContinue, 12 SASLFinal (data: bytes).
    """

    TYPE: ClassVar[bytes] = b"R"
    code: int
    data: bytes = b""

    @classmethod
    def sasl(cls, *mechanisms: str) -> Authentication:
        return cls(AUTH_SASL, b"".join(_cstr(m) for m in mechanisms) + b"\0")

    def mechanisms(self) -> tuple[str, ...]:
        r = _Reader(self.data)
        out: list[str] = []
        while (m := r.cstring()) != "":
            out.append(m)
        return tuple(out)

    def encode(self) -> bytes:
        return _frame(self.TYPE, struct.pack("!I", self.code) + self.data)


@dataclass(frozen=True)
class BackendKeyData:
    """'K' | Int32 len | Int32 process id | Byte[n] secret key (4 bytes in 3.0, up to 256 in 3.2)"""

    TYPE: ClassVar[bytes] = b"K"
    pid: int
    secret: bytes

    def encode(self) -> bytes:
        return _frame(self.TYPE, struct.pack("!I", self.pid) + self.secret)


@dataclass(frozen=True)
class ParameterStatus:
    """'S' | Int32 len | String name | String value"""

    TYPE: ClassVar[bytes] = b"S"
    name: str
    value: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.name) + _cstr(self.value))


@dataclass(frozen=True)
class ReadyForQuery:
    """'Z' | Int32 5 | Byte1 status: 'I' idle, 'T' in a transaction, 'E' in a failed transaction"""

    TYPE: ClassVar[bytes] = b"Z"
    status: str = "I"

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.status.encode())


@dataclass(frozen=True)
class ErrorResponse:
    """'E' | Int32 len | (Byte1 field code | String value)* | 0

    Field codes: S severity (localized), V severity, C SQLSTATE, M message, D detail, H hint, ...
    https://www.postgresql.org/docs/current/protocol-error-fields.html
    """

    TYPE: ClassVar[bytes] = b"E"
    fields: tuple[tuple[str, str], ...]

    @classmethod
    def build(
        cls, sqlstate: str, message: str, *, severity: str = "ERROR", hint: str | None = None
    ) -> ErrorResponse:
        f = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
        if hint:
            f.append(("H", hint))
        return cls(tuple(f))

    def get(self, code: str) -> str | None:
        for k, v in self.fields:
            if k == code:
                return v
        return None

    @property
    def sqlstate(self) -> str | None:
        return self.get("C")

    @property
    def message(self) -> str:
        return self.get("M") or ""

    def encode(self) -> bytes:
        body = b"".join(k.encode() + _cstr(v) for k, v in self.fields) + b"\0"
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class NoticeResponse(ErrorResponse):
    """'N' | same body as ErrorResponse"""

    TYPE: ClassVar[bytes] = b"N"


@dataclass(frozen=True)
class NegotiateProtocolVersion:
    """'v' | Int32 len | Int32 newest minor version supported | Int32 n | String option * n"""

    TYPE: ClassVar[bytes] = b"v"
    minor: int
    unsupported: tuple[str, ...] = ()

    def encode(self) -> bytes:
        body = struct.pack("!II", self.minor, len(self.unsupported))
        body += b"".join(_cstr(o) for o in self.unsupported)
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class CommandComplete:
    """'C' | Int32 len | String tag (e.g. "SELECT 3", "INSERT 0 1", "COPY 10")"""

    TYPE: ClassVar[bytes] = b"C"
    tag: str

    def counts(self) -> tuple[int | None, int | None]:
        """(rows returned, rows affected) as the audit trail records them."""
        return tag_counts(self.tag)

    def encode(self) -> bytes:
        return _frame(self.TYPE, _cstr(self.tag))


@dataclass(frozen=True)
class DataRow:
    """'D' | Int32 len | Int16 n | (Int32 len (-1 = NULL) | Byte[len]) * n"""

    TYPE: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        body = struct.pack("!H", len(self.values))
        for v in self.values:
            body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class _Empty:
    TYPE: ClassVar[bytes] = b"?"

    def encode(self) -> bytes:
        return _frame(self.TYPE, b"")


@dataclass(frozen=True)
class ParseComplete(_Empty):
    """'1' | Int32 4"""

    TYPE: ClassVar[bytes] = b"1"


@dataclass(frozen=True)
class BindComplete(_Empty):
    """'2' | Int32 4"""

    TYPE: ClassVar[bytes] = b"2"


@dataclass(frozen=True)
class CloseComplete(_Empty):
    """'3' | Int32 4"""

    TYPE: ClassVar[bytes] = b"3"


@dataclass(frozen=True)
class NoData(_Empty):
    """'n' | Int32 4"""

    TYPE: ClassVar[bytes] = b"n"


@dataclass(frozen=True)
class EmptyQueryResponse(_Empty):
    """'I' | Int32 4"""

    TYPE: ClassVar[bytes] = b"I"


@dataclass(frozen=True)
class PortalSuspended(_Empty):
    """'s' | Int32 4"""

    TYPE: ClassVar[bytes] = b"s"


@dataclass(frozen=True)
class ParameterDescription:
    """'t' | Int32 len | Int16 n | Int32 parameter type OID * n"""

    TYPE: ClassVar[bytes] = b"t"
    param_types: tuple[int, ...]

    def encode(self) -> bytes:
        body = struct.pack("!H", len(self.param_types)) + b"".join(
            struct.pack("!I", t) for t in self.param_types
        )
        return _frame(self.TYPE, body)


@dataclass(frozen=True)
class NotificationResponse:
    """'A' | Int32 len | Int32 process id | String channel | String payload"""

    TYPE: ClassVar[bytes] = b"A"
    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return _frame(self.TYPE, struct.pack("!I", self.pid) + _cstr(self.channel) + _cstr(self.payload))


BackendMessage = (
    Authentication
    | BackendKeyData
    | ParameterStatus
    | ReadyForQuery
    | ErrorResponse
    | NoticeResponse
    | NegotiateProtocolVersion
    | CommandComplete
    | DataRow
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | EmptyQueryResponse
    | PortalSuspended
    | ParameterDescription
    | NotificationResponse
    | CopyData
    | CopyDone
)


def _fields(r: _Reader) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    while True:
        code = r.byte()
        if code == 0:
            return tuple(out)
        out.append((chr(code), r.cstring()))


def decode_backend(type_: int, body: bytes) -> BackendMessage:
    """Decode the backend messages dbward needs to understand; others are relayed as bytes."""
    r = _Reader(body)
    msg: BackendMessage
    match bytes([type_]):
        case b"R":
            return Authentication(r.uint32(), r.rest())
        case b"K":
            pid = r.uint32()
            secret = r.rest()
            if not 4 <= len(secret) <= 256:
                raise WireError("BackendKeyData has a secret key of invalid length")
            return BackendKeyData(pid, secret)
        case b"S":
            msg = ParameterStatus(r.cstring(), r.cstring())
        case b"Z":
            status = chr(r.byte())
            if status not in "ITE":
                raise WireError("ReadyForQuery has an unknown transaction status")
            msg = ReadyForQuery(status)
        case b"E":
            msg = ErrorResponse(_fields(r))
        case b"N":
            msg = NoticeResponse(_fields(r))
        case b"v":
            minor, n = r.uint32(), r.uint32()
            msg = NegotiateProtocolVersion(minor, tuple(r.cstring() for _ in range(n)))
        case b"C":
            return CommandComplete(command_tag(body))
        case b"D":
            values: list[bytes | None] = []
            for _ in range(r.uint16()):
                n = r.int32()
                if n < -1:
                    raise WireError("a DataRow column has a negative length")
                values.append(None if n == -1 else r.bytes_(n))
            msg = DataRow(tuple(values))
        case b"1":
            msg = ParseComplete()
        case b"2":
            msg = BindComplete()
        case b"3":
            msg = CloseComplete()
        case b"n":
            msg = NoData()
        case b"I":
            msg = EmptyQueryResponse()
        case b"s":
            msg = PortalSuspended()
        case b"t":
            msg = ParameterDescription(tuple(r.uint32() for _ in range(r.uint16())))
        case b"A":
            msg = NotificationResponse(r.uint32(), r.cstring(), r.cstring())
        case b"d":
            return CopyData(body)
        case b"c":
            msg = CopyDone()
        case _:
            raise WireError(f"backend message type {type_!r} is not decoded by dbward")
    r.end()
    return msg
