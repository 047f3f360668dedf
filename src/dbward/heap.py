"""The garbage collector and a long-running dbward process.

Starting a node imports and builds some 170,000 or more objects the collector tracks, which live as long as the process
(sqlglot's dialects, SQLAlchemy, pydantic models, FastAPI, the compiled policy). CPython's
full collection visits every one of them: measured under ``pgbench -S`` at 8 clients, the
proxy's event loop stopped for about 125 ms twice in 20 seconds, and every session of the
node waited that long. :func:`freeze_startup_heap` moves the objects alive once a process is
ready out of the collector's reach (:func:`gc.freeze`): a full collection then visits only
what was created since, and took about 3 ms in the same run. Cyclic garbage created
afterwards is still collected as before.

The price: an object that exists at that moment and later becomes garbage *inside a reference
cycle* is never freed (objects freed by reference counting, most of them, are freed as
usual). That is at most the startup heap's size once, not a leak that grows.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_startup_heap(what: str) -> int:
    """Collect once, then freeze every object alive now; return how many are frozen in all.

    Called by each long-running process when it is ready to serve: the node of ``dbward up``
    and ``dbward demo``, every proxy worker process, the audit shipper. ``what`` names the
    process in the debug log."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug(
        "%s: %d objects kept out of the garbage collector's full collections (%.0f ms)",
        what,
        frozen,
        (time.perf_counter() - started) * 1000,
    )
    return frozen
