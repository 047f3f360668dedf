"""Applying a masking plan to results as they stream past, the parts both engines share:
the masks of one result (the plan's columns plus the wire cross-check), how a masked column
is announced to the client, and the audit record of what was masked.

Counterparts: ``masking/plan.py`` builds the plan at decision time; ``proxy/postgres_masking.py``
and ``proxy/mysql_masking.py`` mask rows with what this module decides, using its value
maskers (a masked column's value bytes to the masked bytes, compiled once per mask). Nothing
here does I/O.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, cast

from dbward.masking.algorithms import (
    SEPARATOR_BYTES,
    Algorithm,
    MaskSpec,
    compile_spec,
    partial,
    partial_counts,
    token_function,
)
from dbward.masking.plan import WireOrigin, wire_mask_columns
from dbward.policy.model import ColumnMask, MaskingPlan

#: masks every column of a result whose wire origin dbward's catalog does not know
STALE_CATALOG_MASK = ColumnMask(
    spec=MaskSpec(algorithm=Algorithm.REDACT), rule_ids=("masking:stale-catalog",)
)


def always_null(mask: ColumnMask) -> bool:
    """Whether every value the mask produces is NULL (the column keeps its announced type)."""
    return mask.pattern is None and mask.spec is not None and mask.spec.algorithm is Algorithm.NULL


@dataclass(frozen=True, slots=True)
class ResultMasks:
    """The masks of one result: column index -> mask, and which of them only the wire's column
    origins found (lineage missed them)."""

    masks: dict[int, ColumnMask]
    wire_only: frozenset[int] = frozenset()

    def audit_columns(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """The ``columns`` of a MaskingApplied event: per masked column its name (``column``),
        the masking rule(s) (``rule``, comma-separated; ``rules`` as a list), ``algorithm``,
        its 1-based ``position``, the ``sources`` it derives from, and ``wire_origin`` when
        only the wire's column origin found it (lineage did not)."""
        out: list[dict[str, Any]] = []
        for i, m in sorted(self.masks.items()):
            out.append(
                {
                    "column": names[i] if i < len(names) else f"column {i + 1}",
                    "rule": ", ".join(m.rule_ids),
                    "algorithm": m.how,
                    "position": i + 1,
                    "rules": list(m.rule_ids),
                    "sources": list(m.sources),
                    "wire_origin": i in self.wire_only,
                }
            )
        return out


def result_masks(plan: MaskingPlan | None, origins: Sequence[WireOrigin | None]) -> ResultMasks:
    """The masks of a result with these wire column origins (see ``wire_mask_columns``)."""
    if plan is None:
        return ResultMasks({})
    masks = wire_mask_columns(plan, origins)
    masks = {i: m for i, m in masks.items() if i < len(origins)}
    wire_only = frozenset(i for i in masks if not plan.mask_all and i not in plan.columns)
    return ResultMasks(masks, wire_only)


def stale_masks(count: int) -> ResultMasks:
    """Every column masked: the result comes from a table dbward's catalog does not know."""
    return ResultMasks(dict.fromkeys(range(count), STALE_CATALOG_MASK))


def error_sentence(plan: MaskingPlan) -> str:
    """What the client reads in place of a server error of a statement reading masked values."""
    rules = sorted({r for m in plan.columns.values() for r in m.rule_ids} | set(plan.rule_ids))
    names = ", ".join(r.removeprefix("masking:") for r in rules) or "of this connection"
    return (
        f"the statement failed on the target; dbward hides the server's error text because the "
        f"statement reads columns masked by masking rule {names}, and an error can quote a masked value"
    )


def cut_notice(limit: int, connection: str) -> str:
    return (
        f"dbward cut the result at {limit} rows (connection policy max_rows of connection {connection}); "
        "the remaining rows were not sent"
    )


# --------------------------------------------------------------------------- values on the wire
#: a value's bytes as the result paths hold them (slices of a frame or of a read buffer)
Raw = bytes | bytearray
#: a masked value from a value's bytes: the masked value's bytes, or None for NULL
ValueMasker = Callable[[Raw], bytes | bytearray | None]

#: per-result caches of deterministic maskers (tokens, patterns): at most this many values of
#: at most CACHE_VALUE_BYTES bytes each, so memory stays flat whatever the result's size
CACHE_ENTRIES = 2048
CACHE_VALUE_BYTES = 256
_ASCII = bytes(range(128))
_MISS = object()


def text_masker(mask: ColumnMask, *, token_key: bytes) -> Callable[[str], str | None]:
    """``mask.apply(value, token_key=token_key)`` for a value that is not None, with the mask's
    parameters bound once (see ``ColumnMask.apply``: a token's context is the first rule id)."""
    return _once(_text_masker, mask, token_key)


