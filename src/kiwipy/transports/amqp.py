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

When the connection dies (heartbeat missed, socket error, broker shut down) the transport stays
open and reconnects with jittered back-off; what waits for the link meanwhile (a publish, a
declare) goes on once it is back, bounded by its caller's deadline. Every consumer then restores
itself: queue, bindings, QoS, consume (see ``_amqp_consumers``). Bad credentials or a refused
virtual host end the transport instead of being retried forever.
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
    BrokerError,
    CommunicatorClosed,
    ConnectionLost,
    DuplicateSubscriberIdentifier,
    InvalidStateError,
    UnroutableError,
)
from kiwipy.settings import MESSAGE_TTL_MS, QUEUE_EXPIRES_MS, TESTING_QUEUE_EXPIRES_MS, Settings
from kiwipy.transports._amqp_consumers import (
    AmqpDelivery,
    ConsumerContext,
    LiveDeliveries,
    MessageConsumer,
    TaskConsumer,
)
from kiwipy.transports._amqp_support import (
    MAX_CONSUMER_TIMEOUT_MS,
    AmqpConnectionLost,
    ChannelSlot,
    ControlChannels,
    Lifeline,
    Once,
    OwnedTasks,
    amqp_errors,
    backoff_delays,
    default_consumer_timeout,
    is_fatal,
    parse_version,
    plain,
    supports_consumer_timeout,
    to_properties,
)
from kiwipy.transports._amqp_tls import DialTarget, dial_target, tls_error
from kiwipy.transports._amqp_wire import WideQueueConnection, dial
from kiwipy.transports.base import (
    CloseCallback,
    Delivery,
    DeliveryHandler,
    LinkCallback,
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
#: Control channels open at most at once: declarations that do not wait for each other.
_CONTROL_CHANNELS = 4
#: How long a graceful close lets RPC and broadcast handlers already running finish.
_DRAIN_TIMEOUT = 5.0

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
        self._lifeline = Lifeline(f"The connection to {settings.masked_url} is gone")
        self._link_up = asyncio.Event()
        self._link_callbacks: list[LinkCallback] = []
        self._reconnecting = False
        self._fatal: BaseException | None = None
        self._warned_consumer_timeout = False
        self._draining = False
        self._getter_live: LiveDeliveries | None = None
        self._server_properties: dict[str, Any] = {}
        self._broker_version: tuple[int, ...] = ()
        self._once = Once()
        self._message_consumers: set[MessageConsumer] = set()
        self._context = ConsumerContext(
            spawn=self._tasks.spawn,
            guard=self._guard,
            open_channel=lambda: self._open_channel(publisher_confirms=False),
            closing=lambda: self._closed or self._draining,
            # The broker frees a dead connection's exclusive queues once it notices the death,
            # at the latest two heartbeats later.
            restore_window_s=3.0 * settings.heartbeat + settings.connection_timeout,
        )
        self._controls = ControlChannels(
            lambda: self._open_channel(publisher_confirms=False), _CONTROL_CHANNELS
        )
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
        # Built once (TLS context, the one "verification is off" warning); reconnects reuse it.
        target = self._dial_target = dial_target(settings)
        try:
            connection = await asyncio.wait_for(_dial(target), settings.connection_timeout)
        except asyncio.TimeoutError as exc:
            message = (
                f"No connection to {settings.masked_url} within {settings.connection_timeout}s"
            )
            raise AmqpConnectionLost(message) from exc
        except Exception as exc:
            what = f"Cannot connect to {settings.masked_url}"
            if settings.scheme == "amqps":
                tls = tls_error(what, exc)
                if tls is not None:  # fail closed, with the cause
                    raise tls from exc
            reason = _scrub(f"{type(exc).__name__}: {exc}", settings.url)
            raise AmqpConnectionLost(f"{what}: {reason}") from exc
        self._install(connection)
        _LOGGER.debug("Connected to %s", settings.masked_url)

    def _install(self, connection: Any) -> None:
        """Make ``connection`` the live one; caches of what the broker has start afresh."""
        self._connection = connection
        self._server_properties = dict(plain(connection.server_properties or {}))
        version = parse_version(str(self._server_properties.get("version", "")))
        self._broker_version = version
        self._lifeline = Lifeline(f"The connection to {self._settings.masked_url} is gone")
        self._lifeline.start()
        self._exchanges.clear()
        self._task_queues.clear()
        connection.closing.add_done_callback(
            lambda future: self._on_connection_closed(connection, future)
        )
        self._link_up.set()
        # Silent: a failure here is met again, and reported, by whoever needs the channel.
        self._tasks.spawn(self._open_channels(), "")

    async def _open_channels(self) -> None:
        """Open the channels nearly every communicator needs, together, in the background.

        One round trip instead of one per channel at first use (a first send needs all three).
        """
        await asyncio.gather(
            self._publisher.get(),
            self._listener.get(),
            self._controls.warm(),
            return_exceptions=True,
        )

    def _guard(self, operation: Any) -> Any:
        return self._lifeline.guard(operation)

    async def close(self) -> None:
        if self._closed:
            return
        await self._drain()
        self._closed = True
        self._link_up.set()  # wake whatever waits for the link: it sees the transport closed
        self._lifeline.cut()
        connection = self._connection
        if connection is not None and not connection.is_closed:
            reason = AmqpConnectionLost(f"The transport to {self._settings.masked_url} was closed")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(reason), _CLOSE_TIMEOUT)
        self._publisher.observe_confirmations()
        await self._tasks.close()
        self._fire_close_callbacks(None)

    async def _drain(self) -> None:
        """Let requests and broadcasts already delivered to us be handled before closing.

        ``basic.cancel`` comes back after every delivery the broker sent before it, so once the
        consumers are cancelled nothing more arrives; handlers then get a moment to finish.
        Unsettled tasks need no such care: the broker gives them to another worker.
        """
        self._draining = True
        consumers = [c for c in self._message_consumers if not c.cancelled]
        if not consumers or not self.is_connected:
            return
        with contextlib.suppress(Exception):
            stops = asyncio.gather(*(c.stop_consuming() for c in consumers))
            await asyncio.wait_for(stops, _CLOSE_TIMEOUT)
        running = set().union(*(c.running for c in consumers)) - {asyncio.current_task()}
        if running:
            await asyncio.wait(running, timeout=_DRAIN_TIMEOUT)

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def is_connected(self) -> bool:
        connection = self._connection
        return not self._closed and connection is not None and not connection.is_closed

    def connection_error(self, message: str) -> ConnectionLost:
        return AmqpConnectionLost(message)

    def add_link_callback(self, callback: LinkCallback) -> None:
        self._link_callbacks.append(callback)

    @property
    def server_properties(self) -> dict[str, Any]:
        return dict(self._server_properties)

    def add_close_callback(self, callback: CloseCallback) -> None:
        if self._close_callbacks is None:  # closed already: call it at once
            _call_back(callback, self._close_reason)
        else:
            self._close_callbacks.append(callback)

    def _on_connection_closed(self, connection: Any, future: asyncio.Future[Any]) -> None:
        if connection is not self._connection:
            return
        self._link_up.clear()
        self._lifeline.cut()
        self._publisher.observe_confirmations()
        if self._closed:
            return
        reason = None if future.cancelled() else future.exception()
        _LOGGER.warning("Lost the connection to %s: %r", self._settings.masked_url, reason)
        lost = AmqpConnectionLost(f"Lost the connection to {self._settings.masked_url}: {reason!r}")
        lost.__cause__ = reason
        for callback in list(self._link_callbacks):
            _call_link_callback(callback, False, lost)
        if not self._reconnecting:
            self._reconnecting = True
            self._tasks.spawn(self._reconnect(), "Reconnecting to the broker")

    async def _reconnect(self) -> None:
        settings = self._settings
        target = self._dial_target  # made by connect()
        try:
            for delay in backoff_delays(first=0.1, longest=settings.reconnect_max_delay):
                await asyncio.sleep(delay)
                try:
                    connection = await asyncio.wait_for(_dial(target), settings.connection_timeout)
                except Exception as exc:
                    if is_fatal(exc):
                        await self._give_up(exc)
                        return
                    reason = _scrub(repr(exc), settings.url)
                    if settings.scheme == "amqps":
                        tls = tls_error("TLS", exc)
                        reason = str(tls) if tls is not None else reason
                    _LOGGER.debug("Reconnecting to %s failed: %s", settings.masked_url, reason)
                    continue
                self._install(connection)
                _LOGGER.info("Reconnected to %s", settings.masked_url)
                for callback in list(self._link_callbacks):
                    _call_link_callback(callback, True, None)
                return
        finally:
            self._reconnecting = False

    async def _give_up(self, exc: BaseException) -> None:
        reason = _scrub(f"{type(exc).__name__}: {exc}", self._settings.url)
        fatal = BrokerError(f"Cannot reconnect to {self._settings.masked_url}: {reason}")
        _LOGGER.error("%s; giving up", fatal)
        self._fatal = fatal
        self._close_reason = fatal
        self._closed = True
        self._link_up.set()
        self._fire_close_callbacks(fatal)

    def _fire_close_callbacks(self, exc: BaseException | None) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, None
        if callbacks is None:
            return
        self._close_reason = exc
        for callback in callbacks:
            _call_back(callback, exc)

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise CommunicatorClosed("The AMQP transport is closed")
        if self._connection is None:
            raise InvalidStateError("The AMQP transport is not connected: call connect() first")

    async def _live_connection(self) -> Any:
        """The live connection, waiting while the transport reconnects."""
        while True:
            self._check_open()
            connection = self._connection
            if self._link_up.is_set() and not connection.is_closed:
                return connection
            if self._link_up.is_set():  # closed, and its callback has not run yet
                await asyncio.sleep(0.01)
            else:
                await self._link_up.wait()

    async def _open_channel(self, **options: Any) -> Any:
        connection = await self._live_connection()
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
    async def _control_channel(self, what: str) -> AsyncIterator[ChannelSlot]:
        """A control channel's slot, for one sequence of operations that may fail on their own.

        ``await slot.get()`` gives the channel (a new one after a failure closed it).
        """
        await self._live_connection()
        async with self._controls.take() as slot:
            with amqp_errors(what):
                await slot.get()
                yield slot

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
            await self._once.run(
                f"exchange {exchange}", lambda: self._declare_exchange_now(exchange)
            )

    async def _declare_exchange_now(self, exchange: str) -> None:
        async with self._control_channel(f"declare exchange {exchange!r}") as slot:
            await self._declare_exchange(await slot.get(), exchange)

    async def _bind(self, slot: ChannelSlot, queue: str, exchange: str, routing_key: str) -> None:
        """Bind on ``slot``'s channel; redeclare the exchange once if it vanished (auto-delete)."""
        for last_try in (False, True):
            channel = await slot.get()
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
        async with self._control_channel(what) as slot:
            try:
                await (await slot.get()).queue_declare(queue, **declare)
            except aiormq.ChannelLockedResource as exc:
                if locked is None:
                    raise
                raise DuplicateSubscriberIdentifier(locked) from exc
            for exchange, routing_key in bindings:
                await self._bind(slot, queue, exchange, routing_key)

    async def _delete_queue(self, queue: str, unbind: Bindings) -> None:
        if not self.is_connected:  # exclusive queues went with the connection
            return
        async with self._control_channel(f"delete queue {queue!r}") as slot:
            channel = await slot.get()
            for exchange, routing_key in unbind:
                await channel.queue_unbind(queue, exchange, routing_key=routing_key)
            await channel.queue_delete(queue)

    async def _listen(self, consumer: MessageConsumer, unbind: Bindings) -> None:
        """Start a self-restoring no-ack consumer; delete its queue if that fails."""
        try:
            await consumer.start()
            live = {c for c in self._message_consumers if not c.cancelled}
            self._message_consumers = live | {consumer}
        except DuplicateSubscriberIdentifier:
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await self._delete_queue(consumer.queue, unbind)
            raise

    # -- tasks ---------------------------------------------------------------------------------

    async def declare_task_queue(self, queue: str) -> None:
        self._check_open()
        if queue not in self._task_queues:
            await self._once.run(f"queue {queue}", lambda: self._declare_task_queue(queue))

    async def _declare_task_queue(self, queue: str) -> None:
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
        async def declare() -> None:
            self._task_queues.discard(queue)  # it may have been deleted: declare it for real
            await self.declare_task_queue(queue)

        arguments = self._consumer_arguments()
        consumer = TaskConsumer(self._context, queue, prefetch_count, handler, declare, arguments)
        await consumer.start()
        return consumer

    # -- consumer timeout ------------------------------------------------------------------------

    @property
    def broker_version(self) -> tuple[int, ...]:
        """The broker's version, e.g. ``(3, 12, 1)``; ``()`` when unknown."""
        return self._broker_version

    @property
    def consumer_timeout(self) -> float | None:
        """Seconds a delivery may stay unacknowledged before the broker takes it back, as far
        as the client can know: the per-consumer value kiwipy sets where the broker supports
        it, else the version's default (the broker's config may differ); ``None``: no limit."""
        wanted = self._settings.consumer_timeout
        if wanted is not None and supports_consumer_timeout(self.broker_version):
            return None if wanted == "none" else float(wanted)
        return default_consumer_timeout(self.broker_version)

    def _consumer_arguments(self) -> dict[str, Any] | None:
        wanted = self._settings.consumer_timeout
        if wanted is None:
            return None
        version = self.broker_version
        if not supports_consumer_timeout(version):
            if not self._warned_consumer_timeout:
                self._warned_consumer_timeout = True
                _LOGGER.warning(
                    "RabbitMQ %s cannot set a consumer timeout per consumer (3.11.15 and later "
                    "can); consumer_timeout=%r is ignored. Set it on the broker instead: "
                    "consumer_timeout = <milliseconds> in rabbitmq.conf",
                    ".".join(map(str, version)) or "(unknown version)",
                    wanted,
                )
            return None
        milliseconds = MAX_CONSUMER_TIMEOUT_MS if wanted == "none" else int(float(wanted) * 1000)
        return {"x-consumer-timeout": min(milliseconds, MAX_CONSUMER_TIMEOUT_MS)}

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
                if raw.delivery_tag is None:
                    return None
                return AmqpDelivery(raw, self._getter_deliveries(channel), self._guard)
        raise AssertionError("unreachable")

    def _getter_deliveries(self, channel: Any) -> LiveDeliveries:
        if self._getter_live is None or self._getter_live.channel is not channel:
            self._getter_live = LiveDeliveries(channel)
        return self._getter_live

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
        self._check_open()
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
                            # Not a wait per frame for the writer: the confirm is awaited.
                            wait=self._congested(),
                        )
                    )
                    return
                except aiormq.ChannelNotFoundEntity:
                    if last_try or not exchange:
                        raise
                    self._exchanges.discard(exchange)  # auto-deleted (testing mode)

    def _congested(self) -> bool:
        """Whether a publish should wait until the socket takes its frame (backpressure)."""
        connection = self._connection
        return connection is None or bool(connection.congested)

    # -- rpc -----------------------------------------------------------------------------------

    async def bind_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        _check_rpc_identifier(identifier)
        self._check_open()
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

        async def declare() -> None:
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
            self._context,
            queue,
            handler,
            f"RPC handler for {identifier!r}",
            declare,
            self._listener.get,
            teardown,
        )
        await self._listen(consumer, bindings)
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

        async def declare() -> None:
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

        consumer = MessageConsumer(
            self._context,
            queue,
            handler,
            "Broadcast handler",
            declare,
            self._listener.get,
            teardown,
        )
        await self._listen(consumer, bindings)
        return consumer

    # -- replies -------------------------------------------------------------------------------

    async def open_reply_queue(self, handler: MessageHandler) -> str:
        self._check_open()
        if self._reply_queue is not None:
            raise InvalidStateError("The reply queue is already open")
        settings = self._settings
        # The same name after a reconnect: peers that answer late still reach us.
        queue = self._reply_queue = f"{settings.message_exchange}-reply-{uuid.uuid4()}"
        # kiwipy 0.9 workers reply through the exchange the request came in on.
        bindings = [(settings.message_exchange, queue), (settings.task_exchange, queue)]

        async def declare() -> None:
            await self._declare_queue(
                "open the reply queue",
                queue,
                bindings,
                locked="The reply queue is still held by the previous connection",
                exclusive=True,
                arguments={"x-expires": REPLY_QUEUE_EXPIRES_MS},
            )

        consumer = MessageConsumer(
            self._context,
            queue,
            handler,
            "Reply handler",
            declare,
            self._listener.get,
            inline=True,  # a reply handler never awaits (Transport.open_reply_queue)
        )
        try:
            await self._listen(consumer, bindings)
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


def _call_link_callback(callback: LinkCallback, connected: bool, exc: BaseException | None) -> None:
    try:
        callback(connected, exc)
    except Exception:
        _LOGGER.exception("Link callback %r failed", callback)


def _call_back(callback: CloseCallback, exc: BaseException | None) -> None:
    try:
        callback(exc)
    except Exception:
        _LOGGER.exception("Close callback %r failed", callback)


async def _dial(target: DialTarget) -> WideQueueConnection:
    # The URL has no TLS query parameters (file paths), and aiormq masks its password.
    return await dial(target.url, target.kwargs)
