"""The store forwarder's rows on SQLite are bound exactly as SQLAlchemy would bind them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy.dialects.sqlite import aiosqlite

from dbward.audit.store import _parse_time, _sqlite_time
from dbward.store.models import AuditRecord


def test_sqlite_times_are_bound_as_sqlalchemy_binds_them() -> None:
    dialect = aiosqlite.dialect()
    table: Any = AuditRecord.__table__
    process = table.c.time.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    values: list[Any] = [
        datetime.now(UTC).isoformat(),
        datetime(2026, 1, 7, 12, 0, tzinfo=UTC).isoformat(),  # no fraction
        datetime(2026, 1, 7, 12, 0, 0, 5, tzinfo=UTC).isoformat(),
        datetime(2026, 1, 7, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))).isoformat(),
        "2026-01-07T12:00:00.000005",  # naive
        "2026-13-07T12:00:00.000005+00:00",  # the shape of a time, but not one
    ]
    for value in values:
        expected = process(_parse_time(value))
        if value.startswith("2026-13"):
            assert _sqlite_time(value, process)[:4] == expected[:4]  # both "now": not a time
        else:
            assert _sqlite_time(value, process) == expected, value
