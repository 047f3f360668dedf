"""Masking algorithms: the fast partial mask against its one-character-at-a-time definition, and
the functions compiled for result streams against the algorithms they stand for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.masking.algorithms import (
    Algorithm,
    MaskSpec,
    apply_spec,
    compile_spec,
    partial,
    token,
    token_function,
)


def _partial_reference(value: str, keep_first: int, keep_last: int, mask_char: str) -> str:
    """The definition, one character at a time (what ``partial`` computes faster)."""
    positions = [i for i, ch in enumerate(value) if ch not in "-. @()+/_:"]
    n = len(positions)
    if keep_first + keep_last >= n:
        keep_first, keep_last = 0, 0
    keep = set(positions[:keep_first]) | set(positions[n - keep_last :] if keep_last else [])
    return "".join(mask_char if i in positions and i not in keep else ch for i, ch in enumerate(value))


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab1Z한-. @()+/_:\\*")), max_size=40),
    st.integers(0, 6),
    st.integers(0, 6),
    st.sampled_from(["*", "#", "\\"]),
)
def test_partial_matches_its_definition(value: str, first: int, last: int, mask: str) -> None:
    assert partial(value, first, last, mask) == _partial_reference(value, first, last, mask)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab1Z한-. @()+/_:\\*")), min_size=40, max_size=120),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["*", "●"]),
)
def test_partial_of_long_values_matches_its_definition(value: str, first: int, last: int, mask: str) -> None:
    """Long values take another way through ``partial`` than short ones."""
    assert partial(value, first, last, mask) == _partial_reference(value, first, last, mask)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=40),
    st.binary(max_size=100),
    st.text(max_size=8),
    st.sampled_from(["tok_", "", "T-"]),
    st.integers(0, 80),
)
def test_token_function_gives_the_tokens_of_token(
    value: str, key: bytes, context: str, prefix: str, length: int
) -> None:
    """The precomputed HMAC (keys longer than a block included) is the HMAC of ``token``."""
    key = key or b"k"
    fn = token_function(key, prefix=prefix, length=length, context=context)
    assert fn(value.encode()) == token(value, key, prefix=prefix, length=length, context=context)


_SPECS = [
    MaskSpec(algorithm=Algorithm.FULL, mask_char="#"),
    MaskSpec(algorithm=Algorithm.REDACT),
    MaskSpec(algorithm=Algorithm.PARTIAL, keep_first=2, keep_last=3),
    MaskSpec(algorithm=Algorithm.PARTIAL, keep_first=1, keep_last=1, keep_separators=False),
    MaskSpec(algorithm=Algorithm.KEEP_FIRST, keep_first=3),
    MaskSpec(algorithm=Algorithm.KEEP_LAST, keep_last=4),
    MaskSpec(algorithm=Algorithm.FIXED, replacement="--"),
    MaskSpec(algorithm=Algorithm.NULL),
    MaskSpec(algorithm=Algorithm.TOKEN),
    MaskSpec(algorithm=Algorithm.PATTERN),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SPECS), st.text(max_size=30), st.sampled_from([b"", b"key"]), st.text(max_size=5))
def test_compiled_spec_is_apply_spec(spec: MaskSpec, value: str, key: bytes, context: str) -> None:
    fn = compile_spec(spec, token_key=key, context=context)
    assert fn(value) == apply_spec(spec, value, token_key=key, context=context)
