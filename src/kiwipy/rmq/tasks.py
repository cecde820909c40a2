"""kiwipy 0.9's asyncio task queue names (``kiwipy.rmq.tasks``), over :mod:`kiwipy.aio._tasks`.

:class:`RmqTaskQueue` wraps a :class:`kiwipy.aio.AsyncTaskQueue`; ``RmqIncomingTask`` *is*
:class:`kiwipy.aio.IncomingTask` (``body``, ``no_reply``, ``state``, ``process()``,
``requeue()``, ``processing()``). kiwipy 0.9 split a queue into a publisher and a subscriber
object; one queue object now does both, and :class:`RmqTaskPublisher` and
:class:`RmqTaskSubscriber` remain only so that imports of those names keep working.

Differences from kiwipy 0.9: ``next_task(no_ack=True)`` is refused (in 0.9 it made
``process()`` fail on ack); a task every subscriber rejects is requeued after a short pause,
not in a hot loop; a cancelled outcome finishes the task with a ``cancelled`` reply instead of
leaking the delivery; ``connect()`` is a no-op because queues are declared on first use;
built from an aio-pika connection (as kiwipy 0.9's tests do), a queue object reads the
connection's URL and opens a communicator of its own on ``connect()``, closed by
``disconnect()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from kiwipy.aio._communicator import AsyncCommunicator
from kiwipy.aio._tasks import AsyncTaskQueue, IncomingTask, TaskState
from kiwipy.rmq import defaults
from kiwipy.rmq._arguments import settings_from_arguments
from kiwipy.settings import Settings

__all__ = ("RmqTaskSubscriber", "RmqTaskPublisher", "RmqTaskQueue", "RmqIncomingTask")  # noqa: RUF022

TASK_PENDING = TaskState.PENDING
TASK_FINISHED = TaskState.FINISHED
TASK_PROCESSING = TaskState.PROCESSING
TASK_REQUEUED = TaskState.REQUEUED

RmqIncomingTask = IncomingTask


class RmqTaskQueue:
    """A task queue for asyncio code with kiwipy 0.9's methods.

    Get one from :meth:`RmqCommunicator.task_queue` or
    :meth:`RmqCommunicator.get_default_task_queue`; it wraps the queue object of the asyncio
    communicator (:attr:`asyncio_queue`).
    """

    #: kiwipy 0.9's publisher did not declare the queue it sent to.
    _declares_on_send = True

    def __init__(
        self,
        queue: AsyncTaskQueue | Any,
        exchange_name: str = defaults.MESSAGE_EXCHANGE,
        queue_name: str = defaults.TASK_QUEUE,
        decoder: Any = defaults.DECODER,
        encoder: Any = defaults.ENCODER,
        exchange_params: Any = None,
        prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
        testing_mode: bool = False,
    ) -> None:
        self._owned: AsyncCommunicator | None = None
        self._settings: Settings | None = None
        if isinstance(queue, AsyncTaskQueue):
            self._wrapped: AsyncTaskQueue | None = queue
            return
        # kiwipy 0.9: RmqTaskQueue(connection, exchange_name=..., queue_name=..., ...)
        url = getattr(queue, "url", None)
        if url is None:
            raise TypeError(
                f"{type(self).__name__} takes a queue from RmqCommunicator.task_queue(name), "
                "or an aio-pika connection (whose URL it connects to)"
            )
        self._wrapped = None
        self._settings = settings_from_arguments(
            str(url),
            message_exchange=exchange_name,
            task_exchange=exchange_name,
            task_queue=queue_name,
            task_prefetch_count=prefetch_count,
            encoder=encoder,
            decoder=decoder,
            testing_mode=testing_mode,
        )

    @property
    def _queue(self) -> AsyncTaskQueue:
        if self._wrapped is None:
            raise RuntimeError(f"{type(self).__name__} is not connected: await connect() first")
        return self._wrapped

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._queue.name!r})"

    @property
    def name(self) -> str:
        return self._queue.name

    @property
    def asyncio_queue(self) -> AsyncTaskQueue:
        return self._queue

    def __aiter__(self) -> AsyncIterator[IncomingTask]:
        """Every task now in the queue; those left pending are requeued when iteration ends."""
        return self._queue.__aiter__()

    async def task_send(self, task: Any, no_reply: bool = False) -> Any:
        """Send a task; return the future of its outcome (``None`` with ``no_reply=True``)."""
        if not self._declares_on_send:
            self._queue._declared = True  # send to the queue only if it exists (unroutable else)
        return await self._queue.task_send(task, no_reply)

    async def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return await self._queue.add_task_subscriber(subscriber, identifier)

    async def remove_task_subscriber(self, identifier: Any) -> None:
        await self._queue.remove_task_subscriber(identifier)

    @contextlib.asynccontextmanager
    async def next_task(
        self,
        no_ack: bool = False,
        fail: bool = True,
        timeout: float = defaults.TASK_FETCH_TIMEOUT,
    ) -> AsyncIterator[IncomingTask | None]:
        """Take the next task (``kiwipy.QueueEmpty`` if none comes within ``timeout`` s and
        ``fail``, else ``None``); a task still pending when the block ends is requeued."""
        if no_ack:
            raise ValueError("next_task(no_ack=True) is not supported: a task is acked when done")
        async with self._queue.next_task(timeout=timeout, fail=fail) as task:
            yield task

    async def connect(self) -> None:
        """Open the queue's own communicator if it was built from a connection; the queue
        itself is declared on the broker when first used."""
        if self._settings is not None and self._owned is None:
            self._owned = AsyncCommunicator(self._settings)
            await self._owned.connect()
            self._wrapped = self._owned.default_task_queue

    async def disconnect(self) -> None:
        """Stop consuming: every task subscriber of this queue is removed (and the queue's own
        communicator, if it has one, is closed)."""
        if self._wrapped is not None:
            await self._wrapped.close()
        if self._owned is not None:
            await self._owned.close()


class RmqTaskSubscriber(RmqTaskQueue):
    """kiwipy 0.9 name kept for imports; a queue object now both sends and receives."""

    TASK_QUEUE_ARGUMENTS = {"x-message-ttl": defaults.TASK_MESSAGE_TTL}  # noqa: RUF012


class RmqTaskPublisher(RmqTaskQueue):
    """kiwipy 0.9 name kept for imports; a queue object now both sends and receives.

    Like kiwipy 0.9's publisher, it does not declare the queue it sends to: with no queue
    bound, ``task_send`` raises ``UnroutableError`` (with RabbitMQ also aio-pika's
    ``DeliveryError``).
    """

    _declares_on_send = False