def _text_masker(mask: ColumnMask, token_key: bytes) -> Callable[[str], str | None]:
    if mask.pattern is not None:
        return mask.pattern.apply
    spec = mask.spec or MaskSpec(algorithm=Algorithm.FULL)
    return compile_spec(spec, token_key=token_key, context=mask.rule_ids[0] if mask.rule_ids else "")


_T = TypeVar("_T")
#: what is compiled per (mask, key, codecs), kept for the next results (stateless functions
#: only): keyed by the mask's identity, with the mask kept in the entry so that its id cannot
#: be reused while the entry lives (hashing a mask costs more than compiling a partial mask)
_COMPILED: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_COMPILED_ENTRIES = 512


def _once(build: Callable[..., _T], mask: ColumnMask, *args: Any) -> _T:
    """``build(mask, *args)``, computed once per mask object and arguments (a result's masks
    are compiled when it starts, and an OLTP statement's result may have one row). Bounded:
    emptied when full."""
    key = (build, id(mask), *args)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is mask:
        return cast(_T, hit[1])
    out = build(mask, *args)
    if len(_COMPILED) >= _COMPILED_ENTRIES:
        _COMPILED.clear()
    _COMPILED[key] = (mask, out)
    return out


@lru_cache(maxsize=64)
def ascii_transparent(codec: str) -> bool:
    """Whether ``codec`` reads and writes the 128 ASCII bytes as those characters, so an ASCII
    value's bytes are its text in it, and stateless enough that masked text can be written
    piece by piece (``"**".encode() == "*".encode() * 2``)."""
    try:
        ok = _ASCII.decode(codec) == _ASCII.decode("ascii") and _ASCII.decode("ascii").encode(codec) == _ASCII
        codecs.lookup(codec)
    except (LookupError, UnicodeError):
        return False
    return ok


def _repeatable(char: str, codec: str) -> bytes | None:
    """``char``'s bytes in ``codec`` when ``char * n`` is those bytes ``n`` times, else None."""
    one = char.encode(codec, "replace")
    return one if (char * 3).encode(codec, "replace") == one * 3 else None


def decoder(codec: str) -> Callable[[Raw], str]:
    """How the result paths read a value's bytes as text: in ``codec`` with undecodable bytes
    replaced, or for "binary" (MySQL's binary character set) as UTF-8 if they are, else as
    ``0x`` and their hexadecimal digits."""
    if codec != "binary":
        return lambda raw: raw.decode(codec, "replace")

    def binary(raw: Raw) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + raw.hex()

    return binary


def value_masker(mask: ColumnMask, *, token_key: bytes, codec_in: str, codec_out: str) -> ValueMasker:
    """One masked column's values from their bytes on the wire to the masked bytes sent on:
    exactly ``mask.apply(decoder(codec_in)(raw)).encode(codec_out, "replace")`` (None stays
    None).

    Shortcuts that give the same bytes: an ASCII value in ASCII-transparent codecs is worked on
    as bytes (no decoding for full and partial masks, and its bytes are its UTF-8 for a
    token); constants are encoded once; tokens and patterns, which cost a hash or regular
    expressions per value but give equal outputs for equal inputs, keep the outputs of the
    last few thousand distinct short values (a cache of this result's own)."""
    fn, repeats = _once(_value_masker, mask, token_key, codec_in, codec_out)
    return _cached(fn) if repeats else fn


def _value_masker(
    mask: ColumnMask, token_key: bytes, codec_in: str, codec_out: str
) -> tuple[ValueMasker, bool]:
    """(the masker, whether it is worth a cache of outputs)"""
    text = text_masker(mask, token_key=token_key)
    decode = decoder(codec_in)

    def slow(raw: Raw) -> bytes | None:
        out = text(decode(raw))
        return None if out is None else out.encode(codec_out, "replace")

    ascii_ok = (codec_in == "binary" or ascii_transparent(codec_in)) and ascii_transparent(codec_out)
    if mask.pattern is not None:
        return slow, True
    spec = mask.spec or MaskSpec(algorithm=Algorithm.FULL)
    algo = spec.algorithm
    if algo is Algorithm.NULL:
        return (lambda raw: None), False
    if algo in (Algorithm.REDACT, Algorithm.FIXED) or (algo is Algorithm.TOKEN and not token_key):
        const = slow(b"")  # the same for every value
        return (lambda raw: const), False
    if algo is Algorithm.FULL:
        one = _repeatable(spec.mask_char, codec_out)
        if one is None:
            return slow, False
        unit: bytes = one
        if not ascii_ok:
            return (lambda raw: unit * len(decode(raw))), False
        return (lambda raw: unit * len(raw) if raw.isascii() else unit * len(decode(raw))), False
    if algo in (Algorithm.PARTIAL, Algorithm.KEEP_FIRST, Algorithm.KEEP_LAST):
        one = _repeatable(spec.mask_char, codec_out)
        if one is None or not ascii_ok:
            return slow, False
        return _partial_bytes(spec, one, decode, codec_out), False
    if algo is Algorithm.TOKEN:
        context = mask.rule_ids[0] if mask.rule_ids else ""
        fn = token_function(token_key, prefix=spec.token_prefix, length=spec.token_length, context=context)

        def tok(raw: Raw) -> bytes | None:
            msg = raw if ascii_ok and raw.isascii() else decode(raw).encode()
            return fn(msg).encode(codec_out, "replace")

        return tok, True
    return slow, False


