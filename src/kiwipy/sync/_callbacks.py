"""Callback threads: user subscribers of the blocking facade run here, never on the I/O loop.

Each subscriber has a *lane*: its calls run one at a time, in arrival order (so per-sender order
holds), on a small pool of daemon threads. A subscriber that sleeps for minutes holds only its
own lane: heartbeats and acks go on (they are on the loop), and so do other subscribers'
deliveries. A callback may call the communicator's blocking methods without deadlocking.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from kiwipy.aio._futures import is_future

__all__ = ("CallbackThreads",)

_LOGGER = logging.getLogger(__name__)
_STOP = object()

#: Lanes that may run at the same time; more busy subscribers than this wait their turn.
DEFAULT_MAX_THREADS = 32


class _Call:
    __slots__ = ("args", "context", "loop", "outcome", "subscriber")

    def __init__(
        self,
        subscriber: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        outcome: asyncio.Future[Any],
    ) -> None:
        self.subscriber = subscriber
        self.args = args
        self.loop = loop
        self.outcome = outcome
        # The caller's context variables (such as the current incoming task) go along.
        self.context = contextvars.copy_context()

    def run(self, results: _Results) -> None:
        try:
            result = self.context.run(self.subscriber, *self.args)
        except BaseException as exc:  # handed to the loop; it decides what is fatal
            results.post(self.loop, self.outcome, None, exc)
        else:
            results.post(self.loop, self.outcome, result, None)


class _Results:
    """Hands results back to the loop, waking it once for all that are ready, not per call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._wake_pending = False

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        outcome: asyncio.Future[Any],
        result: Any,
        exception: BaseException | None,
    ) -> None:
        with self._lock:
            self._ready.append((outcome, result, exception))
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._settle_ready)
        except RuntimeError:  # the loop is closed: the communicator is gone
            _LOGGER.debug("Dropped callback results: the communicator is closed")

    def _settle_ready(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._wake_pending = False
        for outcome, result, exception in ready:
            if outcome.done():
                continue
            if exception is not None:
                outcome.set_exception(exception)
            else:
                outcome.set_result(result)


class CallbackThreads:
    """Runs subscribers in per-subscriber lanes on up to ``max_threads`` daemon threads."""

    def __init__(self, name: str, max_threads: int = DEFAULT_MAX_THREADS) -> None:
        self._name = name
        self._max_threads = max_threads
        self._lock = threading.Lock()
        self._lanes: dict[int, collections.deque[_Call]] = {}
        self._ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a lane
        self._queued = 0  # lanes waiting for a thread
        self._stopped = False
        self._results = _Results()

    async def invoke(self, subscriber: Callable[..., Any], *args: Any) -> Any:
        """Call ``subscriber(*args)`` in its lane; await its result on the loop.

        A coroutine it returns (an ``async def`` subscriber, or a ``BroadcastFilter`` around
        one) is awaited on the loop; a future it returns is kept (the pending protocol).
        An ``async def`` subscriber is called on the loop directly: calling it runs none of its
        code, so a thread would add two hand-overs and nothing else.
        """
        if inspect.iscoroutinefunction(subscriber):
            return await subscriber(*args)
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()
        self._submit(id(subscriber), _Call(subscriber, args, loop, outcome))
        result = await outcome
        if inspect.isawaitable(result) and not is_future(result):
            result = await result
        return result

    def stop(self, timeout: float = 1.0) -> None:
        """Let the threads finish their current call and exit; wait at most ``timeout`` s."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        for _ in threads:
            self._ready.put(_STOP)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout / max(len(threads), 1))

    def _submit(self, lane_key: int, call: _Call) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError("The communicator's callback threads have stopped")
            lane = self._lanes.get(lane_key)
            if lane is not None:  # a thread is draining this lane; it will get to the call
                lane.append(call)
                return
            self._lanes[lane_key] = collections.deque([call])
            self._queued += 1
            if self._idle < self._queued and len(self._threads) < self._max_threads:
                self._start_thread()
        self._ready.put(lane_key)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads) + 1}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            lane_key = self._ready.get()
            if lane_key is _STOP:
                return
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            self._drain(lane_key)

    def _drain(self, lane_key: int) -> None:
        while True:
            with self._lock:
                lane = self._lanes[lane_key]
                if not lane:
                    del self._lanes[lane_key]
                    return
                call = lane.popleft()
            call.run(self._results)
