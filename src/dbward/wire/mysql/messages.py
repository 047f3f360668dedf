"""Typed messages of the MySQL protocol: connection phase, generic responses, commands.

Each message is a frozen dataclass named as in the protocol documentation, with ``parse``
(payload bytes -> message) and ``encode`` (message -> payload bytes). Framing (sequence ids,
16 MiB continuation) is ``packets.py``'s job; result-set rows are ``rows.py``'s.
Counterpart: ``proxy/mysql.py`` (client side) and ``proxy/mysql_upstream.py`` (target side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbward.wire.mysql.constants import (
    DEFAULT_CHARSET,
    PARAM_UNSIGNED,
    Capability,
    Command,
    FieldType,
)
from dbward.wire.mysql.packets import ProtocolViolation, Reader, lenenc_bytes, lenenc_int
from dbward.wire.mysql.rows import TEXT_TYPES, decode_binary_value


# --------------------------------------------------------------------------- connection phase
@dataclass(frozen=True, kw_only=True)
class HandshakeV10:
    """The server's greeting (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_v10.html)::

    1   protocol version (10)
    NUL server version
    4   connection (thread) id
    8   auth-plugin-data part 1
    1   filler 0x00
    2   capability flags, lower
    1   character set
    2   status flags
    2   capability flags, upper
    1   length of auth-plugin-data (or 0)
    6   reserved (MariaDB: filler)
    4   reserved (MariaDB: extended capabilities when CLIENT_MYSQL is off)
    n   auth-plugin-data part 2: max(13, length - 8) bytes, NUL-terminated
    NUL auth plugin name
    """

    server_version: str
    connection_id: int
    auth_data: bytes  # the 20-byte nonce (scramble), without the trailing NUL
    capabilities: int
    charset: int = DEFAULT_CHARSET
    status: int = 0x0002
    auth_plugin: str = "mysql_native_password"
    mariadb_ext_capabilities: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> HandshakeV10:
        r = Reader(payload)
        proto = r.int1()
        if proto == 0xFF:
            raise ProtocolViolation("the server answered the connection with an error packet")
        if proto != 10:
            raise ProtocolViolation(f"handshake protocol version {proto} is not supported (only 10)")
        version = r.nul_bytes().decode("utf-8", "replace")
        conn_id = r.int4()
        data1 = r.bytes_n(8)
        r.int1()
        caps = r.int2()
        charset = DEFAULT_CHARSET
        status = 0
        data_len = 0
        ext = 0
        data2 = b""
        plugin = "mysql_native_password"
        if r.remaining():
            charset = r.int1()
            status = r.int2()
            caps |= r.int2() << 16
            data_len = r.int1()
            r.bytes_n(6)
            ext = r.int4()
            if caps & Capability.SECURE_CONNECTION:
                n = max(13, data_len - 8)
                data2 = r.bytes_n(n).rstrip(b"\x00")
            if caps & Capability.PLUGIN_AUTH and r.remaining():
                plugin = r.rest().split(b"\x00", 1)[0].decode("ascii", "replace")
        return cls(
            server_version=version,
            connection_id=conn_id,
            auth_data=data1 + data2,
            capabilities=caps,
            charset=charset,
            status=status,
            auth_plugin=plugin,
            mariadb_ext_capabilities=ext if not caps & Capability.LONG_PASSWORD else 0,
        )

    def encode(self) -> bytes:
        data = self.auth_data
        out = bytearray(b"\x0a")
        out += self.server_version.encode() + b"\x00"
        out += self.connection_id.to_bytes(4, "little")
        out += data[:8] + b"\x00"
        out += (self.capabilities & 0xFFFF).to_bytes(2, "little")
        out += bytes((self.charset,))
        out += self.status.to_bytes(2, "little")
        out += ((self.capabilities >> 16) & 0xFFFF).to_bytes(2, "little")
        out += bytes((len(data) + 1,))
        out += b"\x00" * 6
        out += self.mariadb_ext_capabilities.to_bytes(4, "little")
        part2 = data[8:] + b"\x00"
        out += part2 + b"\x00" * max(0, 13 - len(part2))
        out += self.auth_plugin.encode() + b"\x00"
        return bytes(out)


@dataclass(frozen=True, kw_only=True)
class SSLRequest:
    """The first 32 bytes of HandshakeResponse41, sent alone to ask for TLS::

    4 capability flags (with CLIENT_SSL) | 4 max packet size | 1 charset | 23 filler
    """

    capabilities: int
    max_packet_size: int = 1 << 24
    charset: int = DEFAULT_CHARSET

    LENGTH = 32

    @classmethod
    def is_ssl_request(cls, payload: bytes) -> bool:
        if len(payload) != cls.LENGTH:
            return False
        return bool(int.from_bytes(payload[:4], "little") & Capability.SSL)

    @classmethod
    def parse(cls, payload: bytes) -> SSLRequest:
        r = Reader(payload)
        return cls(capabilities=r.int4(), max_packet_size=r.int4(), charset=r.int1())

    def encode(self) -> bytes:
        return (
            self.capabilities.to_bytes(4, "little")
            + self.max_packet_size.to_bytes(4, "little")
            + bytes((self.charset,))
            + b"\x00" * 23
        )


@dataclass(frozen=True, kw_only=True)
class HandshakeResponse41:
    """The client's answer to the greeting (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_response.html)::

    4   capability flags
    4   max packet size
    1   character set
    19  filler
    4   filler (MariaDB: extended capabilities)
    NUL user name
    ... auth response: lenenc (PLUGIN_AUTH_LENENC_CLIENT_DATA), 1-byte length
        (SECURE_CONNECTION) or NUL-terminated
    NUL database (CONNECT_WITH_DB)
    NUL auth plugin name (PLUGIN_AUTH)
    ... connection attributes: lenenc total, then lenenc key/value pairs (CONNECT_ATTRS)
    """

    capabilities: int
    username: str
    auth_response: bytes = b""
    database: str | None = None
    auth_plugin: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    max_packet_size: int = 1 << 24
    charset: int = DEFAULT_CHARSET
    mariadb_ext_capabilities: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> HandshakeResponse41:
        r = Reader(payload)
        caps = r.int4()
        if not caps & Capability.PROTOCOL_41:
            raise ProtocolViolation("the client does not speak protocol 4.1 (HandshakeResponse320)")
        max_packet = r.int4()
        charset = r.int1()
        r.bytes_n(19)
        ext = r.int4()
        user = r.nul_bytes().decode("utf-8", "replace")
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.lenenc_bytes_nn()
        elif caps & Capability.SECURE_CONNECTION:
            auth = r.bytes_n(r.int1())
        else:
            auth = r.nul_bytes()
        db: str | None = None
        if caps & Capability.CONNECT_WITH_DB and r.remaining():
            db = r.nul_bytes().decode("utf-8", "replace") or None
        plugin: str | None = None
        if caps & Capability.PLUGIN_AUTH and r.remaining():
            plugin = r.nul_bytes().decode("ascii", "replace")
        attrs: dict[str, str] = {}
        if caps & Capability.CONNECT_ATTRS and r.remaining():
            total = r.lenenc_int_nn()
            end = r.pos + total
            if end > len(payload):
                raise ProtocolViolation("connection attributes run past the end of the packet")
            while r.pos < end:
                k = r.lenenc_bytes_nn().decode("utf-8", "replace")
                v = r.lenenc_bytes_nn().decode("utf-8", "replace")
                attrs[k] = v
        return cls(
            capabilities=caps,
            username=user,
            auth_response=auth,
            database=db,
            auth_plugin=plugin,
            attributes=attrs,
            max_packet_size=max_packet,
            charset=charset,
            mariadb_ext_capabilities=ext,
        )

    def encode(self) -> bytes:
        caps = self.capabilities
        out = bytearray()
        out += caps.to_bytes(4, "little")
        out += self.max_packet_size.to_bytes(4, "little")
        out += bytes((self.charset,))
        out += b"\x00" * 19
        out += self.mariadb_ext_capabilities.to_bytes(4, "little")
        out += self.username.encode() + b"\x00"
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            out += lenenc_bytes(self.auth_response)
        elif caps & Capability.SECURE_CONNECTION:
            out += bytes((len(self.auth_response),)) + self.auth_response
        else:
            out += self.auth_response + b"\x00"
        if caps & Capability.CONNECT_WITH_DB:
            out += (self.database or "").encode() + b"\x00"
        if caps & Capability.PLUGIN_AUTH:
            out += (self.auth_plugin or "").encode() + b"\x00"
        if caps & Capability.CONNECT_ATTRS:
            body = b"".join(
                lenenc_bytes(k.encode()) + lenenc_bytes(v.encode()) for k, v in self.attributes.items()
            )
            out += lenenc_bytes(body)
        return bytes(out)


@dataclass(frozen=True, kw_only=True)
class AuthSwitchRequest:
    """0xFE | NUL plugin name | plugin data (the server asks for another auth method)."""

    plugin: str
    data: bytes

    @classmethod
    def parse(cls, payload: bytes) -> AuthSwitchRequest:
        r = Reader(payload)
        if r.int1() != 0xFE:
            raise ProtocolViolation("not an AuthSwitchRequest")
        if not r.remaining():  # old-style "use 3.23 password": not supported
            return cls(plugin="mysql_old_password", data=b"")
        plugin = r.nul_bytes().decode("ascii", "replace")
        return cls(plugin=plugin, data=r.rest().rstrip(b"\x00"))

    def encode(self) -> bytes:
        return b"\xfe" + self.plugin.encode() + b"\x00" + self.data + b"\x00"


@dataclass(frozen=True, kw_only=True)
class AuthMoreData:
    """0x01 | data (extra authentication round; caching_sha2_password's 0x03/0x04 and its public key)."""

    data: bytes

    @classmethod
    def parse(cls, payload: bytes) -> AuthMoreData:
        if not payload or payload[0] != 0x01:
            raise ProtocolViolation("not an AuthMoreData packet")
        return cls(data=payload[1:])

    def encode(self) -> bytes:
        return b"\x01" + self.data


# --------------------------------------------------------------------------- generic responses
@dataclass(frozen=True, kw_only=True)
class OKPacket:
    """0x00 (or 0xFE as a result-set terminator with CLIENT_DEPRECATE_EOF)::

    1 header | lenenc affected rows | lenenc last insert id | 2 status | 2 warnings | info...
    """

    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = 0x0002
    warnings: int = 0
    info: bytes = b""
    header: int = 0x00

    @classmethod
    def parse(cls, payload: bytes) -> OKPacket:
        r = Reader(payload)
        header = r.int1()
        if header not in (0x00, 0xFE):
            raise ProtocolViolation("not an OK packet")
        affected = r.lenenc_int_nn()
        last_id = r.lenenc_int_nn()
        status = r.int2() if r.remaining() >= 2 else 0
        warnings = r.int2() if r.remaining() >= 2 else 0
        return cls(
            affected_rows=affected,
            last_insert_id=last_id,
            status=status,
            warnings=warnings,
            info=r.rest(),
            header=header,
        )

    def encode(self) -> bytes:
        return (
            bytes((self.header,))
            + lenenc_int(self.affected_rows)
            + lenenc_int(self.last_insert_id)
            + self.status.to_bytes(2, "little")
            + self.warnings.to_bytes(2, "little")
            + self.info
        )


@dataclass(frozen=True, kw_only=True)
class ERRPacket:
    """0xFF | 2 error code | '#' 5 SQLSTATE | message."""

    error_code: int
    sql_state: str
    message: str

    @classmethod
    def parse(cls, payload: bytes) -> ERRPacket:
        r = Reader(payload)
        if r.int1() != 0xFF:
            raise ProtocolViolation("not an ERR packet")
        code = r.int2()
        state = "HY000"
        if r.remaining() >= 6 and payload[r.pos] == 0x23:  # '#'
            r.int1()
            state = r.bytes_n(5).decode("ascii", "replace")
        return cls(error_code=code, sql_state=state, message=r.rest().decode("utf-8", "replace"))

    def encode(self) -> bytes:
        state = (self.sql_state.encode("ascii", "replace") + b"HY000")[:5]
        return b"\xff" + self.error_code.to_bytes(2, "little") + b"#" + state + self.message.encode()


@dataclass(frozen=True, kw_only=True)
class EOFPacket:
    """0xFE | 2 warnings | 2 status (only without CLIENT_DEPRECATE_EOF)."""

    warnings: int = 0
    status: int = 0x0002

    @classmethod
    def parse(cls, payload: bytes) -> EOFPacket:
        r = Reader(payload)
        if r.int1() != 0xFE or len(payload) > 9:
            raise ProtocolViolation("not an EOF packet")
        warnings = r.int2() if r.remaining() >= 2 else 0
        status = r.int2() if r.remaining() >= 2 else 0
        return cls(warnings=warnings, status=status)

    def encode(self) -> bytes:
        return b"\xfe" + self.warnings.to_bytes(2, "little") + self.status.to_bytes(2, "little")


def terminator_status(payload: bytes) -> int:
    """Status flags of a result-set terminator: an EOF packet, or an OK packet with 0xFE header."""
    if len(payload) <= 5:
        return EOFPacket.parse(payload).status
    return OKPacket.parse(payload).status


@dataclass(frozen=True, kw_only=True)
class ColumnDefinition41:
    """(https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_column_definition.html)::

    lenenc catalog "def" | schema | table | org_table | name | org_name |
    lenenc 0x0c | 2 charset | 4 column length | 1 type | 2 flags | 1 decimals | 2 filler
    """

    schema: str
    table: str
    org_table: str
    name: str
    org_name: str
    charset: int
    column_length: int
    type: int
    flags: int
    decimals: int
    catalog: str = "def"

    @classmethod
    def parse(cls, payload: bytes) -> ColumnDefinition41:
        r = Reader(payload)
        texts = [r.lenenc_bytes_nn().decode("utf-8", "replace") for _ in range(6)]
        fixed = r.lenenc_int_nn()
        if fixed < 12:
            raise ProtocolViolation("column definition's fixed-length part is too short")
        charset = r.int2()
        length = r.int4()
        typ = r.int1()
        flags = r.int2()
        decimals = r.int1()
        return cls(
            catalog=texts[0],
            schema=texts[1],
            table=texts[2],
            org_table=texts[3],
            name=texts[4],
            org_name=texts[5],
            charset=charset,
            column_length=length,
            type=typ,
            flags=flags,
            decimals=decimals,
        )

    def encode(self) -> bytes:
        out = b"".join(
            lenenc_bytes(s.encode())
            for s in (self.catalog, self.schema, self.table, self.org_table, self.name, self.org_name)
        )
        return (
            out
            + b"\x0c"
            + self.charset.to_bytes(2, "little")
            + self.column_length.to_bytes(4, "little")
            + bytes((self.type,))
            + self.flags.to_bytes(2, "little")
            + bytes((self.decimals,))
            + b"\x00\x00"
        )


@dataclass(frozen=True, kw_only=True)
class StmtPrepareOK:
    """0x00 | 4 statement id | 2 columns | 2 params | 1 reserved | 2 warnings."""

    statement_id: int
    num_columns: int
    num_params: int
    warnings: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> StmtPrepareOK:
        r = Reader(payload)
        if r.int1() != 0x00:
            raise ProtocolViolation("not a COM_STMT_PREPARE_OK packet")
        sid = r.int4()
        cols = r.int2()
        params = r.int2()
        warnings = 0
        if r.remaining() >= 3:
            r.int1()
            warnings = r.int2()
        return cls(statement_id=sid, num_columns=cols, num_params=params, warnings=warnings)

    def encode(self) -> bytes:
        return (
            b"\x00"
            + self.statement_id.to_bytes(4, "little")
            + self.num_columns.to_bytes(2, "little")
            + self.num_params.to_bytes(2, "little")
            + b"\x00"
            + self.warnings.to_bytes(2, "little")
        )


# --------------------------------------------------------------------------- commands
@dataclass(frozen=True, kw_only=True)
class ComQuery:
    """0x03 | query text (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query.html)."""

    query: bytes

    def encode(self) -> bytes:
        return b"\x03" + self.query


@dataclass(frozen=True, kw_only=True)
class ComInitDb:
    """0x02 | schema name."""

    schema: bytes

    def encode(self) -> bytes:
        return b"\x02" + self.schema


@dataclass(frozen=True, kw_only=True)
class ComFieldList:
    """0x04 | NUL table | wildcard."""

    table: bytes
    wildcard: bytes

    def encode(self) -> bytes:
        return b"\x04" + self.table + b"\x00" + self.wildcard


@dataclass(frozen=True, kw_only=True)
class ComStmtPrepare:
    """0x16 | statement text."""

    query: bytes

    def encode(self) -> bytes:
        return b"\x16" + self.query


@dataclass(frozen=True, kw_only=True)
class ComStmtSendLongData:
    """0x18 | 4 statement id | 2 parameter index | data (no response)."""

    statement_id: int
    param_id: int
    data: bytes

    def encode(self) -> bytes:
        return (
            b"\x18"
            + self.statement_id.to_bytes(4, "little")
            + self.param_id.to_bytes(2, "little")
            + self.data
        )


@dataclass(frozen=True, kw_only=True)
class ComStmtClose:
    """0x19 | 4 statement id (no response)."""

    statement_id: int

    def encode(self) -> bytes:
        return b"\x19" + self.statement_id.to_bytes(4, "little")


@dataclass(frozen=True, kw_only=True)
class ComStmtReset:
    """0x1A | 4 statement id."""

    statement_id: int

    def encode(self) -> bytes:
        return b"\x1a" + self.statement_id.to_bytes(4, "little")


@dataclass(frozen=True, kw_only=True)
class ComStmtFetch:
    """0x1C | 4 statement id | 4 number of rows."""

    statement_id: int
    num_rows: int

    def encode(self) -> bytes:
        return b"\x1c" + self.statement_id.to_bytes(4, "little") + self.num_rows.to_bytes(4, "little")


@dataclass(frozen=True, kw_only=True)
class ComSetOption:
    """0x1B | 2 option (0 multi-statements on, 1 off)."""

    option: int

    def encode(self) -> bytes:
        return b"\x1b" + self.option.to_bytes(2, "little")


@dataclass(frozen=True, kw_only=True)
class ComProcessKill:
    """0x0C | 4 connection id."""

    connection_id: int

    def encode(self) -> bytes:
        return b"\x0c" + self.connection_id.to_bytes(4, "little")


@dataclass(frozen=True, kw_only=True)
class ComChangeUser:
    """0x11 | NUL user | auth response | NUL schema | [2 charset | NUL plugin | attributes]."""

    username: str
    auth_response: bytes
    schema: str | None
    charset: int | None = None
    auth_plugin: str | None = None

    @classmethod
    def parse(cls, payload: bytes, capabilities: int) -> ComChangeUser:
        r = Reader(payload, 1)
        user = r.nul_bytes().decode("utf-8", "replace")
        auth = r.bytes_n(r.int1()) if capabilities & Capability.SECURE_CONNECTION else r.nul_bytes()
        schema = r.nul_bytes().decode("utf-8", "replace") if r.remaining() else ""
        charset = r.int2() if r.remaining() >= 2 else None
        plugin = None
        if capabilities & Capability.PLUGIN_AUTH and r.remaining():
            plugin = r.nul_bytes().decode("ascii", "replace")
        return cls(
            username=user, auth_response=auth, schema=schema or None, charset=charset, auth_plugin=plugin
        )


@dataclass(frozen=True, kw_only=True)
class SimpleCommand:
    """A command with no arguments: COM_QUIT, COM_PING, COM_STATISTICS, COM_RESET_CONNECTION, ..."""

    command: Command

    def encode(self) -> bytes:
        return bytes((self.command,))


@dataclass(frozen=True, kw_only=True)
class BoundParameter:
    """One parameter of COM_STMT_EXECUTE: its type as sent and the decoded value."""

    type: int
    unsigned: bool
    value: Any
    long_data: bool = False


@dataclass(frozen=True, kw_only=True)
class ComStmtExecute:
    """(https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html)::

    1   0x17
    4   statement id
    1   flags (cursor type)
    4   iteration count (always 1)
    if params > 0:
      (n+7)/8  NULL bitmap
      1        new-params-bound flag
      if flag: n * 2 parameter types (type, 0x80 = unsigned)
      values of the parameters that are neither NULL nor sent as long data
    """

    statement_id: int
    flags: int
    iteration_count: int
    params: tuple[BoundParameter, ...]
    new_params_bound: bool

    @property
    def types(self) -> tuple[tuple[int, bool], ...]:
        return tuple((p.type, p.unsigned) for p in self.params)

    @classmethod
    def parse(
        cls,
        payload: bytes,
        num_params: int,
        previous_types: tuple[tuple[int, bool], ...] | None = None,
        long_data: frozenset[int] = frozenset(),
    ) -> ComStmtExecute:
        r = Reader(payload)
        if r.int1() != Command.STMT_EXECUTE:
            raise ProtocolViolation("not a COM_STMT_EXECUTE packet")
        sid = r.int4()
        flags = r.int1()
        iterations = r.int4()
        if num_params == 0:
            return cls(
                statement_id=sid, flags=flags, iteration_count=iterations, params=(), new_params_bound=False
            )
        bitmap = r.bytes_n((num_params + 7) // 8)
        bound = r.int1() == 1
        types: list[tuple[int, bool]]
        if bound:
            types = []
            for _ in range(num_params):
                t = r.int1()
                types.append((t, bool(r.int1() & PARAM_UNSIGNED)))
        elif previous_types is not None and len(previous_types) == num_params:
            types = list(previous_types)
        else:
            raise ProtocolViolation("COM_STMT_EXECUTE without parameter types for a first execution")
        params: list[BoundParameter] = []
        for i, (t, unsigned) in enumerate(types):
            if bitmap[i // 8] & (1 << (i % 8)):
                params.append(BoundParameter(type=t, unsigned=unsigned, value=None))
            elif i in long_data:
                params.append(BoundParameter(type=t, unsigned=unsigned, value=None, long_data=True))
            elif t == FieldType.NULL:
                params.append(BoundParameter(type=t, unsigned=unsigned, value=None))
            else:
                params.append(
                    BoundParameter(type=t, unsigned=unsigned, value=decode_binary_value(r, t, unsigned))
                )
        return cls(
            statement_id=sid,
            flags=flags,
            iteration_count=iterations,
            params=tuple(params),
            new_params_bound=bound,
        )


#: the parameter types :func:`execute_values` reads inline: integers by size (signed, unsigned)
_INLINE_INTS = {
    int(FieldType.TINY): 1,
    int(FieldType.SHORT): 2,
    int(FieldType.YEAR): 2,
    int(FieldType.INT24): 4,
    int(FieldType.LONG): 4,
    int(FieldType.LONGLONG): 8,
}
#: string types whose value is text (bytes when it is not UTF-8), as :func:`decode_binary_value`
_INLINE_TEXT = TEXT_TYPES


def execute_values(
    payload: bytes,
    num_params: int,
    previous_types: tuple[tuple[int, bool], ...] | None = None,
    long_data: frozenset[int] | set[int] = frozenset(),
    long_marker: Any = None,
) -> tuple[tuple[Any, ...], tuple[tuple[int, bool], ...]]:
    """The parameter values and types of a COM_STMT_EXECUTE, as :meth:`ComStmtExecute.parse`
    reads them but without a message object per parameter (the engine's hot path): integers
    and strings are read inline, other types through :func:`decode_binary_value`. NULLs are
    None, parameters sent as long data are ``long_marker``; ``previous_types`` (returned as
    is) serve when the packet does not bind types again. Raises ProtocolViolation as ``parse``."""
    if len(payload) < 10 or payload[0] != Command.STMT_EXECUTE:
        raise ProtocolViolation("not a COM_STMT_EXECUTE packet (or truncated)")
    if num_params == 0:
        return (), ()
    pos = 10 + (num_params + 7) // 8
    if len(payload) <= pos:
        raise ProtocolViolation("COM_STMT_EXECUTE truncated before its parameters")
    bitmap = payload[10:pos]
    types: tuple[tuple[int, bool], ...]
    if payload[pos] == 1:
        pos += 1
        end = pos + 2 * num_params
        if len(payload) < end:
            raise ProtocolViolation("COM_STMT_EXECUTE truncated in its parameter types")
        types = tuple((payload[i], bool(payload[i + 1] & PARAM_UNSIGNED)) for i in range(pos, end, 2))
        pos = end
    elif previous_types is not None and len(previous_types) == num_params:
        pos += 1
        types = previous_types
    else:
        raise ProtocolViolation("COM_STMT_EXECUTE without parameter types for a first execution")
    n = len(payload)
    values: list[Any] = []
    for i, (t, unsigned) in enumerate(types):
        if bitmap[i >> 3] & (1 << (i & 7)):
            values.append(None)
            continue
        if i in long_data:
            values.append(long_marker)
            continue
        if t == FieldType.NULL:
            values.append(None)
            continue
        size = _INLINE_INTS.get(t)
        if size is not None:
            if pos + size > n:
                raise ProtocolViolation(f"packet truncated: needed {size} bytes at offset {pos} of {n}")
            values.append(int.from_bytes(payload[pos : pos + size], "little", signed=not unsigned))
            pos += size
            continue
        if t in _INLINE_TEXT and pos < n and payload[pos] < 0xFB:
            end = pos + 1 + payload[pos]
            if end > n:
                raise ProtocolViolation(
                    f"packet truncated: needed {end - pos - 1} bytes at offset {pos + 1} of {n}"
                )
            raw = payload[pos + 1 : end]
            pos = end
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(raw)
            continue
        r = Reader(payload, pos)
        values.append(decode_binary_value(r, t, unsigned))
        pos = r.pos
    return tuple(values), types


Command_ = (
    ComQuery
    | ComInitDb
    | ComFieldList
    | ComStmtPrepare
    | ComStmtSendLongData
    | ComStmtClose
    | ComStmtReset
    | ComStmtFetch
    | ComSetOption
    | ComProcessKill
    | SimpleCommand
)


def parse_command(payload: bytes) -> Command_:
    """Parse a command packet whose arguments do not depend on session state.

    COM_STMT_EXECUTE (needs the statement's parameter count) and COM_CHANGE_USER (needs the
    capabilities) have their own ``parse``. Unknown command bytes raise ProtocolViolation.
    """
    if not payload:
        raise ProtocolViolation("empty command packet")
    code = payload[0]
    r = Reader(payload, 1)
    match code:
        case Command.QUERY:
            return ComQuery(query=payload[1:])
        case Command.INIT_DB:
            return ComInitDb(schema=payload[1:])
        case Command.FIELD_LIST:
            table = r.nul_bytes()
            return ComFieldList(table=table, wildcard=r.rest())
        case Command.STMT_PREPARE:
            return ComStmtPrepare(query=payload[1:])
        case Command.STMT_SEND_LONG_DATA:
            sid = r.int4()
            pid = r.int2()
            return ComStmtSendLongData(statement_id=sid, param_id=pid, data=r.rest())
        case Command.STMT_CLOSE:
            return ComStmtClose(statement_id=r.int4())
        case Command.STMT_RESET:
            return ComStmtReset(statement_id=r.int4())
        case Command.STMT_FETCH:
            sid = r.int4()
            return ComStmtFetch(statement_id=sid, num_rows=r.int4())
        case Command.SET_OPTION:
            return ComSetOption(option=r.int2())
        case Command.PROCESS_KILL:
            return ComProcessKill(connection_id=r.int4())
        case (
            Command.QUIT
            | Command.PING
            | Command.STATISTICS
            | Command.RESET_CONNECTION
            | Command.DEBUG
            | Command.PROCESS_INFO
            | Command.TIME
            | Command.SLEEP
            | Command.CONNECT
            | Command.DELAYED_INSERT
            | Command.DAEMON
        ):
            return SimpleCommand(command=Command(code))
        case _:
            name = Command(code).name if code in Command._value2member_map_ else f"0x{code:02x}"
            raise ProtocolViolation(f"command COM_{name} is not supported")
