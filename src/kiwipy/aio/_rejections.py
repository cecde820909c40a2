"""What happens to a task nobody can run: poison is settled once, rejection is retried, bounded.

* A body that does not decode is settled on its first delivery, never requeued: dead-lettered
  (to ``settings.dead_letter_queue`` with the reason in its headers, when one is configured;
  otherwise rejected without requeue, which a RabbitMQ dead-letter policy on the queue may
  route), and its sender gets an error reply when it asked for one.
* A task every subscriber rejects (``TaskRejected``) goes back to the queue after a growing
  pause, with its attempt count in a header; after ``settings.task_max_rejections`` attempts it
  is dead-lettered the same way and its sender gets a ``TaskRejected`` error reply. Nothing
  loops hot.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kiwipy import messages
from kiwipy.aio._core import Core
from kiwipy.exceptions import TaskRejected
from kiwipy.transports.base import Delivery, Message

__all__ = ("ATTEMPTS_HEADER", "ORIGIN_HEADER", "REASON_HEADER", "Rejections")

_LOGGER = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-kiwipy-attempts"
REASON_HEADER = "x-kiwipy-dead-reason"
ORIGIN_HEADER = "x-kiwipy-original-queue"
_LONGEST_PAUSE_S = 30.0


def attempts_of(message: Message) -> int:
    """How many times subscribers have rejected this task so far."""
    value = message.headers.get(ATTEMPTS_HEADER, 0)
    return value if isinstance(value, int) and value >= 0 else 0


class Rejections:
    """Settles the tasks of one queue that cannot be run."""

    def __init__(self, core: Core, queue: str) -> None:
        self._core = core
        self._queue = queue

    async def undecodable(self, delivery: Delivery, error: Exception) -> None:
        message = delivery.message
        _LOGGER.warning(
            "Rejected an undecodable task from queue '%s' (correlation id %s): %s",
            self._queue,
            message.correlation_id,
            error,
        )
        await self._core.send_reply(message, messages.exception_reply(error))
        await self._dead_letter(delivery, f"undecodable: {error}")

    async def rejected_by_all(self, delivery: Delivery) -> None:
        message = delivery.message
        attempts = attempts_of(message) + 1
        limit = self._core.settings.task_max_rejections
        if attempts >= limit:
            error = TaskRejected(f"Every subscriber rejected the task, {attempts} times")
            _LOGGER.warning("Giving up on a task of queue '%s': %s", self._queue, error)
            await self._core.send_reply(message, messages.exception_reply(error))
            await self._dead_letter(delivery, f"rejected {attempts} times")
            return
        first = self._core.settings.task_rejection_pause
        await asyncio.sleep(min(first * 2 ** (attempts - 1), _LONGEST_PAUSE_S))
        retry = _with_headers(message, {ATTEMPTS_HEADER: attempts})
        await self._core.transport.publish_task(self._queue, retry)
        await delivery.ack()

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        dead_letter_queue = self._core.settings.dead_letter_queue
        if dead_letter_queue is None:
            await delivery.reject(requeue=False)
            return
        headers = {REASON_HEADER: reason[:1000], ORIGIN_HEADER: self._queue}
        await self._core.transport.declare_task_queue(dead_letter_queue)
        await self._core.transport.publish_task(
            dead_letter_queue, _with_headers(delivery.message, headers)
        )
        await delivery.ack()


def _with_headers(message: Message, extra: dict[str, Any]) -> Message:
    return Message(
        message.body,
        message.content_type,
        message.correlation_id,
        message.reply_to,
        headers={**message.headers, **extra},
        persistent=True,
    )
