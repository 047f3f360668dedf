"""Masking patterns: what a kind of personal data looks like and how it is masked.

Built-in patterns follow common Korean de-identification practice (the middle of a phone
number, the back of a resident registration number, the middle of a card number) and keep
the format so that a masked value still looks like what it was. A value that does not have
the expected shape is masked completely: a pattern never lets an unexpected value through.

Administrators add patterns as a detecting regular expression plus a :class:`MaskSpec`
(:func:`custom_pattern`); every match of the expression inside a value is masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dbward.masking.algorithms import Algorithm, MaskSpec, apply_spec, full, partial

Masker = Callable[[str], str]


@dataclass(frozen=True)
class Pattern:
    name: str
    description: str
    mask: Masker
    detect: re.Pattern[str] | None = None
    builtin: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)

    def apply(self, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return self.mask(value)
        except Exception:  # a masker bug must never leak the value
            return full(value)


_NON_DIGIT = re.compile(r"\D")


def _digits(s: str) -> str:
    return _NON_DIGIT.sub("", s)


def luhn_ok(number: str) -> bool:
    digits = _digits(number)
    if not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_digit_positions(value: str, keep: Callable[[int, int], bool], mask_char: str = "*") -> str:
    """Mask digits whose index among the value's digits fails ``keep(index, count)``."""
    count = sum(ch.isdigit() for ch in value)
    out, idx = [], 0
    for ch in value:
        if ch.isdigit():
            out.append(ch if keep(idx, count) else mask_char)
            idx += 1
        else:
            out.append(ch)
    return "".join(out)


# --------------------------------------------------------------------------- e-mail
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


_EMAIL_PARTS = re.compile(r"\s*([^@\s]+)@([^@\s]+)\s*")


def mask_email(v: str) -> str:
    m = _EMAIL_PARTS.fullmatch(v)
    if not m:
        return full(v) or ""
    local, domain = m.groups()
    keep = 2 if len(local) > 4 else 1 if len(local) > 1 else 0
    return f"{local[:keep]}{'*' * (len(local) - keep)}@{domain}"


# --------------------------------------------------------------------------- phones
KR_MOBILE_RE = re.compile(r"01[016789][-. ]?\d{3,4}[-. ]?\d{4}")
KR_LANDLINE_RE = re.compile(r"0(?:2|[3-6][1-5]|70)[-. ]?\d{3,4}[-. ]?\d{4}")
E164_RE = re.compile(r"\+[1-9]\d{7,14}")


_KR_PHONE_PARTS = re.compile(r"\s*(\+?82[-. ]?)?(0?\d{1,2})([-. ]?)(\d{3,4})([-. ]?)(\d{4})\s*")


def mask_kr_phone(v: str) -> str:
    """010-1234-5678 -> 010-****-5678; 02-123-4567 -> 02-***-4567; the middle group goes."""
    m = _KR_PHONE_PARTS.fullmatch(v)
    if not m:
        return mask_e164(v) if v.strip().startswith("+") else full(v) or ""
    cc, area, s1, mid, s2, last = m.groups()
    return f"{cc or ''}{area}{s1}{'*' * len(mid)}{s2}{last}"


def mask_e164(v: str) -> str:
    """+821012345678 -> +8210****5678: country code and the last four digits stay."""
    digits = _digits(v)
    if not v.strip().startswith("+") or not 8 <= len(digits) <= 15:
        return full(v) or ""
    return _mask_digit_positions(v, lambda i, n: i < 4 or i >= n - 4)


def mask_phone(v: str) -> str:
    s = v.strip()
    return mask_e164(v) if s.startswith("+") and not s.startswith("+82") else mask_kr_phone(v)


# --------------------------------------------------------------------------- national ids
RRN_RE = re.compile(r"\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])-?[1-4]\d{6}")
FRN_RE = re.compile(r"\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])-?[5-8]\d{6}")


def mask_rrn(v: str) -> str:
    """900101-1234567 -> 900101-1******: the birth date and the gender digit stay."""
    if len(_digits(v)) != 13:
        return full(v) or ""
    return _mask_digit_positions(v, lambda i, n: i < 7)


PASSPORT_RE = re.compile(r"\b[A-Z]{1,2}\d{7,8}\b")
_PASSPORT_SHAPE = re.compile(r"[A-Za-z]{1,2}\d{7,8}")


def mask_passport(v: str) -> str:
    s = v.strip()
    if not _PASSPORT_SHAPE.fullmatch(s):
        return full(v) or ""
    return partial(v, keep_first=len(s) - 4, keep_last=0) or ""


# --------------------------------------------------------------------------- cards, accounts
CARD_RE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def mask_card(v: str) -> str:
    """Luhn-valid numbers keep the first six and last four digits; anything else is masked whole."""
    if not luhn_ok(v):
        return full(v) or ""
    return _mask_digit_positions(v, lambda i, n: i < 6 or i >= n - 4)


BANK_ACCOUNT_RE = re.compile(r"\b\d{2,6}-\d{2,6}-\d{2,8}(?:-\d{1,3})?\b")


def mask_bank_account(v: str) -> str:
    digits = _digits(v)
    if not 8 <= len(digits) <= 16:
        return full(v) or ""
    return _mask_digit_positions(v, lambda i, n: i >= n - 4)


# --------------------------------------------------------------------------- network
IPV4_RE = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
IPV6_RE = re.compile(r"\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}\b")


