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

A wait measured while sleeping includes the broker's own wake-up, so frames that come within the
budget can look further apart than it: a broker that has stopped polling might never start
again. So one blocking wait in :data:`PROBE_EVERY` polls anyway; a probe that finds a frame
turns polling back on. Probes cost at most one budget per that many waits.
"""

from __future__ import annotations

import selectors
import time
from selectors import SelectorKey

__all__ = ("DEFAULT_POLL_US", "MAX_POLL_US", "PROBE_EVERY", "PollingSelector", "poll_us_from")

#: The default budget, in microseconds (Linux's guest halt polling starts at 200 µs too).
DEFAULT_POLL_US = 200
#: The largest budget accepted: beyond it, polling would cost more than any wake-up.
MAX_POLL_US = 10_000
#: While not polling, every this many blocking waits one polls anyway (a probe).
PROBE_EVERY = 16


def poll_us_from(text: str) -> int:
    """A budget in microseconds from its text (a URL option, a flag); :class:`ValueError` if
    it is not a whole number from 0 to :data:`MAX_POLL_US`."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_POLL_US:
        raise ValueError(f"poll_us must be a whole number from 0 to {MAX_POLL_US}, not {text!r}")
    return value


class PollingSelector(selectors.DefaultSelector):
    """A selector that polls for up to ``budget`` seconds before it blocks, while its last
    blocking wait ended within that budget. ``budget`` 0: never polls."""

    def __init__(self, budget: float) -> None:
        super().__init__()
        self.budget = budget
        #: Whether the next blocking wait polls first.
        self.polling = False
        #: Blocking waits since the last one that polled.
        self.without_polling = 0

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(timeout)  # a look, not a wait: no news about the traffic
        started = time.monotonic()
        if self.budget > 0 and (self.polling or self.without_polling >= PROBE_EVERY):
            self.without_polling = 0
            limit = self.budget if timeout is None else min(self.budget, timeout)
            ready = self._poll(started + limit)
            if ready:
                self.polling = True
                return ready
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
        else:
            self.without_polling += 1
        ready = super().select(timeout)
        waited = time.monotonic() - started
        self.polling = self.budget > 0 and bool(ready) and waited <= self.budget
        return ready

    def _poll(self, deadline: float) -> list[tuple[SelectorKey, int]]:
        while True:
            ready = super().select(0)
            if ready or time.monotonic() >= deadline:
                return ready
