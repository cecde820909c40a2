"""Callback threads: user subscribers of the blocking facade run here, never on the I/O loop.

Each subscriber has a *lane*: its calls run one at a time, in arrival order (so per-sender order
holds), on a small pool of daemon threads. A subscriber that sleeps for minutes holds only its
own lane: heartbeats and acks go on (they are on the loop), and so do other subscribers'
deliveries. A callback may call the communicator's blocking methods without deadlocking.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import logging
import os
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

    def run(self) -> tuple[Any, BaseException | None]:
        """Call the subscriber; its result or exception (handed to the loop, which decides
        what is fatal)."""
        try:
            return self.context.run(self.subscriber, *self.args), None
        except BaseException as exc:
            return None, exc


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

    def __init__(
        self,
        name: str,
        max_threads: int = DEFAULT_MAX_THREADS,
        at_turn_end: Callable[[Callable[[], Any]], None] | None = None,
    ) -> None:
        self._name = name
        #: Runs a callable when the loop's turn ends (the portal's), else ``None``: at once.
        self._at_turn_end = at_turn_end
        self._to_wake: list[int] = []  # lanes to hand to a thread when the turn ends
        self._max_threads = max_threads
        self._lock = threading.Lock()
        self._lanes: dict[int, collections.deque[_Call]] = {}
        self._ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Idle threads sleep on this pipe, a byte per lane put in ``_ready``: ``os.write``
        # lets go of the GIL before it wakes one, so the woken thread runs at once (a queue's
        # ``put`` wakes it while holding the GIL, and it often sleeps again until the loop
        # lets go). The write end never blocks the loop: a full pipe wakes threads as well.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
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
        self._wake(len(threads))
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout / max(len(threads), 1))

    def __del__(self) -> None:
        # Not in stop(): a wake-up the loop queued before may still write to the pipe, and a
        # closed descriptor's number may be another file's by then. Threads and queued
        # wake-ups hold this object, so nothing writes or reads the pipe any more here.
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

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
        if self._at_turn_end is None:
            self._ready.put(lane_key)
            self._wake(1)
            return
        # Woken now, a thread would find the loop holding the GIL (and often preempt it only
        # to sleep again); at the turn's end the loop is about to let go of it.
        self._to_wake.append(lane_key)
        if len(self._to_wake) == 1:
            self._at_turn_end(self._wake_threads)

    def _wake_threads(self) -> None:
        to_wake, self._to_wake = self._to_wake, []
        for lane_key in to_wake:
            self._ready.put(lane_key)
        self._wake(len(to_wake))

    def _wake(self, count: int) -> None:
        with contextlib.suppress(BlockingIOError):  # full: there are bytes enough to wake
            os.write(self._wake_write, b"\0" * count)

    def _next_lane(self) -> Any:
        """The next lane to drain (or ``_STOP``), sleeping on the pipe while there is none.

        A byte goes with every lane put, and a thread reads one only before it looks for a
        lane: a thread that finds none had its lane taken by one that did not sleep, and
        sleeps again; no lane is left without a byte to wake a thread for it.
        """
        while True:
            try:
                return self._ready.get_nowait()
            except queue.Empty:
                os.read(self._wake_read, 1)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads) + 1}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        with self._lock:
            self._idle += 1
        while True:
            lane_key = self._next_lane()
            if lane_key is _STOP:
                return
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            self._drain(lane_key)

    def _drain(self, lane_key: int) -> None:
        """Run the lane's calls in turn; the thread is idle again when this returns.

        Each outcome is handed to the loop just before the next call, or for the last one
        after the bookkeeping, right before the thread sleeps: the loop, woken by it, then
        finds the GIL free instead of waiting for this thread to let go of it.
        """
        done: tuple[_Call, Any, BaseException | None] | None = None
        while True:
            with self._lock:
                lane = self._lanes[lane_key]
                if not lane:
                    del self._lanes[lane_key]
                    self._idle += 1
                    break
                call = lane.popleft()
            if done is not None:
                self._results.post(done[0].loop, done[0].outcome, done[1], done[2])
            done = (call, *call.run())
        if done is not None:
            self._results.post(done[0].loop, done[0].outcome, done[1], done[2])
