"""Running Alembic migrations from dbward, with progress and a time-left estimate.

Alembic reports each revision as it is applied; long data migrations (for example
rewriting a large audit table) call :func:`report_progress` as they go, and the reporter
turns rows done / rows total into an estimate of the time left. Schema-only revisions
finish in moments and only report that they ran.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from dbward.store.db import make_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@dataclass
class ProgressEvent:
    revision: str
    description: str
    done: int | None = None
    total: int | None = None
    eta_seconds: float | None = None
    finished: bool = False


Reporter = Callable[[ProgressEvent], None]


@dataclass
class _DataProgress:
    revision: str
    description: str
    reporter: Reporter
    started: float = field(default_factory=time.monotonic)

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.started
        eta = (elapsed / done) * (total - done) if done > 0 and total >= done else None
        self.reporter(ProgressEvent(self.revision, self.description, done, total, eta))


_current: ContextVar[_DataProgress | None] = ContextVar("dbward_migration_progress", default=None)


def report_progress(done: int, total: int) -> None:
    """Called by data migrations: ``done`` of ``total`` rows have been migrated."""
    progress = _current.get()
    if progress is not None:
        progress(done, total)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


async def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:

            def _get(sync_conn: Any) -> str | None:
                return MigrationContext.configure(sync_conn).get_current_revision()

            return await conn.run_sync(_get)
    finally:
        await engine.dispose()


def pending_revisions(current: str | None) -> list[tuple[str, str]]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revs = list(script.iterate_revisions("heads", current or "base"))
    revs.reverse()
    return [(r.revision, (r.doc or "").strip().splitlines()[0] if r.doc else "") for r in revs]


def _upgrade_sync(url: str, target: str, reporter: Reporter | None) -> None:
    cfg = alembic_config(url)

    def on_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        if reporter is not None:
            doc = getattr(step.up_revision, "doc", "") or ""
            reporter(ProgressEvent(step.up_revision_id, doc.strip(), finished=True))

    cfg.attributes["configure_kwargs"] = {"on_version_apply": on_apply}
    if reporter is not None:
        _current.set(_DataProgress("", "", reporter))
    command.upgrade(cfg, target)


async def upgrade(url: str, target: str = "head", reporter: Reporter | None = None) -> None:
    """Bring the store to ``target``. Runs in a thread: Alembic's env drives its own loop."""
    await asyncio.to_thread(_upgrade_sync, url, target, reporter)


def upgrade_blocking(url: str, target: str = "head", reporter: Reporter | None = None) -> None:
    _upgrade_sync(url, target, reporter)


def downgrade_blocking(url: str, target: str) -> None:
    command.downgrade(alembic_config(url), target)
