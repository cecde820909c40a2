"""kiwipy 0.9's asyncio communicator (``kiwipy.rmq.RmqCommunicator``, ``async_connect``).

:class:`RmqCommunicator` is :class:`kiwipy.aio.AsyncCommunicator` with kiwipy 0.9's constructor
arguments and extra methods. kiwipy 0.9 built it on an aio-pika connection; kiwipy now owns its
connection, so the constructor takes a URL (or a :class:`~kiwipy.settings.Settings`) instead.
This module also turns kiwipy 0.9's keyword arguments into :class:`~kiwipy.settings.Settings`
for the blocking :class:`~kiwipy.rmq.threadcomms.RmqThreadCommunicator`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kiwipy.aio._communicator import AsyncCommunicator
from kiwipy.exceptions import CommunicatorClosed
from kiwipy.rmq import defaults
from kiwipy.rmq._arguments import ConnectionParams, settings_from_call
from kiwipy.rmq.tasks import RmqTaskQueue
from kiwipy.settings import Settings

__all__ = ("RmqCommunicator", "async_connect")

_LOGGER = logging.getLogger(__name__)
_NOT_CONNECTED = (
    "The communicator is not connected, call connect() or use in a context to establish a "
    "connection."
)


class RmqCommunicator(AsyncCommunicator):
    """The asyncio communicator with kiwipy 0.9's API; every operation is a coroutine.

    Unlike kiwipy 0.9, ``connection`` is a broker URL (``amqp://``, ``amqps://``,
    ``memory://NAME``) or a :class:`~kiwipy.settings.Settings` (then used as it is, and the
    other arguments are ignored), not an aio-pika connection: kiwipy opens and owns its
    connection. Nothing is sent to the broker before :meth:`connect` (or ``async with``).
    Subscribers receive this communicator as their first argument (kiwipy 0.9 passed an
    internal object).
    """

    def __init__(
        self,
        connection: str | Settings,
        message_exchange: str = defaults.MESSAGE_EXCHANGE,
        queue_expires: int = defaults.QUEUE_EXPIRES,
        task_exchange: str = defaults.TASK_EXCHANGE,
        task_queue: str = defaults.TASK_QUEUE,
        task_prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        task_prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
        encoder: Callable[[Any], bytes] = defaults.ENCODER,
        decoder: Callable[[bytes], Any] = defaults.DECODER,
        testing_mode: bool = False,
    ) -> None:
        if not isinstance(connection, Settings | str):
            raise TypeError(
                "RmqCommunicator takes a broker URL or kiwipy Settings, not a connection "
                f"object ({type(connection).__name__}); kiwipy opens its own connection"
            )
        super().__init__(settings_from_call(locals()))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._default_queue_wrapper: RmqTaskQueue | None = None

    async def __aenter__(self) -> RmqCommunicator:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    def __str__(self) -> str:
        return f"RMQCommunicator({self.settings.masked_url})"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this communicator was connected on."""
        if self._loop is None:
            raise RuntimeError(_NOT_CONNECTED)
        return self._loop

    def connected(self) -> bool:
        return self._connected and not self.is_closed() and not self.transport.is_closed

    async def connect(self) -> None:
        """Connect if not connected yet. A disconnected communicator cannot connect again
        (:class:`~kiwipy.exceptions.CommunicatorClosed`)."""
        if self.is_closed():
            raise CommunicatorClosed("The communicator was disconnected; make a new one")
        if self._connected:
            return
        await super().connect()
        self._loop = asyncio.get_running_loop()
        self._connected = True

    async def disconnect(self) -> None:
        """Close the connection and everything on it (idempotent)."""
        await self.close()

    def _ensure_connected(self) -> None:
        if not self.connected():
            raise RuntimeError(_NOT_CONNECTED)

    async def get_default_task_queue(self) -> RmqTaskQueue:
        self._ensure_connected()
        if self._default_queue_wrapper is None:
            self._default_queue_wrapper = RmqTaskQueue(self.default_task_queue)
        return self._default_queue_wrapper

    async def get_message_subscriber(self) -> RmqSubscriber:
        self._ensure_connected()
        return RmqSubscriber(self)

    async def get_message_publisher(self) -> RmqPublisher:
        self._ensure_connected()
        return RmqPublisher(self)

    async def task_queue(  # type: ignore[override]
        self,
        queue_name: str,
        prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
    ) -> RmqTaskQueue:
        """The task queue ``queue_name``. ``prefetch_count=0`` means the communicator's default
        (a finite number); ``prefetch_size`` is accepted and ignored, as RabbitMQ does."""
        self._ensure_connected()
        queue = await super().task_queue(queue_name, prefetch_size, prefetch_count or None)
        return RmqTaskQueue(queue)


class RmqSubscriber:
    """kiwipy 0.9 name kept for imports: the receiving side of an :class:`RmqCommunicator`."""

    def __init__(self, communicator: RmqCommunicator) -> None:
        self._communicator = communicator

    async def add_rpc_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return await self._communicator.add_rpc_subscriber(subscriber, identifier)

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        await self._communicator.remove_rpc_subscriber(identifier)

    async def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        return await self._communicator.add_broadcast_subscriber(subscriber, identifier)

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        await self._communicator.remove_broadcast_subscriber(identifier)


class RmqPublisher:
    """kiwipy 0.9 name kept for imports: the sending side of an :class:`RmqCommunicator`."""

    def __init__(self, communicator: RmqCommunicator) -> None:
        self._communicator = communicator

    async def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        return await self._communicator.rpc_send(recipient_id, msg)

    async def broadcast_send(
        self, msg: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        return await self._communicator.broadcast_send(msg, sender, subject, correlation_id)


async def async_connect(
    connection_params: ConnectionParams = None,
    connection_factory: Callable[..., Any] = defaults.CONNECTION_FACTORY,
    message_exchange: str = defaults.MESSAGE_EXCHANGE,
    queue_expires: int = defaults.QUEUE_EXPIRES,
    task_exchange: str = defaults.TASK_EXCHANGE,
    task_queue: str = defaults.TASK_QUEUE,
    task_prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
    task_prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
    encoder: Callable[[Any], bytes] = defaults.ENCODER,
    decoder: Callable[[bytes], Any] = defaults.DECODER,
    testing_mode: bool = False,
) -> RmqCommunicator:
    """Return a connected :class:`RmqCommunicator` (see :func:`settings_from_call`)."""
    communicator = RmqCommunicator(settings_from_call(locals()))
    try:
        await communicator.connect()
    except BaseException:
        await communicator.close()
        raise
    return communicator
