"""Calling subscribers and following the futures they return (the pending protocol)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

__all__ = (
    "Invoker",
    "call_subscriber",
    "done_future",
    "follow_pending",
    "is_future",
    "wait_future",
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
