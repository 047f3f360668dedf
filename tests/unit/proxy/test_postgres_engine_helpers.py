"""Small pure helpers of the PostgreSQL engine's result path."""

from __future__ import annotations

from dbward.proxy.postgres import _cursor_of, _with_formats
from dbward.wire.postgres import rows as r


def test_cursor_names_of_declare_and_fetch() -> None:
    assert _cursor_of("DECLARE c1 CURSOR FOR SELECT 1") == ("declare", "c1")
    assert _cursor_of("FETCH FORWARD 100 FROM _psql_cursor") == ("fetch", "_psql_cursor")
    assert _cursor_of('fetch all in "My C";') == ("fetch", "My C")
    assert _cursor_of("FETCH NEXT Big") == ("fetch", "big")
    assert _cursor_of("SELECT 1") is None


def test_bind_result_formats() -> None:
    fields = tuple(r.Field(b"c", 0, 0, r.INT4, 4, -1, 0) for _ in range(3))
    assert [f.format for f in _with_formats(fields, ())] == [0, 0, 0]
    assert [f.format for f in _with_formats(fields, (1,))] == [1, 1, 1]
    assert [f.format for f in _with_formats(fields, (1, 0, 1))] == [1, 0, 1]
