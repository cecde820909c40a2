"""Deleting a measurement's queues and exchanges from the broker afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq  # noqa: TID251 (the bench talks to the broker directly, as a raw client)
from common import Names

_TIMEOUT_S = 10.0


async def _on_fresh_channel(connection: Any, operation: Callable[[Any], Awaitable[Any]]) -> None:
    """Run one operation on its own channel: a failure closes only that channel."""
    channel = await connection.channel()
    with contextlib.suppress(Exception):
        await operation(channel)
    if not channel.is_closed:
        await channel.close()


async def _delete(url: str, names: Names) -> None:
    connection = await aiormq.connect(url)
    try:
        for queue in names.queues():
            await _on_fresh_channel(connection, lambda ch, q=queue: ch.queue_delete(q))
        for exchange in names.exchanges():
            await _on_fresh_channel(connection, lambda ch, e=exchange: ch.exchange_delete(e))
    finally:
        await connection.close()


def cleanup(url: str, names: Names) -> None:
    """Delete the durable queues and the exchanges of ``names`` (missing ones are fine)."""
    asyncio.run(asyncio.wait_for(_delete(url, names), _TIMEOUT_S))
