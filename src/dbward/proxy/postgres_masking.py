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

from dbward.policy.model import ColumnMask
from dbward.proxy.masking import ResultMasks, always_null
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
_H = struct.Struct("!h")
_I = struct.Struct("!i")


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
    """Masks the rows of one result described by ``fields`` (formats as sent to the client)."""

    __slots__ = (
        "_by_index",
        "_items",
        "_last",
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
        unpack = _I.unpack_from
        (count,) = _H.unpack_from(body, 0)
        pos = 2
        last = 0
        parts: list[bytes] = []
        enc = self.encoding
        items = self._by_index
        stop = min(count, self._last + 1)
        size = len(body)
        for i in range(stop):
            (length,) = unpack(body, pos)
            end = pos + 4 + (length if length > 0 else 0)
            if end > size:
                raise WireError("DataRow is truncated")
            item = items.get(i)
            if item is not None and length >= 0:
                mask, null, type_oid, fmt = item
                if null:
                    new = b"\xff\xff\xff\xff"
                else:
                    v = body[pos + 4 : end]
                    text = v.decode(enc, "replace") if fmt == 0 else r.binary_to_text(type_oid, v, enc)
                    masked = mask.apply(text, token_key=self.token_key) if text is not None else _REDACTED
                    if masked is None:
                        new = b"\xff\xff\xff\xff"
                    else:
                        data = masked.encode(enc, "replace")
                        new = _I.pack(len(data)) + data
                parts.append(body[last:pos])
                parts.append(new)
                last = end
            pos = end
        parts.append(body[last:])
        out = b"".join(parts)
        return b"D" + _I.pack(len(out) + 4) + out


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
        if len(self.delimiter) != 1:
            raise CopyUnmaskable("a COPY delimiter of more than one character cannot be masked")

    def row(self, body: bytes) -> bytes:
        """A CopyData frame with the masked row (``body`` is the CopyData payload)."""
        if self.first:
            self.first = False
            if self.header:
                return b"d" + (len(body) + 4).to_bytes(4, "big") + body
        line = body.decode(self.encoding, "replace")
        nl = "\n" if line.endswith("\n") else ""
        line = line[:-1] if nl else line
        if self.csv:
            parsed = next(csv.reader([line], delimiter=self.delimiter), [])
            values: list[str | None] = [None if v == self.null else v for v in parsed]
        else:
            values = list(r.split_copy_text(line, self.delimiter, self.null))
        for i, mask in self.masks.items():
            if i < len(values) and values[i] is not None:
                values[i] = mask.apply(values[i], token_key=self.token_key)
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
