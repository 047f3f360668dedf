"""A real store and a node (no listeners) behind the API app, with an administrator and a user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dbward.api.app import context_from_node, create_app_from
from dbward.audit.chain import canonical
from dbward.audit.journal import MemoryJournal
from dbward.audit.store import StoreForwarder
from dbward.config import Settings
from dbward.identity.apitokens import hash_token, new_api_token
from dbward.node import Node
from dbward.store import repo
from dbward.store.db import Store

ADMIN_PASSWORD = "Admin-password-1!"
BOB_PASSWORD = "Bob-password-1!"


@dataclass
class Api:
    client: httpx.AsyncClient
    node: Node
    journal: MemoryJournal
    store: Store
    admin_token: str
    bob_token: str
    bob_admin_scope_token: str

    def h(self, token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    async def sync_audit(self) -> None:
        """Copy the journal into the store, as the node's store forwarder does."""
        await StoreForwarder(self.store).send([(canonical(r), r) for r in self.journal.records])

    def changes(self) -> list[dict[str, object]]:
        return self.journal.of_type("admin.change")


async def make_token(store: Store, name: str, user: str, scopes: list[str], **kw: object) -> str:
    token = new_api_token()
    async with store.transaction() as s:
        await repo.create_api_token(
            s,
            name,
            username=user,
            token_hash=hash_token(token),
            prefix=token[:12],
            scopes=scopes,
            allowed_ips=list(kw.get("allowed_ips", [])),  # type: ignore[call-overload]
            expires_at=kw.get("expires_at"),  # type: ignore[arg-type]
            description=None,
            created_by="test",
        )
    return token


def node_settings(tmp_path: Path, **api: object) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", api=api)  # type: ignore[arg-type]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture
async def api(tmp_path: Path, sqlite_store: Store) -> AsyncIterator[Api]:
    store = sqlite_store
    async with store.transaction() as s:
        await repo.create_user(s, store.box, "root", password=ADMIN_PASSWORD, is_admin=True)
        await repo.create_user(s, store.box, "bob", password=BOB_PASSWORD)
    journal = MemoryJournal()
    node = Node(settings=node_settings(tmp_path), store=store, journal=journal, name="test-node")
    app = create_app_from(context_from_node(node), console=False)
    admin_token = await make_token(store, "root-admin", "root", ["admin"])
    bob_token = await make_token(store, "bob-self", "bob", ["self"])
    bob_admin = await make_token(store, "bob-admin", "bob", ["admin"])
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(client, node, journal, store, admin_token, bob_token, bob_admin)
