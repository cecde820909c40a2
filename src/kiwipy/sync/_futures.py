"""Turning the loop's asyncio futures into ``concurrent.futures.Future`` for blocking code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from kiwipy.sync._portal import Portal, thread_waker

__all__ = ("BlockingFuture", "final_result", "to_concurrent")


class BlockingFuture(concurrent.futures.Future[Any]):
    """A ``concurrent.futures.Future`` whose ``result()`` sleeps on the caller's own waker.

    The loop wakes a waiter with a byte written at the end of its turn, letting go of the GIL
    first (see ``kiwipy.sync._portal._Waker``), instead of the condition variable that
    ``set_result`` notifies while holding it. Everything else is the base class's.
    """

    def __init__(self, portal: Portal) -> None:
        super().__init__()
        self._portal = portal
        self._wakers: set[Any] | None = None
        self._source: asyncio.Future[Any] | None = None

    def _follow(self, source: asyncio.Future[Any]) -> None:
        """Take ``source``'s outcome when it has one (on the loop thread); cancelling this
        cancels ``source``. Bound methods, not closures: fewer objects per future."""
        self._source = source
        source.add_done_callback(self._copy)
        self.add_done_callback(_cancel_source)

    def _copy(self, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            self.cancel()
            return
        try:
            if done.exception() is not None:
                self.set_exception(done.exception())
            else:
                result = done.result()
                if asyncio.isfuture(result):
                    result = to_concurrent(result, self._portal)
                self.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # the user cancelled it from another thread meanwhile

    def _cancel_source(self) -> None:
        source, self._source = self._source, None  # no cycle once settled
        if self.cancelled() and source is not None and not source.done():
            self._portal.call_soon(source.cancel)

    def result(self, timeout: float | None = None) -> Any:
        return super().result(self._wait(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._wait(timeout))

    def _wait(self, timeout: float | None) -> float | None:
        """Wait on this thread's waker; return what is left for the base class to wait."""
        if self.done() or self._portal.in_loop_thread():
            return timeout  # done: the base class does not wait; on the loop: as before
        waker = thread_waker()
        if self._wakers is None:
            self._wakers = set()
            self.add_done_callback(self._wake_all)
        self._wakers.add(waker)
        try:
            waker.wait_until(self.done, timeout)
        finally:
            self._wakers.discard(waker)
        return 0  # done, or the time is up: the base class raises TimeoutError at once

    def _wake_all(self, _done: concurrent.futures.Future[Any]) -> None:
        for waker in list(self._wakers or ()):
            self._portal.wake(waker)


def _cancel_source(done: concurrent.futures.Future[Any]) -> None:
    if isinstance(done, BlockingFuture):
        done._cancel_source()


def final_result(future: concurrent.futures.Future[Any]) -> Any:
    """Wait for ``future`` and for each future its result is (kiwipy 0.9's nested replies);
    the value at the end, or the first error. Bounded by the send's ``deadline``."""
    result = future.result()
    while isinstance(result, concurrent.futures.Future):
        result = result.result()
    return result


def to_concurrent(source: asyncio.Future[Any], portal: Portal) -> concurrent.futures.Future[Any]:
    """A thread-safe future that follows ``source``; call on the loop thread.

    A result that is itself an asyncio future (a ``pending`` reply) becomes a concurrent future
    too, to any depth. Cancelling the returned future cancels ``source`` on the loop.
    """
    target = BlockingFuture(portal)
    target._follow(source)
    return target
