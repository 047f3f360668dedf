"""Masking algorithms and built-in patterns: examples and properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbward.masking.algorithms import Algorithm, MaskSpec, apply_spec, full, partial, token
from dbward.masking.patterns import BUILTIN, custom_pattern, luhn_ok


@pytest.mark.parametrize(
    ("pattern", "value", "masked"),
    [
        ("email", "minji.kim@example.com", "mi*******@example.com"),
        ("email", "ab@x.io", "a*@x.io"),
        ("phone", "010-1234-5678", "010-****-5678"),
        ("phone", "01012345678", "010****5678"),
        ("phone_kr_landline", "02-123-4567", "02-***-4567"),
        ("phone", "+82-10-1234-5678", "+82-10-****-5678"),
        ("phone_e164", "+14155552671", "+1415***2671"),
        ("rrn", "900101-1234567", "900101-1******"),
        ("rrn", "9001011234567", "9001011******"),
        ("frn", "900101-5234567", "900101-5******"),
        ("passport", "M12345678", "M1234****"),
        ("card", "4111-1111-1111-1111", "4111-11**-****-1111"),
        ("card", "4111 1111 1111 1112", "*" * 19),  # not Luhn-valid: masked whole
        ("bank_account", "110-123-456789", "***-***-**6789"),
        ("ipv4", "192.168.10.25", "192.168.***.***"),
        ("ipv6", "2001:db8::1", "2001:0db8:0000:0000:****:****:****:****"),
        ("name", "홍길동", "홍*동"),
        ("name", "남궁민수", "남**수"),
        ("name", "이준", "이*"),
        ("name", "Kim Minji", "K** M****"),
        ("name", "J K", "***"),  # initials only: keeping first characters would keep all
        ("name", "홍", "*"),
        ("address", "서울특별시 강남구 테헤란로 123", "서울특별시 강남구 **** ***"),
        ("dob", "1990-01-02", "1990-**-**"),
        ("phone", "call me maybe", "*************"),  # unexpected shape: masked whole
    ],
)
def test_builtin_examples(pattern: str, value: str, masked: str) -> None:
    assert BUILTIN[pattern].apply(value) == masked


def test_null_stays_null() -> None:
    assert all(p.apply(None) is None for p in BUILTIN.values())


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("5500 0000 0000 0004")
    assert not luhn_ok("4111111111111112")


@given(st.text(max_size=40))
def test_no_builtin_pattern_returns_the_value_unchanged_unless_it_was_blank(value: str) -> None:
    significant = re.sub(r"[\s\-.@()+/_:]", "", value)
    for name, p in BUILTIN.items():
        out = p.apply(value)
        assert out is not None
        # a value that already looks masked ("****", "K***", "[REDACTED]") may come back as it was:
        # the name pattern keeps one leading character, so "0*" is its own masked form
        looks_masked = significant.count("*") >= len(significant) - 1 or value == "[REDACTED]"
        if len(significant) >= 2 and name not in ("address",) and not looks_masked:
            assert out != value, (name, value)


@given(st.text(min_size=1, max_size=30), st.integers(0, 5), st.integers(0, 5))
def test_partial_keeps_length_and_never_reveals_everything(value: str, first: int, last: int) -> None:
    out = partial(value, first, last)
    assert out is not None and len(out) == len(value)
    significant = [i for i, c in enumerate(value) if c not in "-. @()+/_:"]
    # at least one significant character is masked (a value such as "0*0" may come back as it
    # was: its masked character already is the mask character)
    if significant:
        assert any(out[i] == "*" for i in significant)


@given(st.text(max_size=30))
def test_full_keeps_length(value: str) -> None:
    assert full(value) == "*" * len(value)


@given(st.text(max_size=30), st.text(max_size=30))
def test_tokens_are_deterministic_keyed_and_distinct(a: str, b: str) -> None:
    key = b"k" * 32
    assert token(a, key) == token(a, key)
    assert token(a, key) != token(a, b"j" * 32)
    if a != b:
        assert token(a, key) != token(b, key)
    assert token(a, key, context="email") != token(a, key, context="phone")


def test_spec_algorithms() -> None:
    assert apply_spec(MaskSpec(algorithm=Algorithm.NULL), "x") is None
    assert apply_spec(MaskSpec(algorithm=Algorithm.FIXED, replacement="<hidden>"), "x") == "<hidden>"
    assert apply_spec(MaskSpec(algorithm=Algorithm.KEEP_LAST, keep_last=4), "1234567890") == "******7890"
    assert apply_spec(MaskSpec(algorithm=Algorithm.KEEP_FIRST, keep_first=2), "abcdef") == "ab****"
    # Without a key there is no token: the value is redacted, never shown.
    assert apply_spec(MaskSpec(algorithm=Algorithm.TOKEN), "secret") == "[REDACTED]"
    assert apply_spec(MaskSpec(algorithm=Algorithm.TOKEN), "secret", token_key=b"k" * 32).startswith("tok_")


def test_custom_pattern_masks_every_match_and_unexpected_values_whole() -> None:
    p = custom_pattern("emp_no", r"E\d{6}", MaskSpec(algorithm=Algorithm.KEEP_FIRST, keep_first=2))
    assert p.apply("E123456") == "E1*****"
    assert p.apply("ids E123456, E654321") == "ids E1*****, E6*****"
    assert p.apply("nothing here") == "************"
    with pytest.raises(ValueError, match="regular expression is invalid"):
        custom_pattern("bad", "(", MaskSpec(algorithm=Algorithm.FULL))
