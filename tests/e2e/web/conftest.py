"""A real dbward node (proxy, journal forwarded to the store, API and console on uvicorn) and a
headless Debian chromium driven by Playwright. Browsers are never downloaded."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dbward.api.server import ApiServer
from dbward.audit.journal import FileJournal
from dbward.config import Settings
from dbward.node import Node
from dbward.store.db import Store

CHROMIUM = os.environ.get("DBWARD_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class WebNode:
    node: Node
    api: ApiServer
    store: Store

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"


@pytest.fixture
async def web_node(tmp_path: Path, sqlite_store: Store) -> AsyncIterator[WebNode]:
    settings = Settings(
        data_dir=tmp_path / "data",
        proxy={"mysql_port": 0, "postgres_port": 0},  # type: ignore[arg-type]
        api={"port": 0},  # type: ignore[arg-type]
        audit={"forwarding": "inline"},  # type: ignore[arg-type]  # the fixture's store, not a file
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    journal = FileJournal(settings.journal_path, fsync=False, durability="write", node="web-node")
    node = Node(settings=settings, store=sqlite_store, journal=journal, name="web-node")
    node.start_audit_forwarding()
    api = ApiServer(node)
    await api.start("127.0.0.1", 0)
    try:
        yield WebNode(node, api, sqlite_store)
    finally:
        await api.stop()
        await node.proxy.drain(5)
        await journal.close()
        if node.dispatcher is not None:
            await node.dispatcher.stop()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240  (once, before the browser starts)
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


def clean_artifacts() -> None:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir()
