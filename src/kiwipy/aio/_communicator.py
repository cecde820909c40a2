"""The asyncio communicator: tasks, RPC and broadcasts over one transport."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from kiwipy import messages
from kiwipy.aio._broadcasts import Broadcasts, BroadcastSubscriber
from kiwipy.aio._core import Core
from kiwipy.aio._futures import Invoker, call_subscriber, follow_pending, is_future, weak_callback
from kiwipy.aio._hooks import Hooks
from kiwipy.aio._tasks import AsyncTaskQueue
from kiwipy.exceptions import (
    CommunicatorClosed,
    ConnectionLost,
    DuplicateSubscriberIdentifier,
    MessageError,
    ReplyLost,
)
from kiwipy.observe import RPC, Incoming, Outgoing
from kiwipy.settings import Settings
from kiwipy.transports import create_transport
from kiwipy.transports.base import Message, Subscription, Transport

__all__ = ("AsyncCommunicator", "connect")

_LOGGER = logging.getLogger(__name__)

RpcSubscriber = Callable[[Any, Any], Any]
ConnectionCallback = Callable[["AsyncCommunicator", bool, BaseException | None], Any]
_Observed = tuple[Hooks, Incoming]
#: How long a graceful close waits for tasks that are being answered and acknowledged.
_SETTLE_ON_CLOSE_S = 5.0


async def connect(url: str | None = None, **options: Any) -> AsyncCommunicator:
    """Connect to the broker at ``url`` (``amqp://``, ``amqps://`` or ``memory://``).

    ``options`` are the fields of :class:`kiwipy.settings.Settings` (``heartbeat``,
    ``task_prefetch_count``, ``testing_mode``, ...).
    """
    communicator = AsyncCommunicator(Settings.from_url(url, **options))
    await communicator.connect()
    return communicator


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
        self._rpc_subscriptions: dict[str, Subscription] = {}
        self._rpc_identifiers: dict[str, Any] = {}
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
        self._core.ensure_open()
        identifier = identifier if identifier is not None else uuid.uuid4().hex
        key = str(identifier)
        if key in self._rpc_subscriptions:
            raise DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}'")

        async def on_request(message: Message) -> None:
            if (hooks := self._core.hooks) is not None:
                await self._on_rpc_observed(hooks, key, subscriber, message)
            else:
                await self._on_rpc(subscriber, message)

        self._rpc_subscriptions[key] = await self._transport.bind_rpc(key, on_request)
        self._rpc_identifiers[key] = identifier
        return identifier

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        subscription = self._rpc_subscriptions.pop(str(identifier), None)
        if subscription is None:
            raise ValueError(f"Unknown subscriber '{identifier}'")
        del self._rpc_identifiers[str(identifier)]
        await subscription.cancel()

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
        self._core.ensure_open()
        args = (str(recipient_id), msg, deadline)
        return await self._core.bounded_send(self._send_rpc, args, timeout, "An RPC send")

    async def _send_rpc(
        self, recipient_id: str, msg: Any, deadline: float | None
    ) -> asyncio.Future[Any]:
        body, content_type = self._core.encode(msg)
        reply_to = await self._core.replies.address()
        if deadline is None:
            deadline = self._settings.rpc_timeout
        correlation_id, future = self._core.replies.register(deadline)
        message = Message(body, content_type, correlation_id, reply_to)
        try:
            if (hooks := self._core.hooks) is not None:
                outgoing = Outgoing(RPC, recipient_id, correlation_id)
                publish = functools.partial(self._transport.publish_rpc, recipient_id)
                await hooks.publish(outgoing, publish, message, future)
            else:
                await self._transport.publish_rpc(recipient_id, message)
        except BaseException:
            self._core.replies.abandon(correlation_id, future)
            raise
        return future

    async def _on_rpc(
        self, subscriber: RpcSubscriber, message: Message, observed: _Observed | None = None
    ) -> None:
        try:
            request = self._core.codec.decode(message.body, message.content_type)
        except MessageError as exc:
            _LOGGER.warning("Rejected an undecodable RPC request: %s", exc)
            await self._core.send_reply(message, messages.exception_reply(exc))
            if observed is not None:
                observed[0].ended(observed[1], exc)
            return
        try:
            result = await self._core.invoke(subscriber, self._core.target, request)
        except Exception as exc:
            await self._core.send_reply(message, _rpc_reply(exc=exc))
            if observed is not None:
                observed[0].ended(observed[1], exc)
            return
        if is_future(result):
            # The answer comes later: wait for it in a task of our own, so that this handler
            # (which a graceful close waits for) ends once the subscriber has been called.
            answer = self._answer_later(message, result, observed)
            self._core.spawn(answer, "Answering an RPC")
        else:
            await self._core.send_reply(message, messages.result_reply(result))
            if observed is not None:
                observed[0].ended(observed[1], None)

    async def _on_rpc_observed(
        self, hooks: Hooks, identifier: str, subscriber: RpcSubscriber, message: Message
    ) -> None:
        incoming = hooks.received(RPC, identifier, message)
        hooks.started(incoming)
        await self._on_rpc(subscriber, message, (hooks, incoming))

    async def _answer_later(
        self, message: Message, future: Any, observed: _Observed | None = None
    ) -> None:
        async def announce_pending() -> None:
            await self._core.announce_pending(message)

        error: BaseException | None = None
        try:
            result = await follow_pending(future, announce_pending)
        except Exception as exc:
            reply = _rpc_reply(exc=exc)
            error = exc
        else:
            reply = messages.result_reply(result)
        await self._core.send_reply(message, reply)
        if observed is not None:
            observed[0].ended(observed[1], error)

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


def _rpc_reply(*, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, concurrent.futures.CancelledError):
        return messages.cancelled_reply("The RPC was cancelled")
    return messages.exception_reply(exc)
