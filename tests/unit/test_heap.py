"""dbward.heap: the startup heap kept out of the collector's full collections (gc.freeze)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from dbward.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Give the frozen objects back to the collector after the test (other tests make garbage)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _tracked(obj: object) -> bool:
    """Whether a full collection visits ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for generation in (0, 1, 2) for o in gc.get_objects(generation))


def test_objects_alive_at_startup_are_frozen_and_counted(unfrozen: None) -> None:
    before = _Node()
    assert _tracked(before)
    frozen = freeze_startup_heap("test")
    assert frozen == gc.get_freeze_count()
    assert frozen > 1000  # the interpreter and the modules this test imported, at least
    assert not _tracked(before)
    after = _Node()
    assert _tracked(after)


def test_cyclic_garbage_made_afterwards_is_still_collected(unfrozen: None) -> None:
    freeze_startup_heap("test")
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_a_second_call_freezes_only_what_came_since(unfrozen: None) -> None:
    first = freeze_startup_heap("test")
    keep = [_Node() for _ in range(100)]
    second = freeze_startup_heap("test, again")
    assert second >= first + len(keep)
    assert not any(_tracked(n) for n in keep)
