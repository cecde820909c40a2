"""The RabbitMQ transport, on aiormq (only this module and its ``_amqp_*`` helpers import it).

The wire topology matches kiwipy 0.9 (see ``KIWIPY-0.9-API.md`` sections 1.10 and 4), so old and
new peers share a broker. Channels:

* *control*: declares, binds, unbinds and deletes, one sequence at a time. A refused declare
  (``RESOURCE_LOCKED``, ``PRECONDITION_FAILED``) closes this channel; it is reopened on next use,
  and nothing else lives on it.
* *publisher*: every publish, in publisher-confirm mode. aiormq holds its channel lock only while
  writing the frames and awaits the confirm outside it, so concurrent publishes pipeline.
* *listener*: the no-ack consumers (RPC endpoints, broadcast subscriptions, the reply queue).
* *getter*: ``basic.get`` for :meth:`AmqpTransport.get_task`.
* one channel per task consumer, with its own prefetch limit. Its deliveries settle on it only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiormq

from kiwipy.exceptions import (
    CommunicatorClosed,
    DuplicateSubscriberIdentifier,
    InvalidStateError,
    UnroutableError,
)
from kiwipy.settings import MESSAGE_TTL_MS, QUEUE_EXPIRES_MS, TESTING_QUEUE_EXPIRES_MS, Settings
from kiwipy.transports._amqp_consumers import AmqpDelivery, MessageConsumer, TaskConsumer
from kiwipy.transports._amqp_support import (
    AmqpConnectionLost,
    ChannelSlot,
    Lifeline,
    OwnedTasks,
    amqp_errors,
    plain,
    to_properties,
    url_with_heartbeat,
)
from kiwipy.transports.base import (
    CloseCallback,
    Delivery,
    DeliveryHandler,
    Message,
    MessageHandler,
    Subscription,
    Transport,
)

__all__ = ("AmqpTransport",)

_LOGGER = logging.getLogger(__name__)

RPC_TOPIC = "[rpc]"
BROADCAST_TOPIC = "[broadcast]"
REPLY_QUEUE_EXPIRES_MS = QUEUE_EXPIRES_MS
MAX_IDENTIFIER_BYTES = 200
PERSISTENT = 2
TRANSIENT = 1
_CLOSE_TIMEOUT = 1.0

Bindings = list[tuple[str, str]]


def _check_rpc_identifier(identifier: str) -> None:
    if "*" in identifier or "#" in identifier:
        raise ValueError(f"RPC identifier {identifier!r} must not contain '*' or '#'")
    if len(identifier.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"RPC identifier is longer than {MAX_IDENTIFIER_BYTES} bytes")


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from ``text`` (an error message), just in case."""
    password = urllib.parse.urlsplit(url).password
    return text.replace(password, "****") if password else text


