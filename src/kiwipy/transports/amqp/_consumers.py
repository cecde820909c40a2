"""Task consumers, message consumers and their deliveries.

A delivery remembers the aiormq channel that received it and settles only there: delivery tags
are per channel, so an ack sent on another channel (or on a reopened channel that got the same
number) would settle some other message. Once that channel has closed the delivery is *stale*
and settling it does nothing: the broker has already put the message back.

Consumers heal themselves. When their channel closes under them (the connection died, or the
broker closed the channel, as it does when ``consumer_timeout`` expires) or the broker cancels
them (their queue was deleted), they declare their queue again and consume on a new channel,
waiting for the transport to reconnect if needed. An error the broker gives for good (access
refused, not found) is reported once and ends the consumer; nothing retries it forever. A
restore that misses its deadline (a frozen cluster member) is tried again after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from kiwipy.exceptions import (
    BrokerError,
    BrokerRefused,
    ConnectionLost,
    DeadlineExceeded,
    DuplicateSubscriberIdentifier,
    KiwipyError,
)
from kiwipy.transports.amqp._errors import amqp_errors
from kiwipy.transports.amqp._frames import to_message
from kiwipy.transports.amqp._link import backoff_delays
from kiwipy.transports.base import Delivery, DeliveryHandler, MessageHandler, Subscription

__all__ = ("AmqpDelivery", "ConsumerContext", "LiveDeliveries", "MessageConsumer", "TaskConsumer")

_LOGGER = logging.getLogger("kiwipy.transports.amqp")

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Future[Any] | None"]
#: Awaits a frame-writing call, or gives up with ``ConnectionLost`` once the connection is gone.
Guard = Callable[[Awaitable[Any]], Awaitable[Any]]
#: ``bounded(what, channel, operation)``: awaits a method with an answer (consume, qos, cancel)
#: within the declare deadline (see ``Link.bounded``).
Bounded = Callable[[str, Any, Awaitable[Any]], Awaitable[Any]]


class ConsumerContext:
    """What a consumer needs from its transport."""

    def __init__(
        self,
        spawn: Spawn,
        guard: Guard,
        open_channel: Callable[[], Awaitable[Any]],
        closing: Callable[[], bool],
        restore_window_s: float,
        bounded: Bounded,
    ) -> None:
        self.spawn = spawn
        self.guard = guard
        self.bounded = bounded
        self.open_channel = open_channel
        self.closing = closing
        #: How long a restore keeps trying while the broker still holds the old exclusive queue.
        self.restore_window_s = restore_window_s


class LiveDeliveries:
    """The unsettled deliveries of one channel, told at once when the channel dies.

    One callback on the channel serves all of them (a callback per delivery would pile up on a
    long-lived channel for as long as it lives).
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._deliveries: set[AmqpDelivery] = set()
        channel.closing.add_done_callback(self._channel_closed)

    def add(self, delivery: AmqpDelivery) -> None:
        self._deliveries.add(delivery)

    def discard(self, delivery: AmqpDelivery) -> None:
        self._deliveries.discard(delivery)

    def __len__(self) -> int:
        return len(self._deliveries)

    def _channel_closed(self, _: asyncio.Future[Any]) -> None:
        deliveries, self._deliveries = self._deliveries, set()
        for delivery in deliveries:
            delivery.went_stale()


