"""Migrations up and down on SQLite and on PostgreSQL, with the progress the CLI shows."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect

from dbward.store import migrate
from dbward.store.db import Store
from dbward.store.models import Base


def _url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


async def _tables(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_the_store_is_at_head_with_every_model_table(store: Store) -> None:
    assert await migrate.current_revision(_url(store)) == migrate.head_revision()
    assert set(Base.metadata.tables) <= await _tables(store)
    assert migrate.pending_revisions(migrate.head_revision()) == []


async def test_down_to_base_and_up_again_reporting_each_step(store: Store) -> None:
    url = _url(store)
    await store.engine.dispose()
    await asyncio.to_thread(migrate.downgrade_blocking, url, "base")
    assert await migrate.current_revision(url) is None
    assert await _tables(store) <= {"alembic_version"}
    pending = migrate.pending_revisions(None)
    assert pending[0][0] == "0001" and pending[-1][0] == migrate.head_revision()

    events: list[migrate.ProgressEvent] = []
    await migrate.upgrade(url, reporter=events.append)
    applied = [e.revision for e in events if e.finished]
    assert applied == [rev for rev, _ in pending]
    assert all(e.description for e in events if e.finished)
    assert await migrate.current_revision(url) == migrate.head_revision()
    assert set(Base.metadata.tables) <= await _tables(store)


def test_data_migration_progress_gives_an_estimate_of_the_time_left() -> None:
    events: list[migrate.ProgressEvent] = []
    progress = migrate._DataProgress("0099", "rewrite audit rows", events.append, started=0.0)
    import time

    progress.started = time.monotonic() - 10.0  # 10 s for the first quarter
    progress(250, 1000)
    (ev,) = events
    assert (ev.done, ev.total) == (250, 1000)
    assert ev.eta_seconds is not None and 29 < ev.eta_seconds < 31
