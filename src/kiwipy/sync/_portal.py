"""A loop-in-a-thread portal: blocking code runs coroutines on a private event loop.

The loop lives on one daemon thread, so heartbeats and acks go on while the caller's thread is
busy. A call that times out is cancelled on the loop before the caller gets ``DeadlineExceeded``:
nothing is left running to happen "maybe" later.

The hand-off is what a thread switch costs and little more (``bench/hop_bench.py hop``): one
``call_soon_threadsafe`` to the loop, a task for the coroutine, and a byte written to the
caller's pipe when it ends, just before the loop sleeps (no ``concurrent.futures.Future`` nor
``run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import select
import selectors
import sys
import threading
import time
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from kiwipy.exceptions import CommunicatorClosed, DeadlineExceeded, InvalidStateError

__all__ = ("Portal", "thread_waker")

T = TypeVar("T")

#: How long a timed-out call may take to unwind its cancellation before we stop waiting.
_CANCEL_GRACE_S = 5.0
#: How much longer than an operation's own bound the portal waits for it.
_OPERATION_GRACE_S = 1.0


class Portal:
    """Owns an event loop running on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self._selector = _Selector()
        self._loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop(self._selector)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait()
        self._thread_id: int | None = self._thread.ident

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread_id

    def call(
        self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None, what: str
    ) -> T:
        """Run the coroutine ``make()`` on the loop and wait for it, at most ``timeout`` s."""
        self._check_caller(what)
        return self._wait(_Call(make()), timeout, what)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
        """:meth:`call` for a coroutine made already (it is closed if it cannot run)."""
        try:
            self._check_caller(what)
        except BaseException:
            coro.close()
            raise
        return self._wait(_Call(coro), timeout, what)

    def call_operation(
        self,
        make: Callable[[], Coroutine[Any, Any, T]],
        timeout: float | None,
        default_timeout: float,
        what: str,
    ) -> T:
        """Run a kiwipy operation that bounds itself by ``timeout`` (or ``default_timeout``).

        The operation gives up on its own and says why (a lost link, a late confirm); the
        portal's bound, a little later, only guards against one that cannot end.
        """
        limit = default_timeout if timeout is None else timeout
        return self.call(make, limit + _OPERATION_GRACE_S, what)

    def run_operation(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None,
        default_timeout: float,
        what: str,
    ) -> T:
        """:meth:`call_operation` for a coroutine made already."""
        limit = default_timeout if timeout is None else timeout
        return self.run(coro, limit + _OPERATION_GRACE_S, what)

    def _check_caller(self, what: str) -> None:
        if threading.get_ident() == self._thread_id:
            raise InvalidStateError(
                f"{what}: a blocking call was made from the communicator's own event loop "
                "thread, where it would deadlock; use the asyncio API (kiwipy.aio) there"
            )
        if self._loop.is_closed():
            raise CommunicatorClosed("The communicator's event loop has stopped")

    def _wait(self, call: _Call[T], timeout: float | None, what: str) -> T:
        """Hand ``call`` to the loop and wait for its outcome (see :class:`_Waker`)."""
        try:
            self._loop.call_soon_threadsafe(call.start, self._loop, self._selector)
        except RuntimeError:  # closed meanwhile
            call.coro.close()
            raise CommunicatorClosed("The communicator's event loop has stopped") from None
        if not call.waker.wait_for(call, timeout):
            self._cancel(call, timeout, what)
        return call.outcome()

    def _cancel(self, call: _Call[Any], timeout: float | None, what: str) -> None:
        """The caller's bound passed: cancel the call on the loop and wait for it to unwind.

        Returns if the call ended by itself meanwhile (its outcome stands); raises
        ``DeadlineExceeded`` if it was cancelled, or did not unwind within the grace period.
        """
        with contextlib.suppress(RuntimeError):  # a closed loop runs nothing any more
            self._loop.call_soon_threadsafe(call.cancel, self._selector)
        unwound = call.waker.wait_for(call, _CANCEL_GRACE_S)
        if not unwound or call.state == _CANCELLED:
            raise DeadlineExceeded(f"{what} did not complete within {timeout:g} s") from None

    def at_turn_end(self, callback: Callable[[], Any]) -> None:
        """On the loop thread: call ``callback()`` when this turn of the loop ends, just
        before the loop polls (and lets go of the GIL): the time to wake another thread."""
        self._selector.before_sleep.append(callback)

    def wake(self, waker: _Waker) -> None:
        """Wake ``waker``'s thread: at the end of the loop's turn if called on the loop (the
        loop's work of that turn done, and it lets go of the GIL), else now."""
        if threading.get_ident() == self._thread_id:
            self._selector.before_sleep.append(waker.wake)
        else:
            waker.wake()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Schedule a plain callback on the loop from any thread."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        """Stop the loop and join its thread. Idempotent; not from the loop thread."""
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_loop_thread():
            self._thread.join()
            self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        try:
            self._loop.run_forever()
        finally:
            self._selector.select(0)  # wakes whoever the last turn was to wake
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._thread_id = None  # a later thread may get this thread's identifier


class _Selector(selectors.DefaultSelector):
    """The loop's selector, running ``before_sleep`` callables each time the loop polls.

    The loop polls once per turn, after running what was ready, and lets go of the GIL while
    it polls: what wakes another thread goes best right there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.before_sleep: list[Callable[[], Any]] = []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self.before_sleep:
            ready, self.before_sleep[:] = self.before_sleep[:], ()
            for wake in ready:
                wake()
        events: list[tuple[selectors.SelectorKey, int]] = super().select(timeout)
        return events