class AmqpTransport(Transport):
    """A :class:`~kiwipy.transports.base.Transport` over one RabbitMQ connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: Any = None
        self._closed = False
        self._close_callbacks: list[CloseCallback] | None = []  # None once they were called
        self._close_reason: BaseException | None = None
        self._tasks = OwnedTasks()
        self._lifeline = Lifeline(self._tasks, f"The connection to {settings.masked_url} is gone")
        self._control_lock = asyncio.Lock()
        self._control = ChannelSlot(lambda: self._open_channel(publisher_confirms=False))
        self._publisher = ChannelSlot(
            lambda: self._open_channel(publisher_confirms=True, on_return_raises=True)
        )
        self._listener = ChannelSlot(lambda: self._open_channel(publisher_confirms=False))
        self._getter = ChannelSlot(lambda: self._open_channel(publisher_confirms=False))
        self._exchanges: set[str] = set()
        self._task_queues: set[str] = set()
        self._rpc_identifiers: set[str] = set()
        self._reply_queue: str | None = None

    def __repr__(self) -> str:
        return f"AmqpTransport({self._settings.masked_url!r})"

    # -- connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._connection is not None or self._closed:
            raise InvalidStateError("AmqpTransport.connect() may be called only once")
        settings = self._settings
        url = url_with_heartbeat(settings.url, settings.heartbeat)
        try:
            connection = await asyncio.wait_for(_dial(url), settings.connection_timeout)
        except asyncio.TimeoutError as exc:
            message = (
                f"No connection to {settings.masked_url} within {settings.connection_timeout}s"
            )
            raise AmqpConnectionLost(message) from exc
        except Exception as exc:
            reason = _scrub(f"{type(exc).__name__}: {exc}", settings.url)
            raise AmqpConnectionLost(f"Cannot connect to {settings.masked_url}: {reason}") from exc
        self._connection = connection
        self._lifeline.start()
        connection.closing.add_done_callback(self._on_connection_closed)
        _LOGGER.debug("Connected to %s", settings.masked_url)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._lifeline.cut()
        connection = self._connection
        if connection is not None and not connection.is_closed:
            reason = AmqpConnectionLost(f"The transport to {self._settings.masked_url} was closed")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(reason), _CLOSE_TIMEOUT)
        self._publisher.observe_confirmations()
        await self._tasks.close()
        self._fire_close_callbacks(None)

    @property
    def is_closed(self) -> bool:
        connection = self._connection
        return self._closed or (connection is not None and bool(connection.is_closed))

    @property
    def server_properties(self) -> dict[str, Any]:
        if self._connection is None:
            return {}
        return dict(plain(self._connection.server_properties or {}))

    def add_close_callback(self, callback: CloseCallback) -> None:
        if self._close_callbacks is None:  # closed already: call it at once
            _call_back(callback, self._close_reason)
        else:
            self._close_callbacks.append(callback)

    def _on_connection_closed(self, future: asyncio.Future[Any]) -> None:
        self._lifeline.cut()
        self._publisher.observe_confirmations()
        if self._closed:
            return
        reason = None if future.cancelled() else future.exception()
        _LOGGER.warning("Lost the connection to %s: %r", self._settings.masked_url, reason)
        lost = AmqpConnectionLost(f"Lost the connection to {self._settings.masked_url}: {reason!r}")
        lost.__cause__ = reason
        self._fire_close_callbacks(lost)

    def _fire_close_callbacks(self, exc: BaseException | None) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, None
        if callbacks is None:
            return
        self._close_reason = exc
        for callback in callbacks:
            _call_back(callback, exc)

    def _live_connection(self) -> Any:
        if self._closed:
            raise CommunicatorClosed("The AMQP transport is closed")
        if self._connection is None:
            raise InvalidStateError("The AMQP transport is not connected: call connect() first")
        if self._connection.is_closed:
            raise AmqpConnectionLost(f"The connection to {self._settings.masked_url} was lost")
        return self._connection

    async def _open_channel(self, **options: Any) -> Any:
        connection = self._live_connection()
        with amqp_errors("open an AMQP channel"):
            try:
                return await connection.channel(**options)
            except RuntimeError as exc:  # aiormq: "<connection> closed"
                if connection.is_closed:
                    raise AmqpConnectionLost(
                        f"Lost the connection to {self._settings.masked_url}"
                    ) from exc
                raise

    # -- topology ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _control_channel(self, what: str) -> AsyncIterator[Any]:
        """The control channel, for one sequence of operations that may fail on their own."""
        self._live_connection()
        async with self._control_lock:
            with amqp_errors(what):
                yield await self._control.get()

    async def _declare_exchange(self, channel: Any, exchange: str) -> None:
        if exchange in self._exchanges:
            return
        await channel.exchange_declare(
            exchange,
            exchange_type="topic",
            durable=False,
            auto_delete=self._settings.testing_mode,
        )
        self._exchanges.add(exchange)

    async def _ensure_exchange(self, exchange: str) -> None:
        if exchange not in self._exchanges:
            async with self._control_channel(f"declare exchange {exchange!r}") as channel:
                await self._declare_exchange(channel, exchange)

    async def _bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind (control lock held); redeclare the exchange once if it vanished (auto-delete)."""
        for last_try in (False, True):
            channel = await self._control.get()
            await self._declare_exchange(channel, exchange)
            try:
                await channel.queue_bind(queue, exchange, routing_key=routing_key)
                return
            except aiormq.ChannelNotFoundEntity:
                if last_try:
                    raise
                self._exchanges.discard(exchange)

    async def _declare_queue(
        self,
        what: str,
        queue: str,
        bindings: Bindings,
        *,
        locked: str | None = None,
        **declare: Any,
    ) -> None:
        async with self._control_channel(what) as channel:
            try:
                await channel.queue_declare(queue, **declare)
            except aiormq.ChannelLockedResource as exc:
                if locked is None:
                    raise
                raise DuplicateSubscriberIdentifier(locked) from exc
            for exchange, routing_key in bindings:
                await self._bind(queue, exchange, routing_key)

    async def _delete_queue(self, queue: str, unbind: Bindings) -> None:
        if self.is_closed:  # exclusive queues went with the connection
            return
        async with self._control_channel(f"delete queue {queue!r}") as channel:
            for exchange, routing_key in unbind:
                await channel.queue_unbind(queue, exchange, routing_key=routing_key)
            await channel.queue_delete(queue)

    async def _listen(self, queue: str, consumer: MessageConsumer, unbind: Bindings) -> None:
        """Start a no-ack consumer of ``queue``; delete the queue if that fails."""
        try:
            channel = await self._listener.get()
            with amqp_errors(f"consume queue {queue!r}"):
                await consumer.start(channel, queue)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._delete_queue(queue, unbind)
            raise

    # -- tasks ---------------------------------------------------------------------------------

    async def declare_task_queue(self, queue: str) -> None:
        self._live_connection()
        if queue in self._task_queues:
            return
        settings = self._settings
        arguments = {"x-message-ttl": settings.task_message_ttl_ms}
        if settings.testing_mode:
            arguments["x-expires"] = TESTING_QUEUE_EXPIRES_MS
        # Durable even in testing mode: RabbitMQ 4.3 refuses transient non-exclusive queues.
        await self._declare_queue(
            f"declare task queue {queue!r}",
            queue,
            [(settings.task_exchange, queue)],
            durable=True,
            arguments=arguments,
        )
        self._task_queues.add(queue)

    async def publish_task(self, queue: str, message: Message) -> None:
        try:
            await self._publish(
                f"publish a task to queue {queue!r}",
                self._settings.task_exchange,
                queue,
                message,
                mandatory=True,
                delivery_mode=PERSISTENT,
            )
        except UnroutableError:
            self._task_queues.discard(queue)  # it may have expired: declare it again next time
            raise

    async def consume_tasks(
        self, queue: str, handler: DeliveryHandler, *, prefetch_count: int
    ) -> Subscription:
        await self.declare_task_queue(queue)
        channel = await self._open_channel(publisher_confirms=False)
        consumer = TaskConsumer(channel, handler, self._tasks.spawn, self._lifeline.guard)
        try:
            await consumer.start(queue, prefetch_count)
        except BaseException:
            await consumer.close()
            raise
        return consumer

    async def get_task(self, queue: str) -> Delivery | None:
        with amqp_errors(f"get a task from queue {queue!r}"):
            for last_try in (False, True):
                await self.declare_task_queue(queue)
                channel = await self._getter.get()
                try:
                    raw = await channel.basic_get(queue, no_ack=False)
                except aiormq.ChannelNotFoundEntity:
                    if last_try:
                        raise
                    self._task_queues.discard(queue)  # expired (testing mode): declare it again
                    continue
                return (
                    None
                    if raw.delivery_tag is None
                    else AmqpDelivery(raw, channel, self._lifeline.guard)
                )
        raise AssertionError("unreachable")

    # -- publishing ----------------------------------------------------------------------------

    async def _publish(
        self,
        what: str,
        exchange: str,
        routing_key: str,
        message: Message,
        *,
        mandatory: bool,
        delivery_mode: int,
    ) -> None:
        self._live_connection()
        properties = to_properties(message, delivery_mode=delivery_mode)
        with amqp_errors(what):
            for last_try in (False, True):
                if exchange:
                    await self._ensure_exchange(exchange)
                channel = await self._publisher.get()
                try:
                    await self._lifeline.guard(
                        channel.basic_publish(
                            message.body,
                            exchange=exchange,
                            routing_key=routing_key,
                            properties=properties,
                            mandatory=mandatory,
                        )
                    )
                    return
                except aiormq.ChannelNotFoundEntity:
                    if last_try or not exchange:
                        raise
                    self._exchanges.discard(exchange)  # auto-deleted (testing mode)

    # -- rpc -----------------------------------------------------------------------------------

    async def bind_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        _check_rpc_identifier(identifier)
        self._live_connection()
        if identifier in self._rpc_identifiers:
            raise DuplicateSubscriberIdentifier(f"RPC identifier {identifier!r} is already bound")
        self._rpc_identifiers.add(identifier)
        try:
            return await self._start_rpc(identifier, handler)
        except BaseException:
            self._rpc_identifiers.discard(identifier)
            raise

    async def _start_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        settings = self._settings
        # An exclusive queue named after the identifier: one owner broker wide.
        queue = f"{settings.message_exchange}.rpc.{identifier}"
        bindings = [(settings.message_exchange, f"{RPC_TOPIC}.{identifier}")]
        arguments = {"x-message-ttl": MESSAGE_TTL_MS}
        if settings.queue_expires_ms:
            arguments["x-expires"] = settings.queue_expires_ms
        await self._declare_queue(
            f"bind RPC identifier {identifier!r}",
            queue,
            bindings,
            locked=f"RPC identifier {identifier!r} is already bound by another connection",
            exclusive=True,
            arguments=arguments,
        )

        async def teardown(consumer: MessageConsumer) -> None:
            try:
                await consumer.stop_consuming()
                await self._delete_queue(queue, bindings)
            finally:
                self._rpc_identifiers.discard(identifier)

        consumer = MessageConsumer(
            handler, self._tasks.spawn, f"RPC handler for {identifier!r}", teardown
        )
        await self._listen(queue, consumer, bindings)
        return consumer

    async def publish_rpc(self, identifier: str, message: Message) -> None:
        await self._publish(
            f"send an RPC request to {identifier!r}",
            self._settings.message_exchange,
            f"{RPC_TOPIC}.{identifier}",
            message,
            mandatory=True,
            delivery_mode=PERSISTENT if message.persistent else TRANSIENT,
        )

    # -- broadcasts ----------------------------------------------------------------------------

    async def publish_broadcast(self, message: Message) -> None:
        await self._publish(
            "publish a broadcast",
            self._settings.message_exchange,
            BROADCAST_TOPIC,
            message,
            mandatory=False,
            delivery_mode=TRANSIENT,
        )

    async def subscribe_broadcasts(self, handler: MessageHandler) -> Subscription:
        queue = f"broadcast-{uuid.uuid4().hex}"
        bindings = [(self._settings.message_exchange, BROADCAST_TOPIC)]
        await self._declare_queue(
            "subscribe to broadcasts",
            queue,
            bindings,
            exclusive=True,
            arguments={"x-message-ttl": MESSAGE_TTL_MS},
        )

        async def teardown(consumer: MessageConsumer) -> None:
            await consumer.stop_consuming()
            await self._delete_queue(queue, [])

        consumer = MessageConsumer(handler, self._tasks.spawn, "Broadcast handler", teardown)
        await self._listen(queue, consumer, bindings)
        return consumer

    # -- replies -------------------------------------------------------------------------------

    async def open_reply_queue(self, handler: MessageHandler) -> str:
        self._live_connection()
        if self._reply_queue is not None:
            raise InvalidStateError("The reply queue is already open")
        settings = self._settings
        queue = self._reply_queue = f"{settings.message_exchange}-reply-{uuid.uuid4()}"
        # kiwipy 0.9 workers reply through the exchange the request came in on.
        bindings = [(settings.message_exchange, queue), (settings.task_exchange, queue)]
        try:
            await self._declare_queue(
                "open the reply queue",
                queue,
                bindings,
                exclusive=True,
                arguments={"x-expires": REPLY_QUEUE_EXPIRES_MS},
            )
            await self._listen(
                queue, MessageConsumer(handler, self._tasks.spawn, "Reply handler"), bindings
            )
        except BaseException:
            self._reply_queue = None
            raise
        return queue

    async def publish_reply(self, reply_to: str, message: Message) -> None:
        # Through the default exchange: reaches our reply queues and kiwipy 0.9's alike.
        await self._publish(
            f"send a reply to {reply_to!r}",
            "",
            reply_to,
            message,
            mandatory=False,
            delivery_mode=PERSISTENT if message.persistent else TRANSIENT,
        )


def _call_back(callback: CloseCallback, exc: BaseException | None) -> None:
    try:
        callback(exc)
    except Exception:
        _LOGGER.exception("Close callback %r failed", callback)


async def _dial(url: str) -> Any:
    return await aiormq.connect(url)
