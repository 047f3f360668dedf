"""Follow a server response frame by frame, without assembling it, to know where it ends.

The proxy relays response bytes unchanged; it only needs to know when the response to a
command is complete, how many rows it carried, whether it failed, and a few values it must
remember (the statement id of COM_STMT_PREPARE_OK, the file name of a LOCAL INFILE request).
:class:`ResponseScanner` reads frame headers and the first byte of row packets only, and skips
row bodies, so a result of any size costs constant memory. Only small packets (OK, ERR, EOF,
column counts) are assembled.

Response shapes (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response.html)::

    OK | ERR | 0xFB LOCAL INFILE request
    | column count, column definitions, [EOF], rows..., EOF-or-OK terminator
    (repeated while the status carries SERVER_MORE_RESULTS_EXISTS)

A row packet and a terminator are told apart by the rule of the documentation: a packet whose
first byte is 0xFE and whose length is below 0xFFFFFF is a terminator.
Counterpart: ``proxy/mysql.py`` feeds it the bytes it forwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from dbward.wire.mysql.constants import MAX_FRAME, ServerStatus
from dbward.wire.mysql.messages import ERRPacket, OKPacket, StmtPrepareOK, terminator_status
from dbward.wire.mysql.packets import ProtocolViolation, Reader

#: plain ints of the status flags tested per response (IntFlag operations cost a call each)
_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)


def _ok_fields(p: bytes) -> tuple[int, int]:
    """Affected rows and status flags of an OK packet (header 0x00 or 0xFE); the common short
    form is read in place, anything else by :meth:`OKPacket.parse` (same answers, same errors)."""
    if len(p) >= 5 and p[1] < 0xFB and p[2] < 0xFB:
        return p[1], p[3] | (p[4] << 8)
    ok = OKPacket.parse(p)
    return ok.affected_rows, ok.status


def _terminator_status(p: bytes) -> int:
    """:func:`terminator_status`, reading the usual 5-byte EOF and short OK in place."""
    n = len(p)
    if n >= 5 and p[0] == 0xFE and (n == 5 or (p[1] < 0xFB and p[2] < 0xFB)):
        # EOF: 0xFE | 2 warnings | 2 status; OK as terminator: 0xFE | affected | insert id | 2 status
        return p[3] | (p[4] << 8)
    return terminator_status(p)


class ResponseKind(StrEnum):
    QUERY = "query"  # COM_QUERY: text result sets, OK, ERR, LOCAL INFILE
    EXECUTE = "execute"  # COM_STMT_EXECUTE: binary result sets, OK, ERR, cursors
    PREPARE = "prepare"  # COM_STMT_PREPARE: PREPARE_OK, parameter and column definitions
    FIELD_LIST = "field_list"  # COM_FIELD_LIST: column definitions up to EOF
    FETCH = "fetch"  # COM_STMT_FETCH: rows up to EOF
    SINGLE = "single"  # one packet: OK/ERR/EOF or COM_STATISTICS' text


class _S(IntEnum):
    FIRST = 0
    COLUMNS = 1
    COLUMNS_EOF = 2
    ROWS = 3
    PREP_PARAMS = 4
    PREP_PARAMS_EOF = 5
    PREP_COLS = 6
    PREP_COLS_EOF = 7
    FIELDS = 8
    INFILE = 9
    DONE = 10


@dataclass(kw_only=True)
class ResultSummary:
    """One result of a response: a result set (rows) or an OK (affected), or the error."""

    rows: int | None = None
    affected: int | None = None
    error: ERRPacket | None = None
    status: int = 0


class ResponseScanner:
    def __init__(self, kind: ResponseKind, *, deprecate_eof: bool) -> None:
        self.kind = kind
        self.deprecate_eof = deprecate_eof
        self.results: list[ResultSummary] = []
        self.prepare_ok: StmtPrepareOK | None = None
        self.infile_name: bytes | None = None
        self.last_seq = 0
        self.bytes_seen = 0
        #: server status flags of the last OK/EOF seen (None when the response carried none)
        self.last_status: int | None = None
        self._pending = bytearray()
        self._skip = 0
        self._cont = False
        self._left = 0
        self._rows = 0
        match kind:
            case ResponseKind.FIELD_LIST:
                self._state = _S.FIELDS
            case ResponseKind.FETCH:
                self._state = _S.ROWS
            case _:
                self._state = _S.FIRST

    @property
    def done(self) -> bool:
        return self._state is _S.DONE

    @property
    def wants_infile(self) -> bool:
        """The server asked for a LOCAL INFILE; the client's file packets come next."""
        return self._state is _S.INFILE

    def resume_after_infile(self) -> None:
        if self._state is not _S.INFILE:
            raise ProtocolViolation("no LOCAL INFILE request is pending")
        self._state = _S.FIRST

    @property
    def rows(self) -> int:
        return sum(r.rows or 0 for r in self.results) + (self._rows if self._state is _S.ROWS else 0)

    def feed(self, data: bytes) -> None:
        """Consume response bytes (any split). Raises ProtocolViolation on malformed input."""
        self.bytes_seen += len(data)
        n = len(data)
        pos = 0
        if self._skip:
            if n <= self._skip:
                self._skip -= n
                return
            pos = self._skip
            self._skip = 0
        if self._pending:
            data = bytes(self._pending) + data[pos:]
            self._pending.clear()
            pos = 0
            n = len(data)
        while pos < n:
            state = self._state
            if state is _S.DONE or state is _S.INFILE:
                raise ProtocolViolation("the server sent bytes after the end of its response")
            if n - pos < 4:
                break
            length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
            self.last_seq = data[pos + 3]
            body = pos + 4
            end = body + length
            if self._cont or state is _S.COLUMNS or state is _S.PREP_PARAMS or state is _S.PREP_COLS:
                if self._cont:
                    self._cont = length == MAX_FRAME
                else:
                    if length >= MAX_FRAME:
                        raise ProtocolViolation("a column definition longer than 16 MiB")
                    self._defs_done()
                if end > n:
                    self._skip = end - n
                    return
                pos = end
                continue
            if state is _S.ROWS:
                if not self._cont:
                    # Rows are skipped in a tight loop over the chunk (the hot path of a large
                    # result): one header read and one first-byte test per row, no objects.
                    rows = 0
                    last = n - 5  # a frame header and the first byte of its body are in the chunk
                    hdr = pos
                    while pos <= last:
                        length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
                        if length and data[pos + 4] >= 0xFE and (data[pos + 4] == 0xFF or length < MAX_FRAME):
                            break  # a terminator or an error: handled below
                        hdr = pos
                        pos += 4 + length
                        rows += 1
                        if length == MAX_FRAME:
                            self._cont = True  # the row goes on in the next frame(s)
                            break
                    self._rows += rows
                    if rows:
                        self.last_seq = data[hdr + 3]
                        if pos > n:
                            self._skip = pos - n
                            return
                        continue
                    # no row: pos, length, body and end still describe the packet read above
                if n - body < 1 and length:
                    break
                first = data[body] if length else 0
                if not ((first == 0xFE and length < MAX_FRAME) or first == 0xFF):
                    self._rows += 1
                    self._cont = length == MAX_FRAME
                    if end > n:
                        self._skip = end - n
                        return
                    pos = end
                    continue
            if length >= MAX_FRAME:
                raise ProtocolViolation("a control packet longer than 16 MiB")
            if end > n:
                break
            self._packet(data[body:end])
            pos = end
        if pos < n:
            self._pending += data[pos:]

    # ------------------------------------------------------------------ packet handlers
    def _defs_done(self) -> None:
        self._left -= 1
        if self._left > 0:
            return
        match self._state:
            case _S.COLUMNS:
                self._state = _S.ROWS if self.deprecate_eof else _S.COLUMNS_EOF
                self._rows = 0
            case _S.PREP_PARAMS:
                self._state = _S.PREP_COLS if self.deprecate_eof else _S.PREP_PARAMS_EOF
                self._after_prep_params()
            case _S.PREP_COLS:
                self._state = _S.DONE if self.deprecate_eof else _S.PREP_COLS_EOF
            case _:
                raise ProtocolViolation("column definitions out of place")

    def _after_prep_params(self) -> None:
        assert self.prepare_ok is not None
        if self._state is _S.PREP_COLS:
            if self.prepare_ok.num_columns:
                self._left = self.prepare_ok.num_columns
            else:
                self._state = _S.DONE

    def _finish(self, status: int) -> None:
        self._state = _S.FIRST if status & _MORE_RESULTS else _S.DONE

    def _packet(self, p: bytes) -> None:
        if not p:
            raise ProtocolViolation("an empty packet where a response was expected")
        head = p[0]
        state = self._state
        if head == 0xFF and state in (_S.FIRST, _S.ROWS, _S.FIELDS):
            rows = self._rows if state is _S.ROWS else None
            self.results.append(ResultSummary(error=ERRPacket.parse(p), rows=rows))
            self._state = _S.DONE
            return
        match state:
            case _S.FIRST:
                if self.kind is ResponseKind.SINGLE:
                    res = ResultSummary()
                    if head == 0x00 and len(p) >= 7:
                        affected, status = _ok_fields(p)
                        res = ResultSummary(affected=affected, status=status)
                        self.last_status = status
                    self.results.append(res)
                    self._state = _S.DONE
                elif self.kind is ResponseKind.PREPARE:
                    self.prepare_ok = StmtPrepareOK.parse(p)
                    if self.prepare_ok.num_params:
                        self._state = _S.PREP_PARAMS
                        self._left = self.prepare_ok.num_params
                    else:
                        self._state = _S.PREP_COLS
                        self._after_prep_params()
                elif head == 0x00:
                    affected, status = _ok_fields(p)
                    self.last_status = status
                    self.results.append(ResultSummary(affected=affected, status=status))
                    self._finish(status)
                elif head == 0xFB and self.kind is ResponseKind.QUERY:
                    self.infile_name = p[1:]
                    self._state = _S.INFILE
                else:
                    count = head if head < 0xFB else Reader(p).lenenc_int_nn()
                    if count == 0:
                        raise ProtocolViolation("a result set with zero columns")
                    self._left = count
                    self._rows = 0
                    self._state = _S.COLUMNS
            case _S.COLUMNS_EOF:
                status = _terminator_status(p)
                if status & _CURSOR_EXISTS and self.kind is ResponseKind.EXECUTE:
                    self.results.append(ResultSummary(rows=0, status=status))
                    self._state = _S.DONE
                else:
                    self._state = _S.ROWS
            case _S.ROWS:
                status = self.last_status = _terminator_status(p)
                self.results.append(ResultSummary(rows=self._rows, status=status))
                self._rows = 0
                if self.kind is ResponseKind.FETCH:
                    self._state = _S.DONE
                else:
                    self._finish(status)
            case _S.PREP_PARAMS_EOF:
                self._state = _S.PREP_COLS
                self._after_prep_params()
            case _S.PREP_COLS_EOF:
                self._state = _S.DONE
            case _S.FIELDS:
                if head == 0xFE:
                    self.results.append(ResultSummary(rows=self._rows))
                    self._state = _S.DONE
                else:
                    self._rows += 1
            case _:
                raise ProtocolViolation(f"unexpected packet in state {state.name}")
