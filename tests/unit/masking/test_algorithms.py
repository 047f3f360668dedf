"""Masking algorithms: the fast partial mask against its one-character-at-a-time definition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.masking.algorithms import partial


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