def mask_ipv4(v: str) -> str:
    parts = v.strip().split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return full(v) or ""
    return f"{parts[0]}.{parts[1]}.***.***"


def mask_ipv6(v: str) -> str:
    import ipaddress

    try:
        addr = ipaddress.IPv6Address(v.strip())
    except ValueError:
        return full(v) or ""
    groups = addr.exploded.split(":")
    return ":".join(groups[:4] + ["****"] * 4)


def mask_ip(v: str) -> str:
    return mask_ipv6(v) if ":" in v else mask_ipv4(v)


# --------------------------------------------------------------------------- names, addresses, dates
HANGUL = re.compile(r"^[\uac00-\ud7a3]+$")


def mask_name(v: str) -> str:
    """홍길동 -> 홍*동, 남궁민수 -> 남**수, 이준 -> 이*; Kim Minji -> K** M****; a name of
    initials only (J K) is masked whole, as is a one-syllable Korean name."""
    s = v.strip()
    if not s:
        return v
    if HANGUL.match(s):
        if len(s) <= 2:
            return s[0] + "*" if len(s) == 2 else "*"
        return s[0] + "*" * (len(s) - 2) + s[-1]
    words = s.split()
    if all(len(w) == 1 for w in words):
        # nothing but initials: keeping each word's first character would keep them all
        return full(v) or ""
    return " ".join(w[:1] + "*" * (len(w) - 1) for w in words)


def mask_address(v: str) -> str:
    """Keep the region and district (the first two words), mask the rest of each word."""
    words = v.split()
    if len(words) <= 2:
        return " ".join(w[:1] + "*" * (len(w) - 1) for w in words)
    return " ".join(words[:2] + ["*" * len(w) for w in words[2:]])


DOB_RE = re.compile(r"\b(?:19|20)\d{2}[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])\b")


def mask_dob(v: str) -> str:
    """1990-01-02 -> 1990-**-**: the year stays."""
    digits = _digits(v)
    if len(digits) != 8:
        return full(v) or ""
    return _mask_digit_positions(v, lambda i, n: i < 4)


def _spec_masker(spec: MaskSpec) -> Masker:
    def m(v: str) -> str:
        out = apply_spec(spec, v)
        return "" if out is None else out

    return m


BUILTIN: dict[str, Pattern] = {
    p.name: p
    for p in (
        Pattern(
            "email",
            "E-mail address: the local part is masked after 1-2 characters, the domain stays",
            mask_email,
            EMAIL_RE,
        ),
        Pattern(
            "phone",
            "Phone number (Korean mobile or landline, or E.164): the middle digits are masked",
            mask_phone,
            KR_MOBILE_RE,
        ),
        Pattern(
            "phone_kr_mobile",
            "Korean mobile number 010-1234-5678 -> 010-****-5678",
            mask_kr_phone,
            KR_MOBILE_RE,
        ),
        Pattern(
            "phone_kr_landline",
            "Korean landline number 02-123-4567 -> 02-***-4567",
            mask_kr_phone,
            KR_LANDLINE_RE,
        ),
        Pattern("phone_e164", "E.164 number +821012345678 -> +8210****5678", mask_e164, E164_RE),
        Pattern(
            "rrn", "Korean resident registration number: birth date and gender digit stay", mask_rrn, RRN_RE
        ),
        Pattern(
            "frn", "Korean foreigner registration number: birth date and gender digit stay", mask_rrn, FRN_RE
        ),
        Pattern(
            "passport", "Passport number: the last four characters are masked", mask_passport, PASSPORT_RE
        ),
        Pattern(
            "card",
            "Credit card number (Luhn-checked): first six and last four digits stay",
            mask_card,
            CARD_RE,
        ),
        Pattern(
            "bank_account",
            "Bank account number: only the last four digits stay",
            mask_bank_account,
            BANK_ACCOUNT_RE,
        ),
        Pattern("ipv4", "IPv4 address: the last two octets are masked", mask_ipv4, IPV4_RE),
        Pattern("ipv6", "IPv6 address: the interface half is masked", mask_ipv6, IPV6_RE),
        Pattern("ip", "IPv4 or IPv6 address", mask_ip, IPV4_RE),
        Pattern("name", "Person name, Korean (홍*동) or Latin (K** M****)", mask_name),
        Pattern("address", "Postal address: region and district stay, the rest is masked", mask_address),
        Pattern("dob", "Date of birth: the year stays", mask_dob, DOB_RE),
        Pattern(
            "full", "Every character masked, length kept", _spec_masker(MaskSpec(algorithm=Algorithm.FULL))
        ),
        Pattern("redact", "Replaced by [REDACTED]", _spec_masker(MaskSpec(algorithm=Algorithm.REDACT))),
    )
}


def custom_pattern(name: str, regex: str, spec: MaskSpec, description: str = "") -> Pattern:
    """An administrator's pattern: every match of ``regex`` inside a value is masked by ``spec``.

    A value with no match is masked whole (the column was declared sensitive; an unexpected
    shape is no reason to show it)."""
    try:
        detect = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"masking pattern {name}: the regular expression is invalid ({exc})") from exc

    def m(v: str) -> str:
        if not detect.search(v):
            return apply_spec(MaskSpec(algorithm=Algorithm.FULL), v) or ""
        return detect.sub(lambda mo: apply_spec(spec, mo.group(0)) or "", v)

    return Pattern(name, description or f"custom pattern {regex}", m, detect, builtin=False)
