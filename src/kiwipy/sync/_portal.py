"""A loop-in-a-thread portal: blocking code runs coroutines on a private event loop.

The loop lives on one daemon thread, so heartbeats and acks go on while the caller's thread is
busy. A call that times out is cancelled on the loop before the caller gets ``DeadlineExceeded``:
nothing is left running to happen "maybe" later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kiwipy.exceptions import DeadlineExceeded, InvalidStateError

__all__ = ("Portal",)

T = TypeVar("T")

#: How long a timed-out call may take to unwind its cancellation before we stop waiting.
_CANCEL_GRACE_S = 5.0
#: How much longer than an operation's own bound the portal waits for it.
_OPERATION_GRACE_S = 1.0


class Portal:
    """Owns an event loop running on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(
        self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None, what: str
    ) -> T:
        """Run the coroutine ``make()`` on the loop and wait for it, at most ``timeout`` s."""
        if self.in_loop_thread():
            raise InvalidStateError(
                f"{what}: a blocking call was made from the communicator's own event loop "
                "thread, where it would deadlock; use the asyncio API (kiwipy.aio) there"
            )
        if self._loop.is_closed():
            from kiwipy.exceptions import CommunicatorClosed

            raise CommunicatorClosed("The communicator's event loop has stopped")
        future = self._submit(make())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # it raised a timeout of its own
                raise
            future.cancel()
            concurrent.futures.wait([future], _CANCEL_GRACE_S)
            raise DeadlineExceeded(f"{what} did not complete within {timeout:g} s") from None

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

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Like ``asyncio.run_coroutine_threadsafe``, minus a loop turn on the way back.

        The coroutine's task sets the caller's future itself when it ends, instead of a done
        callback that the loop runs one turn later. Cancelling the future cancels the task.
        """
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

        def start() -> None:
            if outcome.cancelled():
                coro.close()
                return
            task = self._loop.create_task(_deliver(coro, outcome))
            outcome.add_done_callback(lambda done: _cancel_from_caller(self._loop, task, done))

        self._loop.call_soon_threadsafe(start)
        return outcome

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
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())


async def _deliver(coro: Coroutine[Any, Any, T], outcome: concurrent.futures.Future[T]) -> None:
    """Run ``coro`` and hand its outcome to the (other thread's) ``outcome``."""
    try:
        result = await coro
    except asyncio.CancelledError:
        outcome.cancel()
        raise
    except BaseException as exc:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            outcome.set_exception(exc)
        if not isinstance(exc, Exception):
            raise
    else:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            outcome.set_result(result)


def _cancel_from_caller(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[None], done: concurrent.futures.Future[Any]
) -> None:
    if done.cancelled() and not loop.is_closed():
        loop.call_soon_threadsafe(task.cancel)
