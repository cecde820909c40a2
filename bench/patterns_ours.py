"""Drivers and workers for our kiwipy (``kiwipy.sync`` / ``kiwipy.aio``).

    python bench/patterns_ours.py driver --pattern tasks_batch --n 2000 --names '{...}'

The library is imported on first use, so a driver's workers start while it imports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import common
import kiwipy_patterns
from common import WAIT_TIMEOUT_S


def load() -> None:
    import kiwipy.aio
    import kiwipy.sync
    import kiwipy.transports.amqp  # noqa: F401 (the AMQP client, as kiwipy.rmq loads aio-pika in 0.9)


@contextlib.asynccontextmanager
async def connect_async(url: str, options: dict[str, Any]) -> AsyncIterator[Any]:
    import kiwipy.aio

    async with await kiwipy.aio.connect(url, **options) as comm:
        yield comm


def connect(url: str, options: dict[str, Any]) -> Any:
    import kiwipy.sync

    return kiwipy.sync.connect(url, **options)


def send_batch(comm: Any, tasks: list[Any], no_reply: bool) -> list[Any]:
    return list(comm.task_send_many(tasks, no_reply=no_reply, timeout=WAIT_TIMEOUT_S))


API = kiwipy_patterns.KiwipyApi(__file__, load, connect, connect_async, send_batch)

if __name__ == "__main__":
    patterns = kiwipy_patterns.KiwipyPatterns(API)
    common.main(patterns.driver_table(), patterns.worker_table())
