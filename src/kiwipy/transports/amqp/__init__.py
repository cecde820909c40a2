"""The RabbitMQ transport, on aiormq: the only package of kiwipy that imports it.

:class:`AmqpTransport` composes one module per concern:

* :mod:`._link`: the connection, noticed when lost and redialled with jittered back-off;
* :mod:`._topology`: exchanges, queues and bindings, declared once per connection;
* :mod:`._channels`: the channels, and publishing with confirms;
* :mod:`._consumers`: task consumers and their deliveries, which heal after a reconnect;
* :mod:`._endpoints`: RPC endpoints, broadcast subscriptions and the reply queue;
* :mod:`._errors`: the AMQP library's errors translated into kiwipy's;
* :mod:`._features`: what the broker's version can do (the consumer timeout);
* :mod:`._frames`, :mod:`._tls`, :mod:`._wire`: messages, TLS and the socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq

from kiwipy._owned import OwnedTasks
from kiwipy.exceptions import ConnectionLost, DeliveryFailed, UnroutableError
from kiwipy.settings import Settings
from kiwipy.transports.amqp._channels import ChannelSlot, Publisher
from kiwipy.transports.amqp._consumers import (
    AmqpDelivery,
    ConsumerContext,
    LiveDeliveries,
    TaskConsumer,
)
from kiwipy.transports.amqp._endpoints import BROADCAST_TOPIC, RPC_TOPIC, Endpoints
from kiwipy.transports.amqp._errors import AmqpConnectionLost, amqp_errors, cancelled_by_caller
from kiwipy.transports.amqp._features import BrokerFeatures
from kiwipy.transports.amqp._frames import PERSISTENT, TRANSIENT, plain, to_properties
from kiwipy.transports.amqp._link import Link
from kiwipy.transports.amqp._topology import Topology
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

_GET_RETRY_PAUSE = 0.1
_GET_ATTEMPTS = 5
#: A nacked task is sent again (on a new channel) after 0.1, 0.2 ... 1.6 s: through a quorum
#: queue's leader election (about 2 s on RabbitMQ 3.10), then the nack is raised.
_NACK_ATTEMPTS = 6
#: The largest task reply sent on the task's own channel (see ``reply_and_ack``).
INLINE_REPLY_MAX_BYTES = 1 << 20


class _GetAgain(Exception):
    """The get failed in a way that a second try on a new channel may not."""


class AmqpTransport(Transport):
    """A :class:`~kiwipy.transports.base.Transport` over one RabbitMQ connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tasks = OwnedTasks()
        self._link = Link(settings, self._tasks, self._on_connected, self._on_lost)
        self._features = BrokerFeatures(settings)
        self._server_properties: dict[str, Any] = {}
        self._topology = Topology(settings, self._link)
        self._publisher = Publisher(
            self._link, self._topology.ensure_exchange, self._topology.forget_exchange
        )
        self._listener = ChannelSlot(lambda: self._link.open_channel(publisher_confirms=False))
        self._getter = ChannelSlot(lambda: self._link.open_channel(publisher_confirms=False))
        self._getter_live: LiveDeliveries | None = None
        self._draining = False
        self._context = ConsumerContext(
            spawn=self._tasks.spawn,
            guard=lambda operation: self._link.lifeline.guard(operation),
            open_channel=lambda: self._link.open_channel(publisher_confirms=False),
            closing=lambda: self._link.closed or self._draining,
            # The broker frees a dead connection's exclusive queues once it notices the death,
            # at the latest two heartbeats later.
            restore_window_s=3.0 * settings.heartbeat + settings.connection_timeout,
            bounded=self._link.bounded,
        )
        self._endpoints = Endpoints(settings, self._context, self._topology, self._listener)

    def __repr__(self) -> str:
        return f"AmqpTransport({self._link.address!r})"

    @property
    def address(self) -> str:
        """The address (of ``Settings.addresses``) of the live or last connection, masked."""
        return self._link.address

    # -- link ----------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._link.connect()

    def _on_connected(self, connection: Any) -> None:
        """A new live connection: what the broker had is to be learnt and declared afresh."""
        self._server_properties = dict(plain(connection.server_properties or {}))
        self._features.learn(self._server_properties)
        self._topology.forget_all()
        # Silent: a failure here is met again, and reported, by whoever needs the channel.
        self._tasks.spawn(self._open_channels(), "")

    def _on_lost(self) -> None:
        self._publisher.slot.observe_confirmations()

    async def _open_channels(self) -> None:
        """Open the channels nearly every communicator needs, together (a first send needs all
        three): one round trip instead of one per channel at first use."""
        await asyncio.gather(
            self._publisher.slot.get(),
            self._listener.get(),
            self._topology.controls.warm(),
            return_exceptions=True,
        )

    async def close(self) -> None:
        if self._link.closed:
            return
        self._draining = True
        await self._endpoints.drain(self.is_connected)
        await self._link.close()
        self._publisher.slot.observe_confirmations()
        await self._tasks.close()
        self._link.fire_close_callbacks(None)

    @property
    def is_closed(self) -> bool:
        return self._link.closed

    @property
    def is_connected(self) -> bool:
        return self._link.is_connected

    @property
    def _connection(self) -> Any:
        """The live aiormq connection (tests cut it to play a network fault)."""
        return self._link.connection

    def connection_error(self, message: str) -> ConnectionLost:
        return AmqpConnectionLost(message)

    def add_link_callback(self, callback: LinkCallback) -> None:
        self._link.add_link_callback(callback)

    def add_close_callback(self, callback: CloseCallback) -> None:
        self._link.add_close_callback(callback)

    @property
    def server_properties(self) -> dict[str, Any]:
        return dict(self._server_properties)

    @property
    def broker_version(self) -> tuple[int, ...]:
        """The broker's version, e.g. ``(3, 12, 1)``; ``()`` when unknown."""
        return self._features.version

    @property
    def consumer_timeout(self) -> float | None:
        return self._features.consumer_timeout

    # -- tasks ---------------------------------------------------------------------------------

    async def declare_task_queue(self, queue: str) -> None:
        await self._topology.declare_task_queue(queue)

    async def publish_task(self, queue: str, message: Message) -> None:
        what = f"publish a task to queue {queue!r}"
        exchange = self._settings.task_exchange
        for attempt in range(_NACK_ATTEMPTS):
            try:
                await self._publisher.publish(
                    what, exchange, queue, message, mandatory=True, delivery_mode=PERSISTENT
                )
                return
            except UnroutableError:
                self._topology.forget_task_queue(queue)  # it may have expired: declare it again
                raise
            except DeliveryFailed:
                # A nack means the broker did not store it: sending it again is safe. A quorum
                # queue just declared nacks until its leader runs (RabbitMQ 3.10).
                if attempt == _NACK_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(_GET_RETRY_PAUSE * 2**attempt)

    async def consume_tasks(
        self, queue: str, handler: DeliveryHandler, *, prefetch_count: int
    ) -> Subscription:
        async def declare() -> None:
            self._topology.forget_task_queue(queue)  # it may have been deleted: declare it
            await self._topology.declare_task_queue(queue)

        # Asked on each (re)start: the broker of the next connection may run another version.
        arguments = self._features.consumer_arguments
        consumer = TaskConsumer(self._context, queue, prefetch_count, handler, declare, arguments)
        await consumer.start()
        return consumer

    async def get_task(self, queue: str) -> Delivery | None:
        what = f"get a task from queue {queue!r}"
        for attempt in range(_GET_ATTEMPTS):
            last_try = attempt == _GET_ATTEMPTS - 1
            try:
                with amqp_errors(what):
                    return await self._get(queue)
            except _GetAgain:
                if last_try:
                    raise ConnectionLost(f"Cannot {what}: the broker kept failing") from None
            except ConnectionLost:
                # RabbitMQ 3.10 closes the connection (INTERNAL_ERROR "noproc") on a basic.get
                # from a quorum queue whose leader is still starting: wait for the link and retry.
                if last_try:
                    raise
            await asyncio.sleep(_GET_RETRY_PAUSE)
        raise AssertionError("unreachable")

    async def queue_exists(self, name: str) -> bool:
        """Whether the broker has a queue ``name``.

        A passive declare on a channel of its own (the broker closes the channel of a passive
        declare that finds nothing): it creates nothing, so inspection does not change the
        broker. Bounded by ``declare_timeout``.
        """
        self._link.check_open()
        what = f"check queue {name!r}"
        channel = await self._link.open_channel(publisher_confirms=False)
        try:
            with amqp_errors(what, gone=lambda: bool(channel.is_closed)):
                try:
                    operation = channel.queue_declare(name, passive=True)
                    await self._link.bounded(what, channel, operation)
                except aiormq.ChannelNotFoundEntity:
                    return False
            return True
        finally:
            if not channel.is_closed:
                self._link.abandon(channel)  # closed in the background

    async def _get(self, queue: str) -> Delivery | None:
        await self._topology.declare_task_queue(queue)
        channel = await self._getter.get()
        try:
            raw = await self._link.bounded(
                f"get a task from queue {queue!r}", channel, channel.basic_get(queue, no_ack=False)
            )
        except aiormq.ChannelNotFoundEntity:
            self._topology.forget_task_queue(queue)  # expired (testing mode): declare it again
            raise _GetAgain() from None
        except asyncio.CancelledError:
            # aiormq cancels what waits on a channel or connection the broker closes: that is
            # no cancellation of ours (unless it is), so try again on a new one.
            if cancelled_by_caller():
                raise
            raise _GetAgain() from None
        if raw.delivery_tag is None:
            return None
        return AmqpDelivery(raw, self._getter_deliveries(channel), self._context.guard)

    def _getter_deliveries(self, channel: Any) -> LiveDeliveries:
        if self._getter_live is None or self._getter_live.channel is not channel:
            self._getter_live = LiveDeliveries(channel)
        return self._getter_live

    # -- rpc, broadcasts, replies ----------------------------------------------------------------

    async def bind_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        self._link.check_open()
        return await self._endpoints.bind_rpc(identifier, handler)

    async def publish_rpc(self, identifier: str, message: Message) -> None:
        what = f"send an RPC request to {identifier!r}"
        await self._publisher.publish(
            what,
            self._settings.message_exchange,
            f"{RPC_TOPIC}.{identifier}",
            message,
            mandatory=True,
            delivery_mode=PERSISTENT if message.persistent else TRANSIENT,
        )

    async def publish_broadcast(self, message: Message) -> None:
        exchange = self._settings.message_exchange
        await self._publisher.publish(
            "publish a broadcast",
            exchange,
            BROADCAST_TOPIC,
            message,
            mandatory=False,
            delivery_mode=TRANSIENT,
        )

    async def publish_final_reply(self, reply_to: str, message: Message) -> None:
        # On the listener channel, which has no publisher confirms: the wait for the confirm
        # was about 0.1 ms of each RPC round trip here (see reply_and_ack for large replies).
        channel = self._listener.current()
        if channel is None or len(message.body) > INLINE_REPLY_MAX_BYTES:
            await self.publish_reply(reply_to, message)
            return
        self._link.check_open()
        with amqp_errors(f"send a reply to {reply_to!r}", gone=lambda: bool(channel.is_closed)):
            await self._link.lifeline.guard(
                channel.basic_publish(
                    message.body,
                    exchange="",
                    routing_key=reply_to,
                    properties=_reply_properties(message),
                    wait=False,
                )
            )

    async def reply_and_ack(self, delivery: Delivery, reply_to: str, message: Message) -> None:
        # The reply on the task's own channel spares the wait for its confirm (about 0.1 ms of
        # each round trip here). A large one goes through the publisher: were it over the
        # broker's message size limit, the error would close the channel it went on, and with
        # it the consumer's other deliveries.
        if (
            isinstance(delivery, AmqpDelivery)
            and not delivery.stale
            and len(message.body) <= INLINE_REPLY_MAX_BYTES
        ):
            self._link.check_open()
            await delivery.ack_with_reply(reply_to, _reply_properties(message), message.body)
        else:
            await super().reply_and_ack(delivery, reply_to, message)

    async def subscribe_broadcasts(self, handler: MessageHandler) -> Subscription:
        return await self._endpoints.subscribe_broadcasts(handler)

    async def open_reply_queue(self, handler: MessageHandler) -> str:
        self._link.check_open()
        return await self._endpoints.open_reply_queue(handler)

    async def publish_reply(self, reply_to: str, message: Message) -> None:
        # Through the default exchange: reaches our reply queues and kiwipy 0.9's alike.
        await self._publisher.publish(
            f"send a reply to {reply_to!r}",
            "",
            reply_to,
            message,
            mandatory=False,
            delivery_mode=PERSISTENT if message.persistent else TRANSIENT,
        )


def _reply_properties(message: Message) -> Any:
    return to_properties(message, delivery_mode=PERSISTENT if message.persistent else TRANSIENT)
