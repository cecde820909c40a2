"""A bounded number of sends in progress; the others wait their turn, in order."""

from __future__ import annotations

import asyncio
import collections

__all__ = ("SendWindow",)


class SendWindow:
    """Like ``asyncio.Semaphore``, but waiting costs one future and no coroutine.

    A send holds several kB of coroutines and AMQP state from its start to its confirm; one
    that waits here holds a future. Thousands of sends gathered at once thus stay cheap in
    memory and for the garbage collector, which scans every live object on a full collection.

    ``turn()`` either enters at once (``None``) or gives the future to await; whoever awaited
    it must call :meth:`left_waiting` if the wait ends in an exception, and everyone who
    entered calls :meth:`leave` once done.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def turn(self) -> asyncio.Future[None] | None:
        """Enter now (``None``), or the future that resolves when it is this caller's turn."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return None
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        return ticket

    def left_waiting(self, ticket: asyncio.Future[None]) -> None:
        """The caller stopped waiting on ``ticket`` (cancelled, timed out): pass its turn on."""
        if ticket.done() and not ticket.cancelled():
            self.leave()  # the turn had come already: it goes to the next in line
        else:
            ticket.cancel()

    def leave(self) -> None:
        """A send is done: the next waiting one starts, or the place is free again."""
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self._free += 1
