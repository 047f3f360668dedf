"""Rewriting MySQL/MariaDB responses on the wire: masked values, adjusted column types, row
limits and redacted server errors.

Only responses to statements whose decision carries a masking plan or a row limit come here;
everything else keeps the fast path of ``proxy/mysql.py`` (bytes relayed in large chunks while
:class:`~dbward.wire.mysql.scanner.ResponseScanner` follows them, nothing decoded).

:class:`ResponseRewriter` is sans-IO: response bytes from the target in, bytes for the client
out, one call per chunk read (one write per chunk). It assembles one packet at a time, so
memory stays bounded by the largest row whatever the size of the result, and it renumbers
sequence ids, since dropping rows past a row limit (or adding a row) changes the packet count.

How a masked column is announced (text and binary protocol alike): a mask that always gives
NULL keeps the column's type (NOT NULL dropped); a column of a character string type
(VARCHAR/VAR_STRING/STRING with a character set other than binary, not ENUM/SET) keeps its
type; any other column (numbers, DECIMAL, dates and times, BLOB/BINARY, BIT, JSON, ENUM/SET,
geometry) is announced as VAR_STRING in utf8mb4, for every row of the result. Its length is at
least 256 bytes, so a token or a redaction fits. In the binary protocol the masked value is
then a length-encoded string, and a NULL mask sets the column's bit in the NULL bitmap.

Row limit: after N rows of a result set, its remaining rows are read and dropped (the target's
session stays in step), and its terminator (EOF, or OK with CLIENT_DEPRECATE_EOF) carries one
more warning; the session answers the next ``SHOW WARNINGS`` with the sentence saying where
and why dbward cut the result (``proxy/mysql.py``). A cursor's fetches count cumulatively, and
a cut fetch says "last row sent", so the client stops asking.

Counterparts: ``proxy/masking.py`` (which columns, the audit record, the sentences),
``wire/mysql/rows.py`` (value spans and text forms), ``proxy/mysql.py`` (when a response is
rewritten).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from dbward.masking.algorithms import SEPARATOR_BYTES, Algorithm, MaskSpec
from dbward.masking.plan import WireOrigin
from dbward.policy.model import ColumnMask, MaskingPlan
from dbward.proxy.masking import (
    Raw,
    ResultMasks,
    SpanMask,
    ValueMasker,
    always_null,
    error_sentence,
    result_masks,
    span_mask,
    text_masker,
    value_masker,
)
from dbward.wire.mysql.constants import MAX_FRAME, FieldType, ServerStatus
from dbward.wire.mysql.messages import (
    ColumnDefinition41,
    EOFPacket,
    ERRPacket,
    OKPacket,
    StmtPrepareOK,
    terminator_status,
)
from dbward.wire.mysql.packets import ProtocolViolation, Reader, encode_packet, lenenc_int
from dbward.wire.mysql.rows import (
    LENENC_TYPES,
    binary_value_end,
    binary_value_text,
    encode_text_row,
    lenenc_span,
    null_bitmap_size,
)
from dbward.wire.mysql.scanner import ResponseKind

#: the span-mask text-row loop in C (``wire/_speedups.c``), when it was built; None: the
#: Python loop of ColumnMasker.text_rows does all of it
_mysql_mask_span_rows: Callable[..., tuple[bytes, int, int, int]] | None
try:
    from dbward.wire._speedups import mysql_mask_span_rows as _mysql_mask_span_rows
except ImportError:
    _mysql_mask_span_rows = None

#: utf8mb4_general_ci: the character set a retyped (masked) column is announced in
UTF8MB4 = 45
BINARY_CHARSET = 63
#: the least length announced for a masked column (bytes), so a token or a redaction fits
MASKED_LENGTH = 256
#: column flags a retyped column keeps (NOT_NULL, PRI_KEY, UNIQUE_KEY, MULTIPLE_KEY)
_KEEP_FLAGS = 0x0001 | 0x0002 | 0x0004 | 0x0008
_NOT_NULL = 0x0001
_ENUM_FLAG = 0x0100
_SET_FLAG = 0x0800
_UNSIGNED = 0x0020
_STRING_TYPES = frozenset({FieldType.VARCHAR, FieldType.VAR_STRING, FieldType.STRING})
#: the error number of the row-limit warning (ER_UNKNOWN_ERROR: MariaDB's code for messages of
#: plugins and engines; no server code says "the proxy cut the result")
CUT_WARNING_CODE = 1105

# Python codecs of MySQL character set ids (collation ids). Unknown ids are read as UTF-8.
_LATIN1 = {5, 8, 15, 31, 47, 48, 49, 94}
_ASCII = {11, 65}
_EUCKR = {19, 85}


def python_codec(charset: int) -> str:
    """The Python codec of a MySQL collation id (``binary`` for 63)."""
    if charset == BINARY_CHARSET:
        return "binary"
    if charset in _LATIN1:
        return "cp1252"  # MySQL's latin1 is Windows-1252
    if charset in _ASCII:
        return "ascii"
    if charset in _EUCKR:
        return "euc_kr"
    return "utf-8"


def origin_of(col: ColumnDefinition41) -> WireOrigin | None:
    """(database, table, column) of a column as the wire names it (None: computed)."""
    if not col.org_table or not col.org_name:
        return None
    return (col.schema or None, col.org_table, col.org_name)


def announce(col: ColumnDefinition41, mask: ColumnMask) -> ColumnDefinition41:
    """The column definition the client sees for a column masked with ``mask``."""
    if always_null(mask):
        return dataclasses.replace(col, flags=col.flags & ~_NOT_NULL)
    length = max(col.column_length, MASKED_LENGTH)
    if (
        col.type in _STRING_TYPES
        and col.charset != BINARY_CHARSET
        and not col.flags & (_ENUM_FLAG | _SET_FLAG)
    ):
        return dataclasses.replace(col, column_length=length)
    return dataclasses.replace(
        col,
        type=FieldType.VAR_STRING,
        charset=UTF8MB4,
        column_length=length,
        flags=col.flags & _KEEP_FLAGS,
        decimals=0,
    )


@dataclass(frozen=True, slots=True)
class _Item:
    mask: ColumnMask
    null: bool  # the mask always gives NULL
    codec_in: str  # how the value's bytes are read
    codec_out: str  # how the masked text is written
    typ: int
    unsigned: bool
    decimals: int
    #: the masked bytes of a value's bytes (text protocol, and binary strings), None for NULL
    value: ValueMasker
    #: the masked text of a value's text (binary values of other types)
    text: Callable[[str], str | None]


def _to_null(raw: Raw) -> None:
    return None


#: binary-protocol types whose value is a length-encoded string read as it is (DECIMAL is
#: read as ASCII text)
_BINARY_STRINGS = LENENC_TYPES - {FieldType.DECIMAL, FieldType.NEWDECIMAL}


class ColumnMasker:
    """The masks of one result set over its column definitions: the definitions the client
    sees, and rows (text or binary protocol) with the masked values.

    Each masked column gets, once per result, a function from its value's bytes to the masked
    bytes (``proxy/masking.value_masker``); a row is walked only up to its last masked column,
    and the bytes around masked values are copied as slices. :meth:`text_rows` does that for
    a run of rows in a read buffer in one call."""

    __slots__ = (
        "_items",
        "_last",
        "_row_items",
        "_single",
        "_span",
        "_types",
        "announced",
        "defs",
        "masks",
        "token_key",
    )

    def __init__(self, defs: Sequence[ColumnDefinition41], masks: ResultMasks, *, token_key: bytes) -> None:
        self.defs = tuple(defs)
        self.masks = masks
        self.token_key = token_key
        announced = list(self.defs)
        items: dict[int, _Item] = {}
        for i, mask in sorted(masks.masks.items()):
            if i >= len(self.defs):
                continue
            col = self.defs[i]
            new = announce(col, mask)
            announced[i] = new
            null = always_null(mask)
            codec_in = python_codec(col.charset)
            codec_out = python_codec(new.charset) if new.charset != BINARY_CHARSET else "utf-8"
            items[i] = _Item(
                mask=mask,
                null=null,
                codec_in=codec_in,
                codec_out=codec_out,
                typ=col.type,
                unsigned=bool(col.flags & _UNSIGNED),
                decimals=col.decimals,
                value=_to_null
                if null
                else value_masker(mask, token_key=token_key, codec_in=codec_in, codec_out=codec_out),
                text=text_masker(mask, token_key=token_key),
            )
        self.announced = tuple(announced)
        self._items = items
        self._last = max(items, default=-1)
        self._types = tuple(c.type for c in self.defs)
        #: per column up to the last masked one: its item, or None (copied as it is)
        self._row_items = tuple(items.get(i) for i in range(self._last + 1))
        #: the masked column when only one is, and its mask as byte spans (text protocol)
        self._single = self._last if len(items) == 1 else -1
        self._span: SpanMask | None = None
        if self._single >= 0:
            item = items[self._single]
            if not item.null:
                self._span = span_mask(item.mask, codec_in=item.codec_in, codec_out=item.codec_out)

    @property
    def active(self) -> bool:
        return bool(self._items)

    def names(self) -> list[str]:
        return [c.name for c in self.defs]

    def audit(self) -> list[dict[str, Any]]:
        return self.masks.audit_columns(self.names())

    def text_row(self, p: bytes) -> bytes:
        """A text-protocol row with the masked values (only those are decoded)."""
        parts: list[bytes | bytearray] = []
        pos = last = 0
        size = len(p)
        for item in self._row_items:
            if pos >= size:
                raise ProtocolViolation("text row has fewer values than the result has columns")
            first = p[pos]
            if first < 0xFB:  # the usual short value, read inline
                start = pos + 1
                end = nxt = start + first
                if end > size:
                    raise ProtocolViolation("row truncated in the middle of a value")
            elif first == 0xFB:
                start = end = -1
                nxt = pos + 1
            else:
                start, end = lenenc_span(p, pos)
                nxt = end
            if item is not None and start >= 0:
                v = item.value(p[start:end])
                if v is None:
                    parts.append(p[last:pos])
                    parts.append(b"\xfb")
                elif len(v) == end - start and first < 0xFB:
                    parts.append(p[last:start])
                    parts.append(v)
                else:
                    parts.append(p[last:pos])
                    parts.append(lenenc_int(len(v)))
                    parts.append(v)
                last = nxt
            pos = nxt
        if not parts:
            return p
        parts.append(p[last:])
        return b"".join(parts)

    def text_rows(
        self, buf: bytearray, pos: int, n: int, seq: int, cap: int, out: list[bytes | bytearray]
    ) -> tuple[int, int, int]:
        """Mask a run of complete single-frame text rows starting at ``buf[pos]`` (packet
        headers included) into ``out``, numbering them from ``seq``: it stops before a packet
        that is not all in ``buf[:n]``, of 16 MiB or more, or starting with 0xFE or 0xFF (a
        terminator or an error), and after ``cap`` rows (negative: no cap). Returns the
        position after the last row taken, the next sequence id and how many rows it took."""
        k = self._single
        fn = self._items[k].value if k >= 0 else None
        null = k >= 0 and self._items[k].null
        span = self._span
        first, last, unit, alnum = (
            (span.first, span.last, span.unit, span.alnum) if span else (0, 0, b"", False)
        )
        keep = first + last
        append = out.append
        emitted = pos
        rows = 0
        c_span = _mysql_mask_span_rows if span is not None and fn is not None and not null else None
        unit_byte = unit[0] if unit else 0
        seps = SEPARATOR_BYTES if alnum else b""  # alnum: the mask keeps separators
        while n - pos >= 5:
            if c_span is not None:
                # the run of rows the C loop can mask; it stops before a row it leaves to us
                masked, q, seq, taken = c_span(
                    buf, pos, n, seq, cap - rows if cap >= 0 else -1, k, first, last, unit_byte, seps
                )
                if taken:
                    if pos > emitted:
                        append(buf[emitted:pos])
                    append(masked)
                    pos = emitted = q
                    rows += taken
                    if n - pos < 5:
                        break
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            end = pos + 4 + length
            if end > n or length >= MAX_FRAME or rows == cap:
                break
            lead = buf[pos + 4]
            if lead == 0xFE or lead == 0xFF:
                break
            rows += 1
            same = buf[pos + 3] == seq & 0xFF  # the header can be copied if the length stays
            if fn is None:
                # several masked columns (or none): the general way, row by row
                append(buf[emitted:pos])
                p = self.text_row(bytes(buf[pos + 4 : end]))
                m = len(p)
                if m >= MAX_FRAME:
                    append(encode_packet(bytes(p), seq & 0xFF))
                    seq += m // MAX_FRAME + 1
                else:
                    append(bytes((m & 0xFF, (m >> 8) & 0xFF, m >> 16, seq & 0xFF)))
                    append(p)
                    seq += 1
                pos = emitted = end
                continue
            q = pos + 4
            i = 0
            while i < k:  # the values before the masked one
                if q >= end:
                    raise ProtocolViolation("text row has fewer values than the result has columns")
                b = buf[q]
                if b < 0xFB:
                    q += 1 + b
                elif b == 0xFB:
                    q += 1
                else:
                    q = lenenc_span(buf, q)[1]
                i += 1
            if q >= end:
                raise ProtocolViolation("text row has fewer values than the result has columns")
            b = buf[q]
            if b == 0xFB:  # NULL stays NULL: the row as it is
                if not same:
                    append(buf[emitted:pos])
                    append(bytes((length & 0xFF, (length >> 8) & 0xFF, length >> 16, seq & 0xFF)))
                    emitted = pos + 4
                seq += 1
                pos = end
                continue
            if b < 0xFB:
                vs = q + 1
                ve = vs + b
            else:
                vs, ve = lenenc_span(buf, q)
            if ve > end:
                raise ProtocolViolation("row truncated in the middle of a value")
            if null:
                new = None
            else:
                raw = buf[vs:ve]
                if span is not None and b < 0xFB and (raw.isalnum() if alnum else raw.isascii()):
                    if same:
                        cut = vs if keep >= b else vs + first
                        append(buf[emitted:cut])
                    else:
                        append(buf[emitted:pos])
                        append(bytes((length & 0xFF, (length >> 8) & 0xFF, length >> 16, seq & 0xFF)))
                        cut = vs if keep >= b else vs + first
                        append(buf[pos + 4 : cut])
                    if keep >= b:
                        append(unit * b)
                        emitted = ve
                    else:
                        append(unit * (b - keep))
                        emitted = ve - last
                    seq += 1
                    pos = end
                    continue
                new = fn(raw)
            if new is not None and b < 0xFB and len(new) == b:
                # the same length (and so the same one-byte length prefix): only the value changes
                if same:
                    append(buf[emitted:vs])
                else:
                    append(buf[emitted:pos])
                    append(bytes((length & 0xFF, (length >> 8) & 0xFF, length >> 16, seq & 0xFF)))
                    append(buf[pos + 4 : vs])
                append(new)
                emitted = ve
            else:
                if new is None:
                    value: bytes | bytearray = b"\xfb"
                elif len(new) < 0xFB:
                    value = bytes((len(new),)) + new
                else:
                    value = lenenc_int(len(new)) + new
                m = length - (ve - q) + len(value)
                append(buf[emitted:pos])
                if m >= MAX_FRAME:
                    append(encode_packet(bytes(buf[pos + 4 : q]) + value + bytes(buf[ve:end]), seq & 0xFF))
                    seq += m // MAX_FRAME + 1
                    pos = emitted = end
                    continue
                append(bytes((m & 0xFF, (m >> 8) & 0xFF, m >> 16, seq & 0xFF)))
                append(buf[pos + 4 : q])
                append(value)
                emitted = ve
            seq += 1
            pos = end
        if pos > emitted:
            append(buf[emitted:pos])
        return pos, seq, rows

    def binary_row(self, p: bytes | bytearray) -> bytes:
        """A binary-protocol row with the masked values; a NULL mask sets the NULL bit."""
        ncols = len(self._types)
        size = null_bitmap_size(ncols)
        if len(p) < 1 + size or p[0] != 0x00:
            raise ProtocolViolation("binary row does not start with 0x00 and its NULL bitmap")
        bitmap = bytearray(p[1 : 1 + size])
        pos = last = 1 + size
        parts: list[bytes | bytearray] = []
        items = self._items
        types = self._types
        for i in range(self._last + 1):
            bit = i + 2
            if bitmap[bit >> 3] & (1 << (bit & 7)):
                continue  # NULL: no bytes in the row
            typ = types[i]
            item = items.get(i)
            if item is None:
                pos = binary_value_end(p, pos, typ)
                continue
            v: bytes | bytearray | None = None
            if typ in _BINARY_STRINGS:
                start, end = lenenc_span(p, pos)
                if not item.null:
                    v = item.value(p[start:end])
            else:
                end = binary_value_end(p, pos, typ)
                if not item.null:
                    text = binary_value_text(bytes(p[pos:end]), item.typ, item.unsigned, item.decimals)
                    if isinstance(text, bytes):
                        v = item.value(text)
                    else:
                        masked = item.text(text)
                        v = None if masked is None else masked.encode(item.codec_out, "replace")
            parts.append(p[last:pos])
            if v is None:
                bitmap[bit >> 3] |= 1 << (bit & 7)
            else:
                parts.append(lenenc_int(len(v)))
                parts.append(v)
            last = end
            pos = end
        parts.append(p[last:])
        return b"\x00" + bytes(bitmap) + b"".join(parts)


@dataclass(frozen=True, slots=True)
class ResultPolicy:
    """What applies to the results of one statement: its masking plan and row limit, and
    masks of its own for given result columns (``SHOW WARNINGS`` after a masked statement)."""

    plan: MaskingPlan | None
    limit: int | None
    connection: str
    extra: tuple[tuple[int, ColumnMask], ...] = ()
    owner: int = 0  # the statement (of the command's batch) the results belong to


def diagnostics_mask(plan: MaskingPlan) -> ColumnMask:
    """The mask of the Message column of ``SHOW WARNINGS`` / ``SHOW ERRORS`` after a statement
    that read masked values: a warning can quote one (``Truncated incorrect INTEGER value:
    '010-1234-5678'``), so its text is replaced by a sentence naming the masking rules."""
    rules = sorted({r for m in plan.columns.values() for r in m.rule_ids} | set(plan.rule_ids))
    names = ", ".join(r.removeprefix("masking:") for r in rules) or "of this connection"
    sentence = (
        "dbward hides the text of this condition: the statement before read columns masked by "
        f"masking rule {names}, and a warning or error can quote a masked value"
    )
    return ColumnMask(
        spec=MaskSpec(algorithm=Algorithm.FIXED, replacement=sentence),
        rule_ids=tuple(rules) or ("masking:diagnostics",),
    )


@dataclass(kw_only=True)
class ResultNote:
    """What the rewriter did to one result of the response (in order)."""

    policy_index: int
    audit: list[dict[str, Any]] | None = None  # the masked columns (None: none)
    cut: bool = False
    rows: int = 0  # rows sent to the client
    #: the target reported warnings or an error for it (SHOW WARNINGS would list them)
    conditions: bool = False


@dataclass(kw_only=True)
class CursorState:
    """A cursor opened by COM_STMT_EXECUTE of a rewritten statement: its fetches are rewritten
    with the same masks, and the row limit counts over all of them."""

    masker: ColumnMasker | None
    policy: ResultPolicy
    rows: int = 0
    cut: bool = False


class _S(IntEnum):
    FIRST = 0
    COLUMNS = 1
    COLUMNS_EOF = 2
    ROWS = 3
    PREP_PARAMS = 4
    PREP_PARAMS_EOF = 5
    PREP_COLS = 6
    PREP_COLS_EOF = 7
    INFILE = 8
    DONE = 9


@dataclass(kw_only=True)
class _Result:
    policy: ResultPolicy
    note: ResultNote
    defs: list[ColumnDefinition41] = field(default_factory=list)
    left: int = 0
    masker: ColumnMasker | None = None


class ResponseRewriter:
    """Rewrites the response to one command (COM_QUERY, COM_STMT_EXECUTE, COM_STMT_PREPARE,
    COM_STMT_FETCH). ``policies[k]`` applies to the k-th result (the last one to any further
    results: a CALL's result sets). ``append_rows`` are text rows added at the end of the
    first result set (dbward's own line of ``SHOW WARNINGS``)."""

    def __init__(
        self,
        kind: ResponseKind,
        *,
        deprecate_eof: bool,
        policies: Sequence[ResultPolicy],
        token_key: bytes = b"",
        append_rows: Sequence[Sequence[bytes | None]] = (),
        cursor: CursorState | None = None,
    ) -> None:
        if not policies:
            raise ValueError("a rewriter needs at least one policy")
        self.kind = kind
        self.deprecate_eof = deprecate_eof
        self.policies = tuple(policies)
        self.token_key = token_key
        self.append_rows = tuple(append_rows)
        self.notes: list[ResultNote] = []
        #: a cursor this EXECUTE opened (its fetches are rewritten with it)
        self.cursor: CursorState | None = None
        self._fetch = cursor
        self.binary = kind in (ResponseKind.EXECUTE, ResponseKind.FETCH)
        self._buf = bytearray()
        self._skip = 0  # bytes of a dropped row still to come
        self._seq: int | None = None  # the next sequence id towards the client
        self._out: list[bytes | bytearray] = []
        self._seg = -1  # start of a run of input bytes relayed unchanged
        self._seg_end = -1
        self._res: _Result | None = None
        self._left = 0
        self._prep: StmtPrepareOK | None = None
        if kind is ResponseKind.FETCH:
            if cursor is None:
                raise ValueError("a fetch is rewritten with the state of its cursor")
            self._state = _S.ROWS
            note = ResultNote(policy_index=0, rows=cursor.rows, cut=cursor.cut)
            self._res = _Result(policy=cursor.policy, note=note, masker=cursor.masker)
            self.notes.append(note)
        else:
            self._state = _S.FIRST

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self._state is _S.DONE

    @property
    def wants_infile(self) -> bool:
        return self._state is _S.INFILE

    def resume_after_infile(self) -> None:
        if self._state is not _S.INFILE:
            raise ProtocolViolation("no LOCAL INFILE request is pending")
        self._state = _S.FIRST
        self._seq = None  # the target's answer follows the client's file packets

    @property
    def cut(self) -> bool:
        return any(n.cut for n in self.notes)

    def _policy(self, index: int) -> tuple[int, ResultPolicy]:
        i = min(index, len(self.policies) - 1)
        return i, self.policies[i]

    # ------------------------------------------------------------------ output
    def _flush_seg(self) -> None:
        if self._seg >= 0:
            self._out.append(bytes(self._buf[self._seg : self._seg_end]))
            self._seg = -1

    def _verbatim(self, start: int, end: int, in_seq: int, frames: int) -> None:
        """Relay input bytes unchanged when their sequence ids are already right."""
        if self._seq is None:
            self._seq = in_seq
        if in_seq != self._seq & 0xFF:
            self._emit(_payload(self._buf, start, end))
            return
        self._seq += frames
        if self._seg >= 0 and self._seg_end == start:
            self._seg_end = end
        else:
            self._flush_seg()
            self._seg, self._seg_end = start, end

    def _emit(self, payload: bytes, *, in_seq: int | None = None) -> None:
        self._flush_seg()
        if self._seq is None:
            self._seq = in_seq if in_seq is not None else 1
        self._out.append(encode_packet(payload, self._seq & 0xFF))
        self._seq += len(payload) // MAX_FRAME + 1

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes) -> bytes:
        """Consume response bytes (any split); the bytes for the client. Raises
        ProtocolViolation on malformed input."""
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return b""
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        self._out = []
        while pos < n:
            state = self._state
            if state is _S.ROWS:
                pos = self._rows(pos, n)
                if n - pos < 4:
                    break
            if state is _S.DONE or state is _S.INFILE:
                raise ProtocolViolation("the server sent bytes after the end of its response")
            if n - pos < 4:
                break
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            seq = buf[pos + 3]
            end = pos + 4 + length
            if self._seq is None:
                self._seq = seq
            if length < MAX_FRAME:
                frames = 1
                if state is _S.ROWS and self._dropping() and length and end > n and pos + 4 < n:
                    first = buf[pos + 4]
                    if first not in (0xFE, 0xFF):
                        # a dropped row that is not all here yet: skip it without keeping it
                        assert self._res is not None
                        self._res.note.cut = True
                        self._skip = end - n
                        pos = n
                        break
                if end > n:
                    break
            else:
                # a packet of several frames (16 MiB and more): wait for all of it
                end, frames = _extent(buf, pos)
                if end < 0:
                    break
            self._packet(pos, end, seq, frames)
            pos = end
        self._flush_seg()
        del buf[:pos]
        out = self._out
        self._out = []
        if len(out) == 1 and type(out[0]) is bytes:
            return out[0]
        return b"".join(out)

    def _rows(self, pos: int, n: int) -> int:
        """The hot loop: consecutive complete single-frame rows of a result set, masked,
        counted or relayed; stops at anything else (terminator, error, a packet not all here,
        a row past the limit, a row of 16 MiB or more), which the general path handles."""
        res = self._res
        if res is None or self._seq is None:
            return pos
        buf = self._buf
        limit = res.policy.limit
        note = res.note
        masker = res.masker
        if limit is not None and note.rows >= limit:
            while n - pos >= 5:  # past the limit: dropped, the target's session kept in step
                length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
                end = pos + 4 + length
                first = buf[pos + 4]
                if end > n or not length or length >= MAX_FRAME or first == 0xFE or first == 0xFF:
                    break
                note.cut = True
                pos = end
            return pos
        if masker is None:
            cap = limit if limit is not None else 1 << 62
            start, seq, rows = pos, self._seq, note.rows
            while n - pos >= 5:  # counted only: relayed in one run while sequence ids agree
                length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
                end = pos + 4 + length
                first = buf[pos + 4]
                if end > n or not length or length >= MAX_FRAME or rows >= cap:
                    break
                if first == 0xFE or first == 0xFF or buf[pos + 3] != seq & 0xFF:
                    break
                seq += 1
                rows += 1
                pos = end
            if pos > start:
                if self._seg >= 0 and self._seg_end == start:
                    self._seg_end = pos
                else:
                    self._flush_seg()
                    self._seg, self._seg_end = start, pos
                self._seq, note.rows = seq, rows
            return pos
        self._flush_seg()
        out = self._out
        seq = self._seq
        rows = note.rows
        cap = limit if limit is not None else -1
        if not self.binary:
            pos, seq, taken = masker.text_rows(buf, pos, n, seq, cap - rows if cap >= 0 else -1, out)
            self._seq = seq
            note.rows = rows + taken
            return pos
        row = masker.binary_row
        append = out.append
        while n - pos >= 4:
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            end = pos + 4 + length
            if end > n or length >= MAX_FRAME or rows == cap:
                break
            first = buf[pos + 4] if length else 0
            if first == 0xFE or first == 0xFF:
                break
            p = row(bytes(buf[pos + 4 : end]))
            m = len(p)
            if m >= MAX_FRAME:
                append(encode_packet(p, seq & 0xFF))
                seq += m // MAX_FRAME + 1
            else:
                append(bytes((m & 0xFF, (m >> 8) & 0xFF, m >> 16, seq & 0xFF)))
                append(p)
                seq += 1
            rows += 1
            pos = end
        self._seq = seq
        note.rows = rows
        return pos

    def _dropping(self) -> bool:
        """Rows of the current result are past its row limit."""
        res = self._res
        if res is None:
            return False
        limit = res.policy.limit
        return res.note.cut or (limit is not None and res.note.rows >= limit)

    # ------------------------------------------------------------------ packets
    def _packet(self, start: int, end: int, seq: int, frames: int) -> None:
        buf = self._buf
        body = start + 4
        length = end - body - 4 * (frames - 1)
        head = buf[body] if end > body else -1
        state = self._state
        if state is _S.ROWS and not ((head == 0xFE and length < MAX_FRAME) or head == 0xFF):
            self._row(start, end, seq, frames)
            return
        if state in (_S.COLUMNS, _S.PREP_COLS):
            self._column(_payload(buf, start, end), seq)
            return
        if state is _S.PREP_PARAMS:
            self._verbatim(start, end, seq, frames)
            self._left -= 1
            if self._left <= 0:
                self._state = _S.PREP_COLS if self.deprecate_eof else _S.PREP_PARAMS_EOF
                self._after_prep_params()
            return
        if length >= MAX_FRAME:
            raise ProtocolViolation("a control packet longer than 16 MiB")
        p = bytes(buf[body:end])
        if not p:
            raise ProtocolViolation("an empty packet where a response was expected")
        if head == 0xFF and state in (_S.FIRST, _S.ROWS):
            self._error(p, seq)
            return
        match state:
            case _S.FIRST:
                self._first(p, start, end, seq)
            case _S.COLUMNS_EOF:
                status = terminator_status(p)
                self._verbatim(start, end, seq, 1)
                if status & ServerStatus.CURSOR_EXISTS and self.kind is ResponseKind.EXECUTE:
                    self._open_cursor()
                    self._state = _S.DONE
                else:
                    self._state = _S.ROWS
            case _S.ROWS:
                self._terminator(p, start, end, seq)
            case _S.PREP_PARAMS_EOF:
                self._verbatim(start, end, seq, 1)
                self._state = _S.PREP_COLS
                self._after_prep_params()
            case _S.PREP_COLS_EOF:
                self._verbatim(start, end, seq, 1)
                self._state = _S.DONE
            case _:
                raise ProtocolViolation(f"unexpected packet in state {state.name}")

    def _first(self, p: bytes, start: int, end: int, seq: int) -> None:
        head = p[0]
        if self.kind is ResponseKind.PREPARE:
            self._prep = StmtPrepareOK.parse(p)
            self._verbatim(start, end, seq, 1)
            _, policy = self._policy(0)
            self._res = _Result(policy=policy, note=ResultNote(policy_index=0))
            if self._prep.num_params:
                self._state = _S.PREP_PARAMS
                self._left = self._prep.num_params
            else:
                self._state = _S.PREP_COLS
                self._after_prep_params()
            return
        if head == 0x00:
            ok = OKPacket.parse(p)
            idx, _ = self._policy(len(self.notes))
            self.notes.append(ResultNote(policy_index=idx, conditions=ok.warnings > 0))
            self._verbatim(start, end, seq, 1)
            self._finish(ok.status)
            return
        if head == 0xFB and self.kind is ResponseKind.QUERY:
            if self._seq is not None and (seq != self._seq & 0xFF):
                raise ProtocolViolation(
                    "a LOCAL INFILE request after rows dbward dropped (the client's file packets "
                    "would be out of sequence)"
                )
            self._verbatim(start, end, seq, 1)
            self._state = _S.INFILE
            return
        count = Reader(p).lenenc_int_nn()
        if count == 0:
            raise ProtocolViolation("a result set with zero columns")
        idx, policy = self._policy(len(self.notes))
        note = ResultNote(policy_index=idx)
        self.notes.append(note)
        self._res = _Result(policy=policy, note=note, left=count)
        self._emit(p, in_seq=seq)
        self._state = _S.COLUMNS

    def _after_prep_params(self) -> None:
        assert self._prep is not None and self._res is not None
        if self._state is _S.PREP_COLS:
            if self._prep.num_columns:
                self._res.left = self._prep.num_columns
            else:
                self._state = _S.DONE

    def _column(self, p: bytes, seq: int) -> None:
        res = self._res
        assert res is not None
        res.defs.append(ColumnDefinition41.parse(p))
        res.left -= 1
        if res.left > 0:
            return
        plan = res.policy.plan
        origins = [origin_of(c) for c in res.defs]
        masks = result_masks(plan, origins)
        if res.policy.extra:
            extra = {i: m for i, m in res.policy.extra if i < len(res.defs)}
            masks = ResultMasks({**masks.masks, **extra}, masks.wire_only)
        masker = ColumnMasker(res.defs, masks, token_key=self.token_key)
        res.masker = masker if masker.active else None
        for c in masker.announced:
            self._emit(c.encode(), in_seq=seq)
        if self._state is _S.PREP_COLS:
            self._state = _S.DONE if self.deprecate_eof else _S.PREP_COLS_EOF
            return
        if res.masker is not None:
            res.note.audit = res.masker.audit()
        self._state = _S.ROWS if self.deprecate_eof else _S.COLUMNS_EOF

    def _row(self, start: int, end: int, seq: int, frames: int) -> None:
        res = self._res
        assert res is not None
        note = res.note
        limit = res.policy.limit
        if limit is not None and note.rows >= limit:
            note.cut = True
            return
        note.rows += 1
        if res.masker is None:
            self._verbatim(start, end, seq, frames)
            return
        p = _payload(self._buf, start, end)
        self._emit(res.masker.binary_row(p) if self.binary else res.masker.text_row(p), in_seq=seq)

    def _terminator(self, p: bytes, start: int, end: int, seq: int) -> None:
        res = self._res
        assert res is not None
        note = res.note
        if self.append_rows and len(self.notes) == 1 and not self.binary:
            for row in self.append_rows:
                self._emit(encode_text_row(row), in_seq=seq)
        status = terminator_status(p)
        warnings = EOFPacket.parse(p).warnings if len(p) <= 5 else OKPacket.parse(p).warnings
        note.conditions = note.conditions or warnings > 0
        if note.cut:
            if len(p) <= 5:
                eof = EOFPacket.parse(p)
                new_status = eof.status | (
                    ServerStatus.LAST_ROW_SENT if self.kind is ResponseKind.FETCH else 0
                )
                self._emit(EOFPacket(warnings=min(eof.warnings + 1, 0xFFFF), status=new_status).encode())
            else:
                ok = OKPacket.parse(p)
                new_status = ok.status | (
                    ServerStatus.LAST_ROW_SENT if self.kind is ResponseKind.FETCH else 0
                )
                self._emit(
                    dataclasses.replace(ok, warnings=min(ok.warnings + 1, 0xFFFF), status=new_status).encode()
                )
        else:
            self._verbatim(start, end, seq, 1)
        if self._fetch is not None:
            self._fetch.rows = note.rows
            self._fetch.cut = self._fetch.cut or note.cut
            self._state = _S.DONE
            return
        if self.kind is ResponseKind.EXECUTE and status & ServerStatus.CURSOR_EXISTS and note.rows == 0:
            self._open_cursor()
            self._state = _S.DONE
            return
        self._finish(status)

    def _open_cursor(self) -> None:
        res = self._res
        assert res is not None
        self.cursor = CursorState(masker=res.masker, policy=res.policy)

    def _error(self, p: bytes, seq: int) -> None:
        err = ERRPacket.parse(p)
        res = self._res if self._state is _S.ROWS else None
        if res is None:
            idx, policy = self._policy(len(self.notes))
            self.notes.append(ResultNote(policy_index=idx, conditions=True))
        else:
            policy = res.policy
            res.note.conditions = True
        plan = policy.plan
        if plan is not None and (plan.redact_errors or (res is not None and res.masker is not None)):
            err = dataclasses.replace(err, message=error_sentence(plan))
            self._emit(err.encode(), in_seq=seq)
        else:
            self._emit(p, in_seq=seq)
        self._state = _S.DONE

    def _finish(self, status: int) -> None:
        self._res = None
        self._state = _S.FIRST if status & ServerStatus.MORE_RESULTS_EXISTS else _S.DONE


def _payload(buf: bytearray, start: int, end: int) -> bytes:
    """The payload of the packet framed at buf[start:end] (its frames joined)."""
    length = buf[start] | (buf[start + 1] << 8) | (buf[start + 2] << 16)
    if length < MAX_FRAME:
        return bytes(buf[start + 4 : end])
    parts: list[bytes] = []
    pos = start
    while pos < end:
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        parts.append(bytes(buf[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return b"".join(parts)


def _extent(buf: bytearray, pos: int) -> tuple[int, int]:
    """(end, frames) of the multi-frame packet at ``pos``; (-1, 0) while it is incomplete."""
    n = len(buf)
    frames = 0
    while True:
        if n - pos < 4:
            return -1, 0
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        pos += 4 + length
        frames += 1
        if pos > n:
            return -1, 0
        if length < MAX_FRAME:
            return pos, frames
