"""Masking PostgreSQL results on the wire: RowDescription adjusted, DataRow values decoded
(text or binary format), masked and re-encoded; COPY TO STDOUT rows in text and CSV format.

Counterparts: ``proxy/masking.py`` (which columns, how announced, the audit record),
``wire/postgres/rows.py`` (the codecs), ``proxy/postgres.py`` (when a result is masked).

How a masked column is announced: a mask that always gives NULL keeps the column's type; a
column of a string type (text, varchar, bpchar, name) keeps its type with no length modifier;
any other type (numbers, dates, uuid, json, bytea...) is announced as ``text``, in the format
the client asked for (a text value's binary format is its bytes), for every row of the result.
A binary value of a type dbward cannot read is replaced by ``[REDACTED]``: never relayed.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import struct
from collections.abc import Callable

from dbward.masking.algorithms import SEPARATOR_BYTES
from dbward.policy.model import ColumnMask
from dbward.proxy.masking import (
    Raw,
    ResultMasks,
    SpanMask,
    ValueMasker,
    always_null,
    span_mask,
    text_masker,
    value_masker,
)
from dbward.wire.postgres import rows as r
from dbward.wire.postgres.messages import WireError

#: PostgreSQL client_encoding names -> Python codecs (anything else falls back to UTF-8 if
#: Python does not know the name either)
_ENCODINGS = {
    "UTF8": "utf-8",
    "UNICODE": "utf-8",
    "SQL_ASCII": "latin-1",
    "LATIN1": "latin-1",
    "EUC_KR": "euc_kr",
    "UHC": "cp949",
    "WIN949": "cp949",
    "EUC_JP": "euc_jp",
    "SJIS": "shift_jis",
    "GBK": "gbk",
    "BIG5": "big5",
    "WIN1252": "cp1252",
    "WIN1251": "cp1251",
}

_REDACTED = "[REDACTED]"
_NULL = b"\xff\xff\xff\xff"  # a NULL value: length -1
_H = struct.Struct("!h")
_I = struct.Struct("!i")
_HEAD = struct.Struct("!ihi")  # a DataRow's length, column count and first value's length

#: the span-mask row loop in C (``wire/_speedups.c``), when it was built; None: the Python loop
_mask_span_rows: Callable[..., tuple[bytes, int, int]] | None
try:
    from dbward.wire._speedups import mask_span_rows as _mask_span_rows
except ImportError:  # not built: RowMasker.rows does all of it in Python
    _mask_span_rows = None
_H_I = struct.Struct("!hi")  # a DataRow body's column count and first value's length


def python_encoding(client_encoding: str | None) -> str:
    name = (client_encoding or "UTF8").upper().replace("-", "").replace("_", "_")
    hit = _ENCODINGS.get(name)
    if hit is not None:
        return hit
    try:
        return codecs.lookup(name.lower()).name
    except LookupError:
        return "utf-8"


class RowMasker:
    """Masks the rows of one result described by ``fields`` (formats as sent to the client).

    Per result, each masked column gets one function from its value's bytes to the masked
    bytes (``proxy/masking.value_masker``); per row, only the lengths in front of the last
    masked column are read, and the bytes around the masked values are copied as slices.
    :meth:`rows` does that for a run of DataRow frames in a read buffer in one call."""

    __slots__ = (
        "_by_index",
        "_fns",
        "_items",
        "_last",
        "_single",
        "_span",
        "announced",
        "encoding",
        "fields",
        "masks",
        "nulls",
        "token_key",
    )

    def __init__(
        self, fields: tuple[r.Field, ...], masks: ResultMasks, *, encoding: str, token_key: bytes
    ) -> None:
        self.fields = fields
        self.masks = masks
        self.encoding = encoding
        self.token_key = token_key
        announced = list(fields)
        items: list[tuple[int, ColumnMask, bool, int, int]] = []
        for i, mask in sorted(masks.masks.items()):
            if i >= len(fields):
                continue
            f = fields[i]
            null = always_null(mask)
            if not null:
                if f.type_oid in r.TEXT_TYPES:
                    announced[i] = r.Field(
                        f.name, f.table_oid, f.attnum, f.type_oid, f.type_size, -1, f.format
                    )
                else:
                    announced[i] = f.as_text()
            items.append((i, mask, null, f.type_oid, f.format))
        self.announced = tuple(announced)
        self.nulls = tuple(i for i, _, null, _, _ in items if null)
        self._items = tuple(items)
        self._by_index = {i: (mask, null, t, fmt) for i, mask, null, t, fmt in items}
        self._last = max(self._by_index, default=-1)
        fns: list[ValueMasker | None] = [None] * (self._last + 1)
        for i, mask, null, type_oid, fmt in items:
            fns[i] = self._value_masker(mask, null, type_oid, fmt)
        #: per column up to the last masked one: its masker, or None (copied as it is)
        self._fns = tuple(fns)
        #: the masked column when only one is, and its mask as byte spans (text values)
        self._single = items[0][0] if len(items) == 1 else -1
        self._span: SpanMask | None = None
        if self._single >= 0:
            _, mask, null, type_oid, fmt = items[0]
            if not null and (fmt == 0 or type_oid in r.TEXT_TYPES or type_oid == r.JSON):
                self._span = span_mask(mask, codec_in=encoding, codec_out=encoding)

    def _value_masker(self, mask: ColumnMask, null: bool, type_oid: int, fmt: int) -> ValueMasker:
        if null:
            return _to_null
        enc = self.encoding
        if fmt == 0 or type_oid in r.TEXT_TYPES or type_oid == r.JSON:
            # a text value, or a binary one whose bytes are its text (binary_to_text decodes)
            return value_masker(mask, token_key=self.token_key, codec_in=enc, codec_out=enc)
        text_fn = text_masker(mask, token_key=self.token_key)

        def binary(raw: Raw) -> bytes | None:
            text = r.binary_to_text(type_oid, bytes(raw), enc)
            masked = text_fn(text) if text is not None else _REDACTED
            return None if masked is None else masked.encode(enc, "replace")

        return binary

    def with_formats(self, formats: tuple[int, ...]) -> RowMasker:
        """The same masks over fields whose formats the Bind chose (``formats`` as in Bind:
        none = all text, one = all that, else one per column)."""
        n = len(self.fields)
        if not formats:
            fmts = (0,) * n
        elif len(formats) == 1:
            fmts = (formats[0],) * n
        else:
            fmts = tuple(formats[i] if i < len(formats) else 0 for i in range(n))
        fields = tuple(
            r.Field(f.name, f.table_oid, f.attnum, f.type_oid, f.type_size, f.type_mod, fmts[i])
            for i, f in enumerate(self.fields)
        )
        return RowMasker(fields, self.masks, encoding=self.encoding, token_key=self.token_key)

    @property
    def active(self) -> bool:
        return bool(self._items)

    def description(self) -> bytes:
        return r.encode_row_description(self.announced)

    def names(self) -> list[str]:
        return [f.name.decode(self.encoding, "replace") for f in self.fields]

    def row(self, body: bytes) -> bytes:
        """A DataRow frame with the masked values (``body`` without the 5-byte header).

        Only the masked columns are decoded; the bytes around them are copied as they are."""
        k = self._single
        size = len(body)
        if k < 0 or size < 6:
            return self._row(body)
        count, length = _H_I.unpack_from(body, 0)
        if count <= k:
            return self._row(body)
        pack = _I.pack
        pos = 2
        i = 0
        while i < k:
            pos += 4 + (length if length > 0 else 0)
            if pos + 4 > size:
                raise WireError("DataRow is truncated")
            (length,) = _I.unpack_from(body, pos)
            i += 1
        vs = pos + 4
        ve = vs + (length if length > 0 else 0)
        if ve > size:
            raise WireError("DataRow is truncated")
        if length < 0:
            return b"D" + pack(size + 4) + body
        raw = body[vs:ve]
        span = self._span
        if span is not None and (raw.isalnum() if span.alnum else raw.isascii()):
            keep = span.first + span.last
            if keep >= length:
                return b"".join((b"D", pack(size + 4), body[:vs], span.unit * length, body[ve:]))
            return b"".join(
                (
                    b"D",
                    pack(size + 4),
                    body[: vs + span.first],
                    span.unit * (length - keep),
                    body[ve - span.last :],
                )
            )
        fn = self._fns[k]
        assert fn is not None
        new = fn(raw)
        if new is None:
            return b"".join((b"D", pack(size - length + 4), body[:pos], _NULL, body[ve:]))
        return b"".join(
            (b"D", pack(size + len(new) - length + 4), body[:pos], pack(len(new)), new, body[ve:])
        )

    def _row(self, body: bytes | bytearray) -> bytes:
        """:meth:`row` for any masks: every column up to the last masked one is walked."""
        size = len(body)
        if size < 2:
            raise WireError("DataRow is truncated")
        (count,) = _H.unpack_from(body, 0)
        fns = self._fns
        unpack = _I.unpack_from
        pos = 2
        last = 0
        delta = 0  # how much longer the row gets
        parts: list[bytes | bytearray] = [b""]  # [0]: the frame header, set at the end
        for i in range(min(count, len(fns))):
            if pos + 4 > size:
                raise WireError("DataRow is truncated")
            (length,) = unpack(body, pos)
            end = pos + 4 + (length if length > 0 else 0)
            if end > size:
                raise WireError("DataRow is truncated")
            fn = fns[i]
            if fn is not None and length >= 0:
                new = fn(body[pos + 4 : end])
                if new is None:
                    parts.append(body[last:pos])
                    parts.append(_NULL)
                    delta -= length
                elif len(new) == length:
                    parts.append(body[last : pos + 4])
                    parts.append(new)
                else:
                    parts.append(body[last:pos])
                    parts.append(_I.pack(len(new)))
                    parts.append(new)
                    delta += len(new) - length
                last = end
            pos = end
        if last == 0:
            return b"D" + _I.pack(size + 4) + body
        parts[0] = b"D" + _I.pack(size + delta + 4)
        parts.append(body[last:])
        return b"".join(parts)

    def rows(self, buf: bytes | bytearray, start: int, end: int, limit: int = -1) -> tuple[bytes, int, int]:
        """Mask the run of complete DataRow frames (headers included) that starts at
        ``buf[start]``, as :meth:`row` would one by one: it stops before the first frame that
        is not a DataRow or does not end by ``end``, and after ``limit`` rows (negative: no
        limit). Returns the frames for the client, the position after the last row taken, and
        how many rows were taken (0 when ``buf[start]`` does not begin a complete DataRow).
        A read buffer's worth of rows costs one call; nothing of ``buf`` is kept."""
        k = self._single
        fns = self._fns
        fn = fns[k] if k >= 0 else None
        span = self._span
        first, last, unit, alnum = (
            (span.first, span.last, span.unit, span.alnum) if span else (0, 0, b"", False)
        )
        keep = first + last
        unpack = _I.unpack_from
        head = _HEAD.unpack_from
        pack = _I.pack
        parts: list[bytes | bytearray] = []
        append = parts.append
        p = emitted = start
        taken = 0
        c_span = _mask_span_rows if span is not None and fn is not None else None
        unit_byte = unit[0] if unit else 0
        seps = SEPARATOR_BYTES if alnum else b""  # alnum: the mask keeps separators
        while end - p >= 11 and buf[p] == 0x44 and taken != limit:  # 'D'
            if c_span is not None:
                # the run of rows the C loop can mask; it stops before a row it leaves to us
                masked, q, n = c_span(
                    buf, p, end, limit - taken if limit >= 0 else -1, k, first, last, unit_byte, seps
                )
                if n:
                    if p > emitted:
                        append(buf[emitted:p])
                    append(masked)
                    p = emitted = q
                    taken += n
                    if not (end - p >= 11 and buf[p] == 0x44 and taken != limit):
                        break
            # Int32 length | Int16 column count | Int32 length of the first value
            blen, count, length = head(buf, p + 1)
            e = p + 1 + blen
            if e > end:
                break
            taken += 1
            if fn is None or count <= k or blen < 10:
                # several masked columns, or an odd row: the general way
                append(buf[emitted:p])
                append(self._row(buf[p + 5 : e]))
                p = emitted = e
                continue
            pos = p + 7
            i = 0
            while i < k:
                pos += 4 + (length if length > 0 else 0)
                if pos + 4 > e:
                    raise WireError("DataRow is truncated")
                (length,) = unpack(buf, pos)
                i += 1
            vs = pos + 4
            if length < 0:  # NULL
                p = e
                continue
            ve = vs + length
            if ve > e:
                raise WireError("DataRow is truncated")
            raw = buf[vs:ve]
            if span is not None and (raw.isalnum() if alnum else raw.isascii()):
                if keep >= length:
                    append(buf[emitted:vs])
                    append(unit * length)
                    emitted = ve
                else:  # the kept bytes go with the spans around
                    append(buf[emitted : vs + first])
                    append(unit * (length - keep))
                    emitted = ve - last
                p = e
                continue
            new = fn(raw)
            if new is not None and len(new) == length:
                append(buf[emitted:vs])
                append(new)
            else:
                append(buf[emitted:p])
                if new is None:
                    append(b"D" + pack(blen - length))
                    append(buf[p + 5 : pos])
                    append(_NULL)
                else:
                    append(b"D" + pack(blen + len(new) - length))
                    append(buf[p + 5 : pos])
                    append(pack(len(new)))
                    append(new)
            emitted = ve
            p = e
        if p > emitted:
            append(buf[emitted:p])
        return b"".join(parts), p, taken


