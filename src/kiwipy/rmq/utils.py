"""kiwipy 0.9's reply helpers (``kiwipy.rmq.utils``), built on :mod:`kiwipy.messages`.

Replies are mappings with one of the keys ``cancelled``, ``exception``, ``result`` or
``pending``. Exception replies made here also carry the type name and traceback text, under
extra keys that kiwipy 0.9 peers ignore.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import traceback
import types
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from kiwipy import messages
from kiwipy.aio._futures import call_subscriber

__all__ = ()

HOST_KEY = messages.HOST_KEY
HOSTNAME_KEY = "hostname"
PID_KEY = "pid"
RESULT_KEY = messages.RESULT_KEY
EXCEPTION_KEY = messages.EXCEPTION_KEY
CANCELLED_KEY = messages.CANCELLED_KEY
PENDING_KEY = messages.PENDING_KEY

AnyFuture = asyncio.Future[Any] | concurrent.futures.Future[Any]


def get_host_info() -> dict[str, Any]:
    """``{'hostname': ..., 'pid': ...}`` of this process."""
    return messages.host_info()


def add_host_info(msg: dict[str, Any]) -> None:
    """Add this host's information to ``msg``; ``ValueError`` if it already has some."""
    if HOST_KEY in msg:
        raise ValueError("Host information key already exists in message")
    msg[HOST_KEY] = get_host_info()


def result_response(result: Any) -> dict[str, Any]:
    return messages.result_reply(result)


def exception_response(
    exception: BaseException, trace: types.TracebackType | None = None
) -> dict[str, Any]:
    """An exception reply for ``exception``; ``trace`` replaces its own traceback if given."""
    reply = messages.exception_reply(exception)
    if trace is not None:
        lines = traceback.format_exception(type(exception), exception, trace)
        reply[messages.TRACEBACK_KEY] = "".join(lines)
    return reply


def cancelled_response(msg: str | None = None) -> dict[str, Any]:
    return messages.cancelled_reply(msg)


def pending_response(msg: Any = None) -> dict[str, Any]:
    return {PENDING_KEY: msg}


def response_to_future(response: Any, future: AnyFuture | None = None) -> AnyFuture:
    """Put the outcome a reply describes into ``future`` (a new ``kiwipy.Future`` if ``None``).

    ``TypeError`` if ``response`` is not a mapping, ``ValueError`` if it has none of the keys.
    A ``pending`` reply resolves ``future`` with a new future of the same kind.
    """
    if not isinstance(response, Mapping):
        raise TypeError("Response must be a mapping")
    reply = messages.parse_reply(response)
    target: AnyFuture = concurrent.futures.Future() if future is None else future
    if reply.kind == CANCELLED_KEY:
        target.cancel()
    elif reply.kind == EXCEPTION_KEY:
        assert reply.error is not None
        target.set_exception(reply.error)
    elif reply.kind == RESULT_KEY:
        target.set_result(reply.value)
    else:
        target.set_result(_same_kind(target))
    return target


def _same_kind(future: AnyFuture) -> AnyFuture:
    if isinstance(future, asyncio.Future):
        return future.get_loop().create_future()
    return concurrent.futures.Future()


def response_result(response: Any) -> Any:
    """The result a reply carries; raises what it describes (``RemoteException``, cancelled)."""
    return response_to_future(response).result()


def future_to_response(future: AnyFuture) -> dict[str, Any]:
    """The reply describing a finished ``future``."""
    if future.cancelled():
        return cancelled_response()
    exception = future.exception()
    if exception is not None:
        return exception_response(exception)
    return result_response(future.result())


def ensure_coroutine(
    coro_or_fn: Callable[..., Any],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A coroutine function calling ``coro_or_fn``: returned as is if it already is one.

    Unlike kiwipy 0.9, a coroutine (or other awaitable) returned by a plain callable, such as a
    ``BroadcastFilter`` around an ``async def`` subscriber, is awaited too; futures are returned
    as they are (the pending protocol). ``TypeError`` if ``coro_or_fn`` is not callable.
    """
    if inspect.iscoroutinefunction(coro_or_fn):
        return coro_or_fn
    if not callable(coro_or_fn):
        raise TypeError("coro_or_fn must be a callable")

    @functools.wraps(coro_or_fn)
    async def wrap(*args: Any, **kwargs: Any) -> Any:
        return await call_subscriber(functools.partial(coro_or_fn, **kwargs), *args)

    return wrap
