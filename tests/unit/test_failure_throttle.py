"""identity/throttle.py: fixed windows per address, refusal for the rest of the window, bounded table."""

from __future__ import annotations

from dbward.identity.throttle import FailureThrottle


def test_refuses_after_limit_until_the_window_ends() -> None:
    t = FailureThrottle(limit=3, window_seconds=60, max_clients=100)
    assert [t.failed("10.0.0.1", 0.0), t.failed("10.0.0.1", 1.0)] == [False, False]
    assert t.retry_after("10.0.0.1", 2.0) is None
    assert t.failed("10.0.0.1", 2.0) is True  # this one starts the refusal (audited once)
    assert t.retry_after("10.0.0.1", 10.0) == 50.0
    assert t.failed("10.0.0.1", 11.0) is False  # later failures do not announce it again
    assert t.retry_after("10.0.0.2", 10.0) is None  # another address is unaffected
    assert t.retry_after("10.0.0.1", 60.0) is None  # the window is over
    assert t.failed("10.0.0.1", 61.0) is False  # a fresh window counts from one


def test_table_is_bounded_and_drops_the_longest_untouched() -> None:
    t = FailureThrottle(limit=2, window_seconds=3600, max_clients=10)
    t.failed("attacker", 0.0)
    t.failed("attacker", 0.0)
    for i in range(9):
        t.failed(f"10.0.0.{i}", 1.0)
    assert t.retry_after("attacker", 2.0) is not None  # touched: now the newest entry
    for i in range(9, 30):
        t.failed(f"10.0.0.{i}", 3.0)
        assert len(t) <= 10
    assert t.retry_after("10.0.0.0", 4.0) is None and len(t) == 10
