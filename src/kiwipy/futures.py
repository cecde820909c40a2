"""Thread-safe futures for the blocking API, and helpers to link them (kiwipy 0.9 names).

``Future``, ``CancelledError``, ``wait`` and ``as_completed`` are those of
:mod:`concurrent.futures`: what the blocking communicator returns. ``CancelledError`` is
therefore *not* ``asyncio.CancelledError`` (they are distinct classes since Python 3.8); kiwipy
itself treats a cancelled subscriber future as a cancelled outcome, never as a crash.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = (  # noqa: RUF022 (kiwipy 0.9's order)
    "Future",
    "chain",
    "copy_future",
    "CancelledError",
    "capture_exceptions",
    "wait",
    "as_completed",
)

Future = concurrent.futures.Future
CancelledError = concurrent.futures.CancelledError
wait = concurrent.futures.wait
as_completed = concurrent.futures.as_completed

_ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


def copy_future(source: Future[Any], target: Future[Any]) -> None:
    """Copy the outcome of the finished ``source`` to ``target``, unless ``target`` is done.

    A cancelled source cancels the target; a failed one passes its exception on.
    """
    if target.done():
        return
    if source.cancelled():
        target.cancel()
        return
    with capture_exceptions(target):
        target.set_result(source.result())


def chain(source: Future[Any], target: Future[Any]) -> None:
    """When ``source`` finishes, copy its outcome to ``target`` (unless that is done by then)."""
    source.add_done_callback(lambda done: copy_future(done, target))


@contextlib.contextmanager
def capture_exceptions(future: Future[Any], ignore: _ExceptionTypes = ()) -> Iterator[None]:
    """Set an ``Exception`` raised in the block on ``future`` instead of propagating it.

    Exceptions that are instances of ``ignore`` propagate untouched (and are not set).
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, ignore):
            raise
        future.set_exception(exc)