_PENDING, _RESULT, _ERROR, _CANCELLED = range(4)

#: The longest a caller sleeps without looking at its call's state (see :meth:`_Waker.wait_for`).
_WAIT_SLICE_S = 1.0


class _Waker:
    """How the loop wakes one caller thread: a byte in a pipe that thread sleeps on.

    ``os.write`` lets go of the GIL before it wakes the caller, so the caller runs at once.
    Waking it by releasing a lock (or through a ``concurrent.futures.Future``) is done while
    the loop thread holds the GIL: the woken caller often preempts the loop thread on its own
    core, finds the GIL taken, and sleeps again until the loop lets go (two thread switches
    more per call, about half the hop's cost on a busy 2-core machine; ``hop_bench.py hop``).

    One per caller thread (a thread waits for one call at a time). A byte can be left over,
    from a call whose caller gave up waiting: the caller therefore checks its call's state, not
    the byte. Where there is no ``select.poll`` (Windows), a lock does the same job.
    """

    __slots__ = ("__weakref__", "_lock", "_poll", "_read", "_write")

    def __init__(self) -> None:
        self._poll: Any = None
        self._lock: Any = None
        if hasattr(select, "poll"):
            self._read, self._write = os.pipe()
            os.set_blocking(self._read, False)
            self._poll = select.poll()
            self._poll.register(self._read, select.POLLIN)
        else:  # pragma: no cover (Windows)
            self._lock = _allocate_lock()
            self._lock.acquire()

    def wake(self) -> None:
        """On the loop thread: wake the caller (best just before the loop sleeps)."""
        if self._lock is not None:  # pragma: no cover (Windows)
            with contextlib.suppress(RuntimeError):
                self._lock.release()
            return
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the caller as well
            os.write(self._write, b"\0")

    def wait_for(self, call: _Call[Any], timeout: float | None) -> bool:
        """Sleep until ``call`` has an outcome or ``timeout`` s have passed; whether it has."""
        return self.wait_until(call.has_outcome, timeout)

    def wait_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        """Sleep until ``done()`` or ``timeout`` s have passed; return ``done()``.

        Sleeps in slices: a signal handler that makes a blocking call on this thread while
        this one waits may take this wait's byte.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            left = _WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            self._sleep(min(left, _WAIT_SLICE_S))
        return True

    def _sleep(self, seconds: float) -> None:
        if self._lock is not None:  # pragma: no cover (Windows)
            self._lock.acquire(timeout=seconds)
            return
        if self._poll.poll(seconds * 1000.0):
            with contextlib.suppress(BlockingIOError):
                os.read(self._read, 64)

    def __del__(self) -> None:
        if self._lock is None:
            os.close(self._read)
            os.close(self._write)


_wakers = threading.local()


def _forget_wakers() -> None:
    """In a forked child: its threads get pipes of their own (the parent's are shared)."""
    global _wakers
    _wakers = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_wakers)


def thread_waker() -> _Waker:
    """This thread's waker (made on its first blocking call)."""
    try:
        waker: _Waker = _wakers.waker
    except AttributeError:
        waker = _wakers.waker = _Waker()
    return waker


class _Call(Generic[T]):
    """One blocking call: its coroutine, its outcome, and its caller's waker.

    The call holds its waker, so the pipe stays open while a late outcome may still wake it.
    """

    __slots__ = ("coro", "state", "task", "value", "waker")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.waker = thread_waker()
        self.state = _PENDING
        self.value: Any = None
        self.task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop, selector: _Selector) -> None:
        """On the loop: run the coroutine in a task of its own (up to its first wait, right
        here, where Python has eager tasks: one loop turn less)."""
        if sys.version_info >= (3, 12):
            coro = self._deliver(selector.before_sleep)
            self.task = asyncio.Task(coro, loop=loop, eager_start=True)
        else:
            self.task = loop.create_task(self._deliver(selector.before_sleep))

    async def _deliver(self, before_sleep: list[Callable[[], Any]]) -> None:
        # The caller is woken when the loop is about to sleep, with nothing else to do.
        try:
            self.value = await self.coro
        except asyncio.CancelledError:
            self.state = _CANCELLED
            before_sleep.append(self.waker.wake)
            raise
        except BaseException as exc:
            self.value = exc
            self.state = _ERROR
            before_sleep.append(self.waker.wake)
            if not isinstance(exc, Exception):
                raise
        else:
            self.state = _RESULT
            before_sleep.append(self.waker.wake)

    def cancel(self, selector: _Selector) -> None:
        """On the loop: cancel the call if it is still running (its task then unwinds)."""
        if self.task is None:  # never started (the loop stopped first): nothing to unwind
            self.coro.close()
            self.state = _CANCELLED
            selector.before_sleep.append(self.waker.wake)
        elif not self.task.done():
            self.task.cancel()

    def has_outcome(self) -> bool:
        return self.state != _PENDING

    def outcome(self) -> T:
        """The caller's side, once the state is set: the result, or raise the error."""
        if self.state == _RESULT:
            result: T = self.value
            return result
        if self.state == _ERROR:
            error, self.value = self.value, None  # no cycle through the traceback
            raise error
        raise concurrent.futures.CancelledError()