def _to_null(raw: Raw) -> None:
    return None


# --------------------------------------------------------------------------- COPY TO STDOUT
class CopyUnmaskable(Exception):
    """A COPY whose format dbward cannot mask (binary, or options it does not parse)."""


_OPT_RE = re.compile(r"\b(quote|escape|force_quote|force_not_null|force_null|encoding)\b", re.IGNORECASE)


class CopyMasker:
    """Masks COPY ... TO STDOUT rows (one CopyData per row) in text or CSV format."""

    def __init__(self, masks: dict[int, ColumnMask], sql: str, *, encoding: str, token_key: bytes) -> None:
        self.masks = masks
        self.encoding = encoding
        self.token_key = token_key
        parts = re.split(r"\bto\s+stdout\b", sql, maxsplit=1, flags=re.IGNORECASE)
        opts = parts[1].lower() if len(parts) == 2 else ""
        if re.search(r"\bbinary\b", opts):
            raise CopyUnmaskable("binary COPY output cannot be masked")
        if _OPT_RE.search(opts):
            raise CopyUnmaskable(
                "COPY options QUOTE, ESCAPE, FORCE_QUOTE, FORCE_NOT_NULL, FORCE_NULL and ENCODING "
                "are not supported on masked results"
            )
        self.csv = bool(re.search(r"\bcsv\b", opts))
        d = re.search(r"\bdelimiter\s+(?:as\s+)?e?'((?:[^']|'')*)'", opts)
        self.delimiter = d.group(1).replace("''", "'") if d else ("," if self.csv else "\t")
        n = re.search(r"\bnull\s+(?:as\s+)?e?'((?:[^']|'')*)'", opts)
        self.null = n.group(1).replace("''", "'") if n else ("" if self.csv else "\\N")
        h = re.search(r"\bheader\b(?:\s+(true|false|on|off|1|0|match))?", opts)
        self.header = h is not None and (h.group(1) or "true") in ("true", "on", "1", "match")
        self.first = True
        self._for: dict[int, ColumnMask] | None = None
        self._fns: tuple[tuple[int, Callable[[str], str | None]], ...] = ()
        if len(self.delimiter) != 1:
            raise CopyUnmaskable("a COPY delimiter of more than one character cannot be masked")

    def _compiled(self) -> tuple[tuple[int, Callable[[str], str | None]], ...]:
        """The masks' text functions (compiled again when the engine replaced ``masks``)."""
        if self._for is not self.masks:
            self._for = self.masks
            self._fns = tuple(
                (i, text_masker(mask, token_key=self.token_key)) for i, mask in self.masks.items()
            )
        return self._fns

    def row(self, body: bytes) -> bytes:
        """A CopyData frame with the masked row (``body`` is the CopyData payload)."""
        if self.first:
            self.first = False
            if self.header:
                return b"d" + (len(body) + 4).to_bytes(4, "big") + body
        line = body.decode(self.encoding, "replace")
        nl = "\n" if line.endswith("\n") else ""
        line = line[:-1] if nl else line
        fns = self._compiled()
        if (
            not self.csv
            and "\\" not in line
            and "\r" not in line
            and "\n" not in line
            and (self.delimiter == "\t" or "\t" not in line)
        ):
            # no escapes: every value is its text, and escaping the others would give them
            # back unchanged, so only the masked values are rewritten
            cells = line.split(self.delimiter)
            for i, fn in fns:
                if i < len(cells) and cells[i] != self.null:
                    masked = fn(cells[i])
                    cells[i] = r.join_copy_text([masked], self.delimiter, self.null)
            data = (self.delimiter.join(cells) + nl).encode(self.encoding, "replace")
            return b"d" + (len(data) + 4).to_bytes(4, "big") + data
        if self.csv:
            parsed = next(csv.reader([line], delimiter=self.delimiter), [])
            values: list[str | None] = [None if v == self.null else v for v in parsed]
        else:
            values = list(r.split_copy_text(line, self.delimiter, self.null))
        for i, fn in fns:
            v = values[i] if i < len(values) else None
            if v is not None:
                values[i] = fn(v)
        if self.csv:
            # a NULL is the null string unquoted; an empty string must then be quoted
            cells = []
            for v in values:
                if v is None:
                    cells.append(self.null)
                else:
                    one = io.StringIO()
                    csv.writer(one, delimiter=self.delimiter, lineterminator="").writerow([v])
                    cell = one.getvalue()
                    cells.append('""' if cell == "" and self.null == "" else cell)
            out = self.delimiter.join(cells)
        else:
            out = r.join_copy_text(values, self.delimiter, self.null)
        data = (out + nl).encode(self.encoding, "replace")
        return b"d" + (len(data) + 4).to_bytes(4, "big") + data
