"""The node's own loopback sessions (SQL editor, executor of approved requests) and workers.

With worker processes, a connection to a shared listener may be accepted by any process, but
only the primary knows the editor's one-login tokens and PROXY v2 trust; so ``endpoint_for``
passes over shared listeners and opens a private one (``proxy/loopback.py``)."""

from __future__ import annotations

from dbward.proxy.loopback import endpoint_for
from tests.conftest import RunningNode


async def test_loopback_sessions_use_the_shared_listener_of_a_single_process(
    dbward_node: RunningNode,
) -> None:
    node, pg = dbward_node.node, dbward_node.targets["pg"]
    shared = await node.listen_for(pg, 0)
    opened: dict[int, int] = {}
    host, port, db = await endpoint_for(node.proxy, pg, None, opened)
    assert (host, port, db) == ("127.0.0.1", shared.bound_port, "dbward_test")
    assert opened == {}


async def test_with_workers_loopback_sessions_get_a_private_listener(dbward_node: RunningNode) -> None:
    node, pg = dbward_node.node, dbward_node.targets["pg"]
    shared = await node.listen_for(pg, 0)
    await node.proxy.add_listener("postgres", "127.0.0.1", 0, None)  # a shared port too
    node.proxy.has_workers = True
    opened: dict[int, int] = {}
    host, port, db = await endpoint_for(node.proxy, pg, None, opened)
    assert port != shared.bound_port and opened == {pg.id: port}
    private = next(lst for lst in node.proxy.listeners if lst.bound_port == port)
    assert not private.shared and private.target is not None and private.target.id == pg.id
    # asked again: the same private listener
    assert await endpoint_for(node.proxy, pg, None, opened) == (host, port, db)
