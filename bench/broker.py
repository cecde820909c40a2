"""Deleting the measurements' queues and exchanges from the broker afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aiormq  # noqa: TID251 (the bench talks to the broker directly, as a raw client)
from common import Names

_TIMEOUT_S = 10.0


async def _delete_one(connection: Any, kind: str, name: str) -> None:
    """Delete the queue or exchange ``name`` on a channel of its own (a failure closes only it)."""
    channel = await connection.channel()
    with contextlib.suppress(Exception):
        if kind == "queue":
            await channel.queue_delete(name)
        else:
            await channel.exchange_delete(name)
    if not channel.is_closed:
        await channel.close()


async def _delete(url: str, all_names: Sequence[Names]) -> None:
    connection = await aiormq.connect(url)
    try:
        for names in all_names:
            for queue in names.queues():
                await _delete_one(connection, "queue", queue)
            for exchange in names.exchanges():
                await _delete_one(connection, "exchange", exchange)
    finally:
        await connection.close()


def cleanup(url: str, all_names: Sequence[Names]) -> None:
    """Delete the durable queues and the exchanges of every ``Names`` (missing ones are fine)."""
    if all_names:
        asyncio.run(asyncio.wait_for(_delete(url, all_names), _TIMEOUT_S + len(all_names)))
