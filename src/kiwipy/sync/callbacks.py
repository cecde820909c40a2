"""The callback thread: user subscribers of the blocking facade run here, never on the I/O loop.

One thread, one FIFO queue: callbacks run in arrival order (per-sender order holds), a callback
that sleeps for minutes stalls only other callbacks (heartbeats and acks go on), and a callback
may call the communicator's blocking methods without deadlocking.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from kiwipy.aio.futures import is_future

__all__ = ("CallbackThread",)

_LOGGER = logging.getLogger(__name__)
_STOP = object()


class CallbackThread:
    """Runs subscribers on one daemon thread and hands their results back to the loop."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    async def invoke(self, subscriber: Callable[..., Any], *args: Any) -> Any:
        """Call ``subscriber(*args)`` on the callback thread; await its result on the loop.

        A coroutine it returns (an ``async def`` subscriber, or a ``BroadcastFilter`` around
        one) is awaited on the loop; a future it returns is kept (the pending protocol).
        """
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()
        self._queue.put((subscriber, args, loop, outcome))
        result = await outcome
        if inspect.isawaitable(result) and not is_future(result):
            result = await result
        return result

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to finish after the queued callbacks; wait at most ``timeout`` s."""
        self._queue.put(_STOP)
        if not self.is_current():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            subscriber, args, loop, outcome = item
            try:
                result = subscriber(*args)
            except BaseException as exc:  # handed to the loop; it decides what is fatal
                _deliver(loop, outcome, exception=exc)
            else:
                _deliver(loop, outcome, result=result)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    outcome: asyncio.Future[Any],
    *,
    result: Any = None,
    exception: BaseException | None = None,
) -> None:
    def settle() -> None:
        if outcome.done():
            return
        if exception is not None:
            outcome.set_exception(exception)
        else:
            outcome.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: the communicator is gone
        _LOGGER.debug("Dropped a callback result: the communicator is closed")
