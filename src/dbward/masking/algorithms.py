"""How a value is masked. Every function takes and returns ``str | None`` and never raises on
odd input: a value it cannot mask in a format-preserving way is fully redacted instead
(fail closed), never returned as it was.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_MASK_CHAR = "*"
_ALNUM = re.compile(r"[0-9A-Za-z\uac00-\ud7a3]")


class Algorithm(StrEnum):
    FULL = "full"  # every character replaced by the mask character (length kept)
    REDACT = "redact"  # a fixed marker, length hidden
    PARTIAL = "partial"  # keep the first N and last M characters
    KEEP_FIRST = "keep_first"
    KEEP_LAST = "keep_last"
    FIXED = "fixed"  # a replacement string
    NULL = "null"
    TOKEN = "token"  # keyed deterministic token (HMAC-SHA256)
    PATTERN = "pattern"  # a built-in format-aware masker (e-mail, phone, RRN...)


@dataclass(frozen=True, kw_only=True)
class MaskSpec:
    """One way of masking: an algorithm and its parameters."""

    algorithm: Algorithm
    keep_first: int = 0
    keep_last: int = 0
    mask_char: str = DEFAULT_MASK_CHAR
    replacement: str = "****"
    token_prefix: str = "tok_"
    token_length: int = 16
    keep_separators: bool = True  # partial masking leaves '-', ' ', '@', '.' in place


def full(value: str | None, mask_char: str = DEFAULT_MASK_CHAR) -> str | None:
    if value is None:
        return None
    return mask_char * len(value)


def redact(value: str | None, marker: str = "[REDACTED]") -> str | None:
    return None if value is None else marker


def partial(
    value: str | None,
    keep_first: int = 0,
    keep_last: int = 0,
    mask_char: str = DEFAULT_MASK_CHAR,
    keep_separators: bool = True,
) -> str | None:
    """Keep ``keep_first`` and ``keep_last`` significant characters, mask the rest.

    Separators ('-', ' ', '.', '@', '(', ')', '+', '/', '_', ':') stay where they are when
    ``keep_separators``; they do not count as kept characters. If keeping would reveal the
    whole value (too short), everything significant is masked instead.

    Runs on every masked value of a result stream, so the work is done by ``str`` methods
    and slices rather than a Python loop over the characters.
    """
    if value is None:
        return None
    if not keep_separators:
        n = len(value)
        if keep_first + keep_last >= n:
            return mask_char * n
        return value[:keep_first] + mask_char * (n - keep_first - keep_last) + value[n - keep_last :]
    n = len(value) - _separator_count(value)  # how many significant characters
    if n == len(value):  # no separator (the common case): slices
        if keep_first + keep_last >= n:
            return mask_char * n
        return value[:keep_first] + mask_char * (n - keep_first - keep_last) + value[n - keep_last :]
    if len(value) <= 48:  # a phone, card or e-mail number: one pass over the characters
        low, high = keep_first, n - keep_last  # the significant characters masked
        if keep_first + keep_last >= n:
            low, high = 0, n
        out: list[str] = []
        k = 0
        for ch in value:
            if ch in _SEPARATOR_SET:
                out.append(ch)
            else:
                out.append(ch if k < low or k >= high else mask_char)
                k += 1
        return "".join(out)
    # longer: mask the significant characters as one string, then put them back between the
    # separators run by run (even items of the split are the significant runs)
    runs = _SEPARATOR_RUN.split(value)
    if keep_first + keep_last >= n or not (keep_first or keep_last):
        masked = mask_char * n
    else:
        significant = "".join(runs[::2])
        masked = (
            significant[:keep_first] + mask_char * (n - keep_first - keep_last) + significant[n - keep_last :]
        )
    at = 0
    for i in range(0, len(runs), 2):
        size = len(runs[i])
        runs[i] = masked[at : at + size]
        at += size
    return "".join(runs)


#: what partial masking leaves in place and does not count
SEPARATORS = "-. @()+/_:"
SEPARATOR_BYTES = SEPARATORS.encode("ascii")
_SEPARATOR_RUN = re.compile("([" + re.escape(SEPARATORS) + "]+)")
_SEPARATOR_SET = frozenset(SEPARATORS)


def _separator_count(value: str) -> int:
    """How many separators ``value`` holds. The separators are ASCII, and an ASCII byte never
    occurs inside the UTF-8 form of another character, so the bytes are counted (``bytes``
    methods run in C; ``str.translate`` looks every character up in a dict)."""
    raw = value.encode("utf-8", "surrogatepass")
    if raw.isalnum():
        return 0
    return len(raw) - len(raw.translate(None, SEPARATOR_BYTES))


def keep_first(value: str | None, n: int, mask_char: str = DEFAULT_MASK_CHAR) -> str | None:
    return partial(value, n, 0, mask_char)


def keep_last(value: str | None, n: int, mask_char: str = DEFAULT_MASK_CHAR) -> str | None:
    return partial(value, 0, n, mask_char)


def token(
    value: str | None, key: bytes, *, prefix: str = "tok_", length: int = 16, context: str = ""
) -> str | None:
    """A keyed deterministic token: equal inputs give equal tokens (joins and GROUP BY still
    work), distinct inputs give distinct tokens with overwhelming probability, and the value
    cannot be recovered without dbward's key. ``context`` separates token spaces (e.g. per
    pattern) so a phone token cannot be matched against an e-mail token."""
    if value is None:
        return None
    mac = hmac.new(key, context.encode() + b"\x00" + value.encode(), hashlib.sha256).hexdigest()
    return prefix + mac[: max(8, min(64, length))]


def token_function(
    key: bytes, *, prefix: str = "tok_", length: int = 16, context: str = ""
) -> Callable[[bytes | bytearray], str]:
    """:func:`token` of one key, prefix, length and context as a function of the value's UTF-8
    bytes, for result streams: HMAC-SHA256 (RFC 2104) from SHA-256 states that already hold
    the padded key and the context, so each value costs two hash copies instead of a new HMAC
    (same tokens: the tests compare it with :func:`token`)."""
    block = 64  # SHA-256's block size
    k = hashlib.sha256(key).digest() if len(key) > block else key
    k = k.ljust(block, b"\x00")
    inner = hashlib.sha256(bytes(x ^ 0x36 for x in k) + context.encode() + b"\x00")
    outer = hashlib.sha256(bytes(x ^ 0x5C for x in k))
    keep = max(8, min(64, length))

    def fn(value: bytes | bytearray) -> str:
        h = inner.copy()
        h.update(value)
        o = outer.copy()
        o.update(h.digest())
        return prefix + o.hexdigest()[:keep]

    return fn


def compile_spec(spec: MaskSpec, *, token_key: bytes = b"", context: str = "") -> Callable[[str], str | None]:
    """``apply_spec(spec, value, token_key=..., context=...)`` for a value that is not None, as
    one function with the parameters bound: what a result stream calls for every value."""
    match spec.algorithm:
        case Algorithm.FULL:
            mask_char = spec.mask_char
            return lambda v: mask_char * len(v)
        case Algorithm.REDACT:
            return lambda v: "[REDACTED]"
        case Algorithm.PARTIAL | Algorithm.KEEP_FIRST | Algorithm.KEEP_LAST:
            first, last = partial_counts(spec)
            mask_char, seps = spec.mask_char, spec.keep_separators
            return lambda v: partial(v, first, last, mask_char, seps)
        case Algorithm.FIXED:
            replacement = spec.replacement
            return lambda v: replacement
        case Algorithm.NULL:
            return lambda v: None
        case Algorithm.TOKEN:
            if not token_key:
                return lambda v: "[REDACTED]"  # no key, no token: fail closed
            fn = token_function(
                token_key, prefix=spec.token_prefix, length=spec.token_length, context=context
            )
            return lambda v: fn(v.encode())
        case _:
            return lambda v: "[REDACTED]"


def partial_counts(spec: MaskSpec) -> tuple[int, int]:
    """(characters kept at the start, at the end) of a partial, keep_first or keep_last spec."""
    if spec.algorithm is Algorithm.KEEP_FIRST:
        return spec.keep_first, 0
    if spec.algorithm is Algorithm.KEEP_LAST:
        return 0, spec.keep_last
    return spec.keep_first, spec.keep_last


def apply_spec(spec: MaskSpec, value: str | None, *, token_key: bytes = b"", context: str = "") -> str | None:
    match spec.algorithm:
        case Algorithm.FULL:
            return full(value, spec.mask_char)
        case Algorithm.REDACT:
            return redact(value)
        case Algorithm.PARTIAL:
            return partial(value, spec.keep_first, spec.keep_last, spec.mask_char, spec.keep_separators)
        case Algorithm.KEEP_FIRST:
            return partial(value, spec.keep_first, 0, spec.mask_char, spec.keep_separators)
        case Algorithm.KEEP_LAST:
            return partial(value, 0, spec.keep_last, spec.mask_char, spec.keep_separators)
        case Algorithm.FIXED:
            return None if value is None else spec.replacement
        case Algorithm.NULL:
            return None
        case Algorithm.TOKEN:
            if not token_key:
                return redact(value)  # no key, no token: fail closed
            return token(
                value, token_key, prefix=spec.token_prefix, length=spec.token_length, context=context
            )
        case _:
            return redact(value)