@dataclass(frozen=True, slots=True)
class SpanMask:
    """A full or partial mask as byte spans, for a value that is ASCII (``alnum``: ASCII
    letters and digits only, so no separator) in ASCII-transparent codecs: its first
    ``first`` and last ``last`` bytes stay (none when that would keep all of it) and every
    other byte becomes ``unit`` (one byte), so the value keeps its length. The row loops copy
    the kept bytes with the bytes around the value, so the masked value is never built; any
    other value goes to the column's :data:`ValueMasker`."""

    first: int
    last: int
    unit: bytes
    alnum: bool


def span_mask(mask: ColumnMask, *, codec_in: str, codec_out: str) -> SpanMask | None:
    """The :class:`SpanMask` of a full or partial mask (None for any other mask, or when the
    codecs or the mask character do not allow it)."""
    return _once(_span_mask, mask, codec_in, codec_out)


def _span_mask(mask: ColumnMask, codec_in: str, codec_out: str) -> SpanMask | None:
    if mask.pattern is not None:
        return None
    spec = mask.spec or MaskSpec(algorithm=Algorithm.FULL)
    algo = spec.algorithm
    if algo not in (Algorithm.FULL, Algorithm.PARTIAL, Algorithm.KEEP_FIRST, Algorithm.KEEP_LAST):
        return None
    if not ((codec_in == "binary" or ascii_transparent(codec_in)) and ascii_transparent(codec_out)):
        return None
    unit = _repeatable(spec.mask_char, codec_out)
    if unit is None or len(unit) != 1:  # one byte a character: the value keeps its length
        return None
    if algo is Algorithm.FULL:
        return SpanMask(first=0, last=0, unit=unit, alnum=False)
    first, last = partial_counts(spec)
    return SpanMask(first=first, last=last, unit=unit, alnum=spec.keep_separators)


def _partial_bytes(spec: MaskSpec, unit: bytes, decode: Callable[[Raw], str], codec_out: str) -> ValueMasker:
    """A partial (keep_first, keep_last) mask over an ASCII value's bytes: the value's bytes
    are its characters, so slices of them are the kept characters."""
    first, last = partial_counts(spec)
    mask_char, seps = spec.mask_char, spec.keep_separators
    keep = first + last

    def fn(raw: Raw) -> bytes | bytearray | None:
        if raw.isascii() and (not seps or raw.isalnum() or not _has_separator(raw)):
            n = len(raw)
            if keep >= n:
                return unit * n
            return raw[:first] + unit * (n - keep) + raw[n - last :]
        out = partial(decode(raw), first, last, mask_char, seps)
        return None if out is None else out.encode(codec_out, "replace")

    return fn


def _has_separator(raw: Raw) -> bool:
    return len(raw.translate(None, SEPARATOR_BYTES)) != len(raw)


def _cached(fn: ValueMasker) -> ValueMasker:
    """``fn`` with the outputs of recent distinct short values kept (``fn`` must give equal
    outputs for equal inputs). The cache is emptied when full, so it stays bounded; when a
    whole fill brought few hits (values rarely repeat), it is left alone for a while, since
    then it only costs."""
    cache: dict[bytes, bytes | bytearray | None] = {}
    get = cache.get
    hits = 0
    skip = 0

    def cached(raw: Raw) -> bytes | bytearray | None:
        nonlocal hits, skip
        if skip:
            skip -= 1
            return fn(raw)
        key = raw if type(raw) is bytes else bytes(raw)
        hit = get(key, _MISS)
        if hit is not _MISS:
            hits += 1
            return cast("bytes | bytearray | None", hit)
        out = fn(key)
        if len(key) <= CACHE_VALUE_BYTES:
            if len(cache) >= CACHE_ENTRIES:
                if hits < CACHE_ENTRIES // 4:
                    skip = CACHE_ENTRIES * 8
                cache.clear()
                hits = 0
            cache[key] = out
        return out

    return cached
