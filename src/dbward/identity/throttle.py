"""Throttling of repeated authentication failures per client address (in memory, per node).

Used by ``api/auth.py`` for API tokens: an address that fails ``limit`` times within one
window is refused for the rest of that window, whatever token it sends, so that guessing
tokens costs an attacker the whole window. Counting is a fixed window per address that starts
with its first failure. The table is bounded: when it is full, the entry touched longest ago
is dropped (an address that is being refused is touched by each refused request, so the busy
attackers stay). Time comes from the caller, which keeps this free of clocks and sockets.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    failures: int = 0


class FailureThrottle:
    def __init__(self, *, limit: int, window_seconds: float, max_clients: int) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_clients = max_clients
        self._by_client: OrderedDict[str, _Window] = OrderedDict()

    def _current(self, client: str, now: float) -> _Window | None:
        w = self._by_client.get(client)
        if w is not None and now - w.started >= self.window:
            del self._by_client[client]
            return None
        return w

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until ``client`` may try again, or None when it is not being refused."""
        w = self._current(client, now)
        if w is None or w.failures < self.limit:
            return None
        self._by_client.move_to_end(client)
        return max(0.0, w.started + self.window - now)

    def failed(self, client: str, now: float) -> bool:
        """Count a failure; True exactly when this failure starts refusing ``client``."""
        w = self._current(client, now)
        if w is None:
            w = self._by_client[client] = _Window(started=now)
            while len(self._by_client) > self.max_clients:
                self._by_client.popitem(last=False)
        w.failures += 1
        self._by_client.move_to_end(client)
        return w.failures == self.limit

    def __len__(self) -> int:
        return len(self._by_client)
