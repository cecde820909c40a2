"""The asyncio communicator: tasks, RPC and broadcasts over one transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any

from kiwipy import messages
from kiwipy.aio._broadcasts import Broadcasts, BroadcastSubscriber
from kiwipy.aio._core import Core
from kiwipy.aio._futures import Invoker, call_subscriber, outcome, weak_callback
from kiwipy.aio._rpc import Rpc, RpcSubscriber
from kiwipy.aio._tasks import AsyncTaskQueue
from kiwipy.exceptions import (
    CommunicatorClosed,
    ConnectionLost,
    ReplyLost,
)
from kiwipy.settings import Settings, resolve_url
from kiwipy.transports import create_transport
from kiwipy.transports.base import Transport

__all__ = ("AsyncCommunicator", "connect")

_LOGGER = logging.getLogger(__name__)

ConnectionCallback = Callable[["AsyncCommunicator", bool, BaseException | None], Any]
#: How long a graceful close waits for tasks that are being answered and acknowledged.
_SETTLE_ON_CLOSE_S = 5.0


def connect(url: str | None = None, **options: Any) -> Connecting:
    """Connect to the broker at ``url`` (``local://``, ``amqp://``, ``amqps://``, ``memory://``).

    With no ``url``: ``$KIWIPY_URL``, else ``local://`` (the local broker, started if need be).

    ``options`` are the fields of :class:`kiwipy.settings.Settings` (``heartbeat``,
    ``task_prefetch_count``, ``testing_mode``, ...).

    Await the result for the communicator (``comm = await connect(url)``), or use it as an
    async context manager, which closes the communicator at the end
    (``async with connect(url) as comm:``).
    """
    return Connecting(url, options)


async def _connect(url: str | None, options: dict[str, Any]) -> AsyncCommunicator:
    communicator = AsyncCommunicator(Settings.from_url(resolve_url(url), **options))
    await communicator.connect()
    return communicator


class Connecting(Awaitable["AsyncCommunicator"]):
    """What :func:`connect` returns: awaitable (the communicator) and an async context manager
    (the communicator, closed on exit). The connection starts when it is awaited or entered."""

    def __init__(self, url: str | None, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._communicator: AsyncCommunicator | None = None

    def __await__(self) -> Generator[Any, None, AsyncCommunicator]:
        return _connect(self._url, self._options).__await__()

    async def __aenter__(self) -> AsyncCommunicator:
        if self._communicator is not None:
            raise RuntimeError("This connect() is entered already; call connect() again")
        self._communicator = await _connect(self._url, self._options)
        return self._communicator

    async def __aexit__(self, *exc_info: object) -> None:
        communicator, self._communicator = self._communicator, None
        if communicator is not None:
            await communicator.close()


class AsyncCommunicator:
    """Tasks, RPC and broadcasts for asyncio code. Every operation is a coroutine.

    Subscribers may be plain functions or coroutine functions; they receive this communicator
    (or the blocking facade that wraps it) as their first argument.
    """

    def __init__(
        self,
        settings: Settings,
        transport: Transport | None = None,
        *,
        invoke: Invoker = call_subscriber,
        subscriber_target: Callable[[], Any] | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport or create_transport(settings)
        target = subscriber_target or (lambda: self)
        self._core = Core(settings, self._transport, invoke, target)
        self._default_queue = AsyncTaskQueue(
            self._core, settings.task_queue, settings.task_prefetch_count
        )
        self._task_queues: dict[tuple[str, int], AsyncTaskQueue] = {}
        self._rpc = Rpc(self._core)
        self._broadcasts = Broadcasts(self._core)
        self._close_callbacks: list[Callable[[AsyncCommunicator, BaseException | None], Any]] = []
        self._connection_callbacks: list[ConnectionCallback] = []
        self._transport.add_close_callback(self._on_transport_closed)
        self._transport.add_link_callback(self._on_link_changed)

    def __repr__(self) -> str:
        state = "closed" if self.is_closed() else "open"
        return f"AsyncCommunicator({self._settings.masked_url!r}, {state})"

    async def __aenter__(self) -> AsyncCommunicator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def server_properties(self) -> dict[str, Any]:
        return self._transport.server_properties

    @property
    def transport(self) -> Transport:
        return self._transport

    async def connect(self) -> None:
        await self._transport.connect()

    def is_closed(self) -> bool:
        return self._core.closed

    def add_close_callback(
        self, callback: Callable[[AsyncCommunicator, BaseException | None], Any], weak: bool = False
    ) -> None:
        """Call ``callback(communicator, exc)`` when the communicator closes or its link dies.

        With ``weak``, the callback is held by a weak reference and dropped once nothing else
        keeps it alive.
        """
        self._close_callbacks.append(weak_callback(callback) if weak else callback)

    async def close(self) -> None:
        """Close; idempotent. Unfinished tasks go back to their queues for other workers."""
        if self._core.closed:
            return
        self._core.closed = True
        self._core.replies.fail_all(CommunicatorClosed("The communicator was closed"))
        await self._core.wait_settling(_SETTLE_ON_CLOSE_S)
        await self._core.cancel_tasks()
        await self._transport.close()

    def add_listener(self, listener: Any) -> None:
        """Give the events of this communicator to ``listener`` (see :mod:`kiwipy.observe`)."""
        self._core.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        """Stop giving events to ``listener``; no error if it was not listening."""
        self._core.remove_listener(listener)

    def add_connection_callback(self, callback: ConnectionCallback) -> None:
        """Call ``callback(communicator, connected, exc)`` when the link to the broker is lost
        (``connected`` false, with the reason) or restored after a reconnection (true)."""
        self._connection_callbacks.append(callback)

    def _on_link_changed(self, connected: bool, exc: BaseException | None) -> None:
        if (hooks := self._core.hooks) is not None:
            hooks.emit(*(("connection_restored",) if connected else ("connection_lost", exc)))
        if not connected:
            # The reply queue died with the connection: replies in flight cannot arrive.
            self._core.replies.fail_all(
                ReplyLost(f"The connection to the broker was lost before the reply came: {exc}")
            )
        for callback in list(self._connection_callbacks):
            try:
                callback(self, connected, exc)
            except Exception:
                _LOGGER.exception("Connection callback failed")

    def _on_transport_closed(self, exc: BaseException | None) -> None:
        if exc is not None and (hooks := self._core.hooks) is not None:
            hooks.emit("connection_lost", exc)
        if exc is not None:
            lost = ConnectionLost(f"Lost the connection to {self._settings.masked_url}: {exc}")
            self._core.replies.fail_all(lost)
        for callback in self._close_callbacks:
            try:
                callback(self, exc)
            except Exception:
                _LOGGER.exception("Close callback failed")

    # -- tasks ---------------------------------------------------------------------------------

    @property
    def default_task_queue(self) -> AsyncTaskQueue:
        return self._default_queue

    async def task_queue(
        self, queue_name: str, prefetch_size: int = 0, prefetch_count: int | None = None
    ) -> AsyncTaskQueue:
        """The task queue ``queue_name`` (created on the broker on first use).

        ``prefetch_count`` (default ``settings.task_prefetch_count``) bounds how many of its
        tasks this communicator holds unfinished; ``prefetch_size`` is accepted for kiwipy 0.9
        compatibility and ignored, as RabbitMQ does not implement it.
        """
        self._core.ensure_open()
        count = self._settings.task_prefetch_count if prefetch_count is None else prefetch_count
        key = (queue_name, count)
        if key not in self._task_queues:
            self._task_queues[key] = AsyncTaskQueue(self._core, queue_name, count)
        return self._task_queues[key]

    async def task_send(
        self,
        task: Any,
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any] | None:
        """Send a task to the default queue; see :meth:`AsyncTaskQueue.task_send`."""
        return await self._default_queue.task_send(
            task, no_reply, deadline=deadline, timeout=timeout
        )

    async def task_call(
        self, task: Any, *, deadline: float | None = None, timeout: float | None = None
    ) -> Any:
        """Send a task to the default queue and return its result; see
        :meth:`AsyncTaskQueue.task_call`."""
        return await self._default_queue.task_call(task, deadline=deadline, timeout=timeout)

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> list[asyncio.Future[Any] | None]:
        """Send many tasks to the default queue, confirms in flight together."""
        return await self._default_queue.task_send_many(
            tasks, no_reply, deadline=deadline, timeout=timeout
        )

    async def add_task_subscriber(
        self, subscriber: Callable[[Any, Any], Any], identifier: Any = None
    ) -> Any:
        return await self._default_queue.add_task_subscriber(subscriber, identifier)

    async def remove_task_subscriber(self, identifier: Any) -> None:
        await self._default_queue.remove_task_subscriber(identifier)

    # -- rpc -----------------------------------------------------------------------------------

    async def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """Answer RPCs sent to ``identifier``; it must be free on the whole broker."""
        return await self._rpc.add_subscriber(subscriber, identifier)

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        await self._rpc.remove_subscriber(identifier)

    async def rpc_send(
        self,
        recipient_id: Any,
        msg: Any,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Send ``msg`` to the RPC subscriber ``recipient_id``; return the future of its answer.

        ``UnroutableError`` is raised here at once when nobody owns ``recipient_id``.
        ``deadline`` bounds the wait for the answer in seconds (default
        ``settings.rpc_timeout``); ``timeout`` bounds the send itself.
        """
        return await self._rpc.send(recipient_id, msg, deadline=deadline, timeout=timeout)

    async def rpc_call(
        self,
        recipient_id: Any,
        msg: Any,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send an RPC and return its answer (``answer = await comm.rpc_call(42, "status")``).

        The one-await form of ``await (await comm.rpc_send(...))``: the remote exception is
        raised here, :class:`~kiwipy.exceptions.UnroutableError` at once when nobody owns
        ``recipient_id``, :class:`~kiwipy.exceptions.DeadlineExceeded` when ``deadline`` passes.
        """
        future = await self.rpc_send(recipient_id, msg, deadline=deadline, timeout=timeout)
        return await outcome(future)

    # -- broadcasts ----------------------------------------------------------------------------

    async def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        """Receive broadcasts as ``subscriber(comm, body, sender, subject, correlation_id)``."""
        return await self._broadcasts.add_subscriber(subscriber, identifier)

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        await self._broadcasts.remove_subscriber(identifier)

    async def broadcast_send(
        self,
        body: Any,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
        *,
        timeout: float | None = None,
    ) -> bool:
        """Send a broadcast to every subscriber (none is fine); ``True`` once the broker has it."""
        envelope = messages.BroadcastEnvelope(body, sender, subject, correlation_id)
        return await self._broadcasts.send(envelope, timeout)
