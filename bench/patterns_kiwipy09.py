"""Drivers and workers for kiwipy 0.9.0; run with the interpreter of ``bench/.venv-kiwipy09``.

Blocking code uses ``kiwipy.rmq.connect`` (``RmqThreadCommunicator``), asyncio code
``kiwipy.rmq.async_connect`` (``RmqCommunicator``), both with kiwipy 0.9's defaults (YAML,
unlimited prefetch). kiwipy 0.9 has no batch send: its "batch" is the loop of blocking sends.
The library is imported on first use, so a driver's workers start while it imports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import common
import kiwipy_patterns


def load() -> None:
    import kiwipy.rmq  # noqa: F401


@contextlib.asynccontextmanager
async def connect_async(url: str, options: dict[str, Any]) -> AsyncIterator[Any]:
    import kiwipy.rmq

    comm = await kiwipy.rmq.async_connect(url, **options)
    try:
        yield comm
    finally:
        await comm.disconnect()


def connect(url: str, options: dict[str, Any]) -> Any:
    import kiwipy.rmq

    return kiwipy.rmq.connect(url, **options)


def send_batch(comm: Any, tasks: list[Any], no_reply: bool) -> list[Any]:
    return [comm.task_send(task, no_reply=no_reply) for task in tasks]


API = kiwipy_patterns.KiwipyApi(__file__, load, connect, connect_async, send_batch)

if __name__ == "__main__":
    patterns = kiwipy_patterns.KiwipyPatterns(API)
    common.main(patterns.driver_table(), patterns.worker_table())
