"""kiwipy 0.9's blocking communicator (``RmqThreadCommunicator``), what ``kiwipy.connect`` returns.

It is :class:`kiwipy.sync.Communicator` with kiwipy 0.9's constructor and a few extra methods,
so it keeps that class's guarantees, which fix kiwipy 0.9 bugs: a timed-out call is cancelled
(never "maybe sent"); subscribers run on a callback thread, never on the I/O loop, so a slow
one cannot starve heartbeats and one may call the communicator without deadlocking; ``async
def`` RPC and task subscribers work; and subscribers receive this communicator (0.9 passed an
internal object).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiwipy.rmq import defaults
from kiwipy.rmq._arguments import ConnectionParams, settings_from_call
from kiwipy.settings import Settings
from kiwipy.sync._communicator import Communicator
from kiwipy.sync._tasks import BlockingIncomingTask, TaskQueue

__all__ = ("RmqThreadCommunicator", "RmqThreadTaskQueue", "connect")

RmqThreadIncomingTask = BlockingIncomingTask

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]


class RmqThreadTaskQueue(TaskQueue):
    """A named task queue for blocking code (returned by
    :meth:`RmqThreadCommunicator.task_queue`): ``task_send``, ``add_task_subscriber`` (with an
    optional identifier), ``remove_task_subscriber(identifier)``, ``next_task()`` and iteration
    over the tasks waiting in it."""


class RmqThreadCommunicator(Communicator):
    """The blocking communicator: an event loop on a thread does the I/O.

    Arguments are kiwipy 0.9's (see :func:`kiwipy.rmq._arguments.settings_from_arguments`
    for how they map onto :class:`~kiwipy.settings.Settings`): ``connection_params`` is a URL,
    a dict of aio-pika ``connect`` keywords (``url``, ``heartbeat``, ...) or ``None`` (the local
    default broker); ``connection_factory`` is ignored (kiwipy opens its own connection; a custom
    one draws a warning); ``task_prefetch_count=0`` means kiwipy's finite default, not
    "unlimited" (which let one worker hoard every task); ``async_task_timeout`` bounds each
    blocking call in seconds, and a call that times out is cancelled.
    """

    TASK_TIMEOUT = 5.0
    _task_queue_type = RmqThreadTaskQueue

    @classmethod
    def connect(
        cls,
        connection_params: ConnectionParams | Settings = None,
        connection_factory: Callable[..., Any] = defaults.CONNECTION_FACTORY,
        message_exchange: str = defaults.MESSAGE_EXCHANGE,
        task_exchange: str = defaults.TASK_EXCHANGE,
        task_queue: str = defaults.TASK_QUEUE,
        task_prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        task_prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
        encoder: Encoder = defaults.ENCODER,
        decoder: Decoder = defaults.DECODER,
        testing_mode: bool = False,
        async_task_timeout: float = TASK_TIMEOUT,
        *,
        queue_expires: int = defaults.QUEUE_EXPIRES,
    ) -> RmqThreadCommunicator:
        """A connected communicator (the same as calling the class)."""
        return cls(settings_from_call(locals()))

    def __init__(
        self,
        connection_params: ConnectionParams | Settings = None,
        connection_factory: Callable[..., Any] = defaults.CONNECTION_FACTORY,
        message_exchange: str = defaults.MESSAGE_EXCHANGE,
        queue_expires: int = defaults.QUEUE_EXPIRES,
        task_exchange: str = defaults.TASK_EXCHANGE,
        task_queue: str = defaults.TASK_QUEUE,
        task_prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        task_prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
        encoder: Encoder = defaults.ENCODER,
        decoder: Decoder = defaults.DECODER,
        testing_mode: bool = False,
        async_task_timeout: float = TASK_TIMEOUT,
    ) -> None:
        super().__init__(settings_from_call(locals()))

    def __enter__(self) -> RmqThreadCommunicator:
        return self

    @property
    def server_properties(self) -> dict[str, Any]:
        """What the broker said about itself on connect (``product``, ``version``, ...);
        ``{}`` once closed."""
        return {} if self.is_closed() else super().server_properties

    def task_queue(
        self,
        queue_name: str,
        prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
        prefetch_count: int | None = defaults.TASK_PREFETCH_COUNT,
        *,
        timeout: float | None = None,
    ) -> RmqThreadTaskQueue:
        """The task queue ``queue_name``. ``prefetch_count=0`` means the communicator's default
        (a finite number); ``prefetch_size`` is accepted and ignored, as RabbitMQ does."""
        queue = super().task_queue(
            queue_name, prefetch_size, prefetch_count or None, timeout=timeout
        )
        assert isinstance(queue, RmqThreadTaskQueue)
        return queue


def connect(
    connection_params: ConnectionParams | Settings = None,
    connection_factory: Callable[..., Any] = defaults.CONNECTION_FACTORY,
    message_exchange: str = defaults.MESSAGE_EXCHANGE,
    task_exchange: str = defaults.TASK_EXCHANGE,
    task_queue: str = defaults.TASK_QUEUE,
    task_prefetch_size: int = defaults.TASK_PREFETCH_SIZE,
    task_prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
    encoder: Encoder = defaults.ENCODER,
    decoder: Decoder = defaults.DECODER,
    testing_mode: bool = False,
    *,
    queue_expires: int = defaults.QUEUE_EXPIRES,
    async_task_timeout: float = RmqThreadCommunicator.TASK_TIMEOUT,
) -> RmqThreadCommunicator:
    """Connect a blocking :class:`RmqThreadCommunicator` (kiwipy 0.9's arguments; the
    keyword-only ``queue_expires`` and ``async_task_timeout`` are new here)."""
    return RmqThreadCommunicator(settings_from_call(locals()))
