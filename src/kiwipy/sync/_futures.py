"""Turning the loop's asyncio futures into ``concurrent.futures.Future`` for blocking code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from kiwipy.sync._portal import Portal

__all__ = ("final_result", "to_concurrent")


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
    target: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def copy(done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            target.cancel()
            return
        try:
            if done.exception() is not None:
                target.set_exception(done.exception())
            else:
                result = done.result()
                if asyncio.isfuture(result):
                    result = to_concurrent(result, portal)
                target.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # the user cancelled it from another thread meanwhile

    def cancel_source(done: concurrent.futures.Future[Any]) -> None:
        if done.cancelled() and not source.done():
            portal.call_soon(source.cancel)

    source.add_done_callback(copy)
    target.add_done_callback(cancel_source)
    return target