class AmqpDelivery(Delivery):
    """A task message received with manual acknowledgement on ``live.channel``."""

    def __init__(
        self,
        raw: Any,
        live: LiveDeliveries,
        guard: Guard,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self.message = to_message(raw)
        self._live = live
        self._channel = live.channel
        self._guard = guard
        self._tag: int = raw.delivery_tag
        self._on_settled = on_settled
        self._settled = False
        self._stale_callbacks: list[Callable[[], None]] = []
        live.add(self)

    @property
    def settled(self) -> bool:
        return self._settled or self.stale

    @property
    def stale(self) -> bool:
        return bool(self._channel.is_closed)

    def add_stale_callback(self, callback: Callable[[], None]) -> None:
        if self.stale and not self._settled:
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._stale_callbacks.append(callback)

    def went_stale(self) -> None:
        callbacks, self._stale_callbacks = self._stale_callbacks, []
        if not self._settled:
            for callback in callbacks:
                callback()

    async def ack(self) -> None:
        # wait=False: the frame is queued and sent in order; also waiting for the socket write
        # would cost a loop turn per ack and make it no more certain to arrive.
        await self._settle(lambda: self._channel.basic_ack(self._tag, wait=False))

    async def ack_with_reply(self, reply_to: str, properties: Any, body: bytes) -> None:
        """Publish a reply, then ack, both on this delivery's channel (which has no publisher
        confirms) and without waiting: RabbitMQ takes a channel's frames in order, so it has
        routed the reply before it removes the task. If the channel dies in between, the task
        is redelivered, and its sender gets an answer all the same."""

        async def send() -> None:
            channel = self._channel
            await channel.basic_publish(
                body, exchange="", routing_key=reply_to, properties=properties, wait=False
            )
            await channel.basic_ack(self._tag, wait=False)

        await self._settle(send)

    async def reject(self, *, requeue: bool) -> None:
        await self._settle(
            lambda: self._channel.basic_reject(self._tag, requeue=requeue, wait=False)
        )

    async def _settle(self, send: Callable[[], Awaitable[None]]) -> None:
        if self._settled:
            return
        self._settled = True
        self._live.discard(self)
        self._stale_callbacks = []
        try:
            if not self.stale:
                await self._send(send)
        finally:
            if self._on_settled is not None:
                self._on_settled()

    async def _send(self, send: Callable[[], Awaitable[None]]) -> None:
        try:
            with amqp_errors("settle a task delivery"):
                await self._guard(send())
        except KiwipyError:
            if not self.stale:  # if stale, the channel died under us: the broker requeues it
                raise


class _HealingConsumer(Subscription):
    """Restarts itself when its channel closes or the broker cancels it, until cancelled."""

    def __init__(self, context: ConsumerContext, what: str) -> None:
        self._context = context
        self._what = what
        self.channel: Any = None
        self.tag: str | None = None
        self.cancelled = False
        self._healing = False

    async def _consume(self) -> None:
        """Declare what is needed and consume on a fresh channel (sets ``channel``, ``tag``)."""
        raise NotImplementedError

    async def start(self) -> None:
        await self._consume()
        self._watch(self.channel)

    def _watch(self, channel: Any) -> None:
        channel.closing.add_done_callback(lambda _: self._lost(channel, "its channel closed"))
        callbacks = getattr(channel, "on_consumer_cancel_callbacks", None)
        if callbacks is not None:  # aiormq 7; aiormq 6.9 does not report broker cancels
            callbacks.add(self._on_broker_cancel)

    async def _on_broker_cancel(self, frame: Any) -> None:
        if frame.consumer_tag == self.tag:
            self._lost(self.channel, "the broker cancelled it (queue deleted?)")

    def _lost(self, channel: Any, why: str) -> None:
        if self.cancelled or self._healing or channel is not self.channel:
            return
        if self._context.closing():
            return
        self._healing = True
        _LOGGER.info("%s stopped (%s); restoring it", self._what, why)
        self._context.spawn(self._heal(), f"Restoring {self._what}")

    async def _heal(self) -> None:
        started = asyncio.get_running_loop().time()
        delays = backoff_delays()
        try:
            while not self.cancelled and not self._context.closing():
                try:
                    await self.start()
                    _LOGGER.info("%s restored", self._what)
                    return
                except BrokerRefused as exc:  # the link gave up: nothing to restore on
                    _LOGGER.error("Cannot restore %s, giving up: %s", self._what, exc)
                    return
                except ConnectionLost:
                    pass  # the link is down again: the next try waits for it
                except DeadlineExceeded as exc:
                    # A frozen cluster member may hold the declare for a while: try again.
                    _LOGGER.warning("Restoring %s: %s; trying again", self._what, exc)
                except DuplicateSubscriberIdentifier:
                    # The broker may still hold our exclusive queue for the dead connection.
                    elapsed = asyncio.get_running_loop().time() - started
                    if elapsed > self._context.restore_window_s:
                        _LOGGER.error("Cannot restore %s: its identifier is taken", self._what)
                        return
                except BrokerError as exc:
                    _LOGGER.error("Cannot restore %s, giving up: %s", self._what, exc)
                    return
                await asyncio.sleep(next(delays))
        finally:
            self._healing = False


class TaskConsumer(_HealingConsumer):
    """Consumes a task queue on its own channel, with manual acks and a prefetch limit.

    After :meth:`cancel` the channel stays open until every delivery handed out on it is
    settled (or the transport closes), then it is closed.
    """

    def __init__(
        self,
        context: ConsumerContext,
        queue: str,
        prefetch_count: int,
        handler: DeliveryHandler,
        declare_queue: Callable[[], Awaitable[None]],
        arguments: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> None:
        super().__init__(context, f"task consumer of {queue!r}")
        self._queue = queue
        self._prefetch_count = prefetch_count
        #: The consumer's arguments, asked again for each (re)start: they depend on the broker
        #: version of the current connection (a rolling upgrade mixes versions).
        self._arguments = arguments
        self._handler = handler
        self._declare_queue = declare_queue
        self._live: LiveDeliveries | None = None

    async def _consume(self) -> None:
        await self._declare_queue()
        channel = await self._context.open_channel()
        self.channel = channel
        live = self._live = LiveDeliveries(channel)
        what = f"consume task queue {self._queue!r}"
        bounded = self._context.bounded
        try:
            with amqp_errors(what, gone=lambda: bool(channel.is_closed)):
                await bounded(what, channel, channel.basic_qos(prefetch_count=self._prefetch_count))
                consume_ok = await bounded(
                    what,
                    channel,
                    channel.basic_consume(
                        self._queue,
                        lambda raw: self._on_message(live, raw),
                        no_ack=False,
                        arguments=self._arguments(),
                    ),
                )
        except BaseException:
            await _close(channel)
            raise
        self.tag = consume_ok.consumer_tag

    async def _on_message(self, live: LiveDeliveries, raw: Any) -> None:
        channel = live.channel
        if self.cancelled:  # arrived while cancelling: never handed out, give it back
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await self._context.guard(channel.basic_reject(raw.delivery_tag, requeue=True))
            return
        delivery = AmqpDelivery(raw, live, self._context.guard, lambda: self._settled_one(live))
        self._context.spawn(self._handler(delivery), "Task handler")

    def _settled_one(self, live: LiveDeliveries) -> None:
        if self.cancelled and not live:
            self._context.spawn(_close(live.channel), "Closing a cancelled task consumer's channel")

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        channel = self.channel
        if channel is None or channel.is_closed:
            return
        if self.tag is not None:
            what = "cancel a task consumer"
            with amqp_errors(what, gone=lambda: bool(channel.is_closed)):
                await self._context.bounded(what, channel, channel.basic_cancel(self.tag))
        if self._live is None or not self._live:
            await _close(channel)

    async def close(self) -> None:
        """Stop at once (the transport is closing): unsettled deliveries go back."""
        self.cancelled = True
        if self.channel is not None:
            await _close(self.channel)


class MessageConsumer(_HealingConsumer):
    """A no-ack consumer (RPC, broadcasts, replies) of a queue it declares itself.

    ``declare`` (re)creates the queue and its bindings; ``listener`` gives the shared channel
    to consume on; ``teardown`` runs once on :meth:`cancel`.

    Each handler runs in a task of its own, so that it goes on when the channel closes under
    it (aiormq cancels its own per-message tasks then). An ``inline`` handler, one that never
    awaits (the reply handler), runs in aiormq's task instead: nothing can interrupt it, and
    a task less per message is a loop turn less on every reply.
    """

    def __init__(
        self,
        context: ConsumerContext,
        queue: str,
        handler: MessageHandler,
        what: str,
        declare: Callable[[], Awaitable[None]],
        listener: Callable[[], Awaitable[Any]],
        teardown: Callable[[MessageConsumer], Awaitable[None]] | None = None,
        *,
        inline: bool = False,
    ) -> None:
        super().__init__(context, what)
        self.queue = queue
        self._handler = handler
        self._inline = inline
        self._declare = declare
        self._listener = listener
        self._teardown = teardown
        #: Handlers still running: a graceful close lets them finish.
        self.running: set[asyncio.Future[Any]] = set()

    async def _consume(self) -> None:
        await self._declare()
        channel = await self._listener()
        self.channel = channel
        what = f"consume queue {self.queue!r}"
        with amqp_errors(what, gone=lambda: bool(channel.is_closed)):
            consume_ok = await self._context.bounded(
                what, channel, channel.basic_consume(self.queue, self._on_message, no_ack=True)
            )
        self.tag = consume_ok.consumer_tag

    async def _on_message(self, raw: Any) -> None:
        if self.cancelled:
            _LOGGER.debug("Dropped a message that arrived after %s was cancelled", self._what)
            return
        if self._inline:
            try:
                await self._handler(to_message(raw))
            except Exception:
                _LOGGER.exception("%s failed", self._what)
            return
        task = self._context.spawn(self._handler(to_message(raw)), self._what)
        if task is not None:
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def stop_consuming(self) -> None:
        """``basic.cancel`` this consumer (if its channel still lives)."""
        channel = self.channel
        if self.tag is not None and channel is not None and not channel.is_closed:
            what = f"cancel {self._what}"
            with amqp_errors(what, gone=lambda: bool(channel.is_closed)):
                await self._context.bounded(what, channel, channel.basic_cancel(self.tag))

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self._teardown is not None:
            await self._teardown(self)


async def _close(channel: Any) -> None:
    if not channel.is_closed:
        with contextlib.suppress(Exception):
            await channel.close()
