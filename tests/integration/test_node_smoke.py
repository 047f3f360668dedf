"""The node fixture itself: store, directory and grants are wired for real."""

from __future__ import annotations

from dbward.proxy.engine import verify_cleartext
from tests.conftest import PASSWORD, USER, RunningNode


async def test_directory_knows_alice_and_her_grant(dbward_node: RunningNode) -> None:
    creds = await dbward_node.node.directory.lookup(USER)
    assert creds is not None
    assert verify_cleartext(creds, PASSWORD) is not None
    assert verify_cleartext(creds, "wrong-password") is None
    target = dbward_node.targets["maria"]
    decision = await dbward_node.node.policy_decider.decide_connection(creds.principal, target, "127.0.0.1")
    assert decision.allowed, decision.reasons
    bob = await dbward_node.node.directory.lookup("bob")
    assert bob is not None
    denied = await dbward_node.node.policy_decider.decide_connection(bob.principal, target, "127.0.0.1")
    assert not denied.allowed
    assert "bob has no grant on connection maria" in denied.message
    assert await dbward_node.node.directory.upstream_password(target) == "upstream-secret-1"
