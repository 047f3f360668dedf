"""The relay's field readers (``messages.*_fields``) against a field-by-field reference decoder.

The engine reads the messages of every statement with these readers instead of the
dataclass decoders; they must accept exactly the bodies the reference accepts, with the
same values, and refuse the others with a WireError.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dbward.wire.postgres import messages as m


def _reference(type_: bytes, body: bytes) -> Any:
    """Field-by-field decoding with the codec's body reader (the decoder before the readers)."""
    r = m._Reader(body)
    out: Any
    if type_ == b"Q":
        out = r.cstring()
    elif type_ == b"P":
        name, sql = r.cstring(), r.cstring()
        out = (name, sql, tuple(r.uint32() for _ in range(r.uint16())))
    elif type_ == b"B":
        portal, stmt = r.cstring(), r.cstring()
        formats = tuple(r.int16() for _ in range(r.uint16()))
        params: list[bytes | None] = []
        for _ in range(r.uint16()):
            n = r.int32()
            if n < -1:
                raise m.WireError("a Bind parameter has a negative length")
            params.append(None if n == -1 else r.bytes_(n))
        out = (portal, stmt, formats, tuple(params), tuple(r.int16() for _ in range(r.uint16())))
    elif type_ in (b"D", b"X"):  # Describe / Close (same layout)
        kind = chr(r.byte())
        if kind not in ("S", "P"):
            raise m.WireError("Describe/Close must name 'S' (statement) or 'P' (portal)")
        out = (kind, r.cstring())
    elif type_ == b"E":
        out = (r.cstring(), r.int32())
    else:  # CommandComplete
        out = r.cstring()
    r.end()
    return out


READERS: dict[bytes, Callable[[bytes], Any]] = {
    b"Q": m.query_fields,
    b"P": m.parse_fields,
    b"B": m.bind_fields,
    b"D": m.target_fields,
    b"X": m.target_fields,
    b"E": m.execute_fields,
    b"C": m.command_tag,
}


def _outcome(fn: Callable[[bytes], Any], body: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(body)
    except m.WireError as exc:
        return "error", str(exc)


names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
valid_bodies = st.one_of(
    st.builds(lambda s: m.Query(s).encode()[5:], names),
    st.builds(
        lambda n, s, t: m.Parse(n, s, t).encode()[5:],
        names,
        names,
        st.lists(st.integers(0, 2**32 - 1), max_size=4).map(tuple),
    ),
    st.builds(
        lambda p, s, f, v, r: m.Bind(p, s, f, v, r).encode()[5:],
        names,
        names,
        st.lists(st.integers(0, 1), max_size=3).map(tuple),
        st.lists(st.one_of(st.none(), st.binary(max_size=8)), max_size=3).map(tuple),
        st.lists(st.integers(0, 1), max_size=3).map(tuple),
    ),
    st.builds(lambda k, n: m.Describe(k, n).encode()[5:], st.sampled_from("SP"), names),
    st.builds(lambda p, n: m.Execute(p, n).encode()[5:], names, st.integers(0, 2**31 - 1)),
)


@given(st.sampled_from(sorted(READERS)), st.one_of(st.binary(max_size=48), valid_bodies))
def test_readers_match_the_reference(type_: bytes, body: bytes) -> None:
    expected = _outcome(partial(_reference, type_), body)
    got = _outcome(READERS[type_], body)
    assert got[0] == expected[0]
    if got[0] == "ok":
        assert got[1] == expected[1]


@given(valid_bodies, st.data())
def test_truncated_bodies_are_refused_alike(body: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(body)))
    for type_, fn in READERS.items():
        assert _outcome(fn, body[:cut])[0] == _outcome(partial(_reference, type_), body[:cut])[0]


def test_tag_counts() -> None:
    assert m.tag_counts("SELECT 3") == (3, None)
    assert m.tag_counts("INSERT 0 2") == (None, 2)
    assert m.tag_counts("COPY 10") == (10, 10)
    assert m.tag_counts("CREATE TABLE") == (None, None)
    assert m.tag_counts("") == (None, None)
    assert m.command_tag(b"SELECT 1\x00") == "SELECT 1"
