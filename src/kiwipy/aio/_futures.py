"""Calling subscribers and following the futures they return (the pending protocol)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

__all__ = (
    "Invoker",
    "call_subscriber",
    "done_future",
    "follow_pending",
    "is_future",
    "outcome",
    "wait_future",
    "weak_callback",
)

#: How the core calls a subscriber: ``await invoker(subscriber, *args)``. The blocking facade
#: swaps in one that runs the subscriber on its callback thread.
Invoker = Callable[..., Awaitable[Any]]

AnyFuture = asyncio.Future[Any] | concurrent.futures.Future[Any]


def is_future(value: object) -> TypeGuard[AnyFuture]:
    """Whether ``value`` is a future a subscriber returned to say "the answer comes later"."""
    return asyncio.isfuture(value) or isinstance(value, concurrent.futures.Future)


async def call_subscriber(subscriber: Callable[..., Any], *args: Any) -> Any:
    """Call a plain or ``async`` subscriber on the loop; coroutines are awaited, futures kept."""
    result = subscriber(*args)
    if inspect.isawaitable(result) and not is_future(result):
        result = await result
    return result


async def wait_future(future: AnyFuture) -> Any:
    """Wait for a subscriber's future without cancelling it if *we* are cancelled.

    A future that was cancelled by its owner raises ``concurrent.futures.CancelledError``
    (kiwipy's ``CancelledError``), distinct from the ``asyncio.CancelledError`` that means the
    waiting task itself is being cancelled.
    """
    waited = (
        asyncio.wrap_future(future) if isinstance(future, concurrent.futures.Future) else future
    )
    try:
        return await asyncio.shield(waited)
    except asyncio.CancelledError:
        if waited.cancelled():
            raise concurrent.futures.CancelledError() from None
        raise


async def outcome(future: asyncio.Future[Any]) -> Any:
    """The value at the end of ``future``'s chain: a kiwipy 0.9 answer may be a future whose
    result is a future again (one level per subscriber that answered "later")."""
    result = await future
    while is_future(result):
        result = await wait_future(result)
    return result


async def follow_pending(result: Any, on_pending: Callable[[], Awaitable[None]]) -> Any:
    """Wait through a chain of futures, calling ``on_pending`` before each wait."""
    while is_future(result):
        await on_pending()
        result = await wait_future(result)
    return result


def done_future(
    *, result: Any = None, exception: BaseException | None = None, cancelled: bool = False
) -> asyncio.Future[Any]:
    """A finished future holding one outcome (used to hand outcomes around uniformly)."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if cancelled:
        future.cancel()
    elif exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
    return future


def weak_callback(callback: Callable[..., Any]) -> Callable[..., Any]:
    """A callable that calls ``callback`` while it is alive, and does nothing once it is gone.

    Bound methods are held with :class:`weakref.WeakMethod`, so the callback does not keep its
    object alive (what ``add_close_callback(..., weak=True)`` asks for). A callable that cannot
    be weakly referenced (a builtin function) is returned as it is.
    """
    ref: Callable[[], Callable[..., Any] | None]
    try:
        ref = weakref.WeakMethod(callback) if inspect.ismethod(callback) else weakref.ref(callback)
    except TypeError:
        return callback

    def call(*args: Any, **kwargs: Any) -> Any:
        target = ref()
        return None if target is None else target(*args, **kwargs)

    return call
