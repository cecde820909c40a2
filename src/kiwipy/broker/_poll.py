"""The broker's loop waits for its next event by polling for a moment before it sleeps.

A process that sleeps in ``epoll_wait`` and is woken by a client's frame pays the wake-up: on a
virtual machine whose idle vCPUs halt at once, 30 to 45 µs, and as much again for the client
that sleeps while it waits for the answer. When frames follow each other closely (a client that
sends its next request as soon as it has its answer), the broker's next event is usually less
than a couple of hundred microseconds away; polling for it costs less than sleeping through it.

The rule is Linux's halt polling, applied to one process: poll before sleeping only if the last
wait ended within the budget. A stream of close frames keeps the broker polling; the first wait
longer than the budget stops it, so a quiet broker sleeps as before and pays at most one budget
per burst of traffic.
"""

from __future__ import annotations

import selectors
import time
from selectors import SelectorKey

__all__ = ("DEFAULT_POLL_US", "MAX_POLL_US", "PollingSelector")

#: The default budget, in microseconds (Linux's guest halt polling starts at 200 µs too).
DEFAULT_POLL_US = 200
#: The largest budget accepted: beyond it, polling would cost more than any wake-up.
MAX_POLL_US = 10_000


class PollingSelector(selectors.DefaultSelector):
    """A selector that polls for up to ``budget`` seconds before it blocks, while its last
    blocking wait ended within that budget. ``budget`` 0: never polls."""

    def __init__(self, budget: float) -> None:
        super().__init__()
        self.budget = budget
        #: Whether the next blocking wait polls first.
        self.polling = False

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(timeout)  # a look, not a wait: no news about the traffic
        started = time.monotonic()
        if self.polling:
            limit = self.budget if timeout is None else min(self.budget, timeout)
            ready = self._poll(started + limit)
            if ready:
                return ready
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
        ready = super().select(timeout)
        waited = time.monotonic() - started
        self.polling = self.budget > 0 and bool(ready) and waited <= self.budget
        return ready

    def _poll(self, deadline: float) -> list[tuple[SelectorKey, int]]:
        while True:
            ready = super().select(0)
            if ready or time.monotonic() >= deadline:
                return ready
