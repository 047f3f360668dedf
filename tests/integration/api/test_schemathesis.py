"""Property-based run of the whole REST API from its OpenAPI document (schemathesis).

A real node serves the API on uvicorn in a thread of its own (with its own event loop and
store); every operation is called with generated inputs under an administrator's token. No
call may fail with a server error, and every error body keeps the stable shape.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from dbward.api.app import openapi_document
from dbward.api.server import ApiServer
from dbward.audit.journal import MemoryJournal
from dbward.config import Settings
from dbward.node import Node
from dbward.store import migrate, repo
from dbward.store.crypto import SecretBox, generate_key
from dbward.store.db import Store
from tests.integration.api.conftest import make_token


class ServedNode:
    """A node with the API on an ephemeral port, run by a background thread's event loop."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ready = threading.Event()
        self.url = ""
        self.token = ""
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="schemathesis-node", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        url = f"sqlite+aiosqlite:///{self.tmp / 'store.db'}"
        await migrate.upgrade(url)
        store = Store.open(url, SecretBox(generate_key()))
        async with store.transaction() as s:
            await repo.create_user(s, store.box, "root", password="Root-password-123", is_admin=True)
            await repo.create_user(s, store.box, "bob", password="Bob-password-123")
            await repo.create_group(s, "analysts")
            await repo.create_connection(
                s, store.box, "sales", engine="postgres", host="127.0.0.1", port=1, username="svc"
            )
        self.token = await make_token(store, "fuzz", "root", ["admin"])
        settings_ = Settings(data_dir=self.tmp / "data")
        settings_.data_dir.mkdir(parents=True, exist_ok=True)
        node = Node(settings=settings_, store=store, journal=MemoryJournal(), name="fuzz-node")
        api = ApiServer(node)
        await api.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{api.port}"
        self.stop_event = asyncio.Event()
        self.ready.set()
        await self.stop_event.wait()
        await api.stop()
        await store.close()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(60)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(15)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    node = ServedNode(tmp_path_factory.mktemp("fuzz"))
    node.start()
    yield node
    node.stop()


# the document the node serves is the one the code builds (docs/openapi.json is checked against it)
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any, served: ServedNode) -> None:
    response = case.call(base_url=served.url, headers={"Authorization": f"Bearer {served.token}"}, timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
