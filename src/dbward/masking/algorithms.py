"""How a value is masked. Every function takes and returns ``str | None`` and never raises on
odd input: a value it cannot mask in a format-preserving way is fully redacted instead
(fail closed), never returned as it was.
"""

from __future__ import annotations

import hashlib
import hmac
import re
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
    (one pass to mask, one to count) rather than a Python loop over the characters.
    """
    if value is None:
        return None
    if not keep_separators:
        n = len(value)
        if keep_first + keep_last >= n:
            return mask_char * n
        return value[:keep_first] + mask_char * (n - keep_first - keep_last) + value[n - keep_last :]
    n = len(value.translate(_DROP_SEPARATORS))  # how many significant characters
    if n == len(value):  # no separator (the common case): slices
        if keep_first + keep_last >= n:
            return mask_char * n
        return value[:keep_first] + mask_char * (n - keep_first - keep_last) + value[n - keep_last :]
    masked = _SIGNIFICANT_RUN.sub(lambda m: mask_char * len(m.group()), value)
    if keep_first + keep_last >= n or not (keep_first or keep_last):
        return masked
    chars = list(masked)
    found, i = 0, 0
    while found < keep_first:
        if value[i] not in SEPARATORS:
            chars[i] = value[i]
            found += 1
        i += 1
    found, i = 0, len(value) - 1
    while found < keep_last:
        if value[i] not in SEPARATORS:
            chars[i] = value[i]
            found += 1
        i -= 1
    return "".join(chars)


#: what partial masking leaves in place and does not count
SEPARATORS = "-. @()+/_:"
_SIGNIFICANT_RUN = re.compile("[^" + re.escape(SEPARATORS) + "]+")
_DROP_SEPARATORS = str.maketrans("", "", SEPARATORS)


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
