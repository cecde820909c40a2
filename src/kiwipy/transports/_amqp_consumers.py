"""Consumers and deliveries of :mod:`kiwipy.transports.amqp`.

A delivery remembers the aiormq channel that received it and settles only there: delivery tags
are per channel, so an ack sent on another channel (or on a reopened channel that got the same
number) would settle some other message. Once that channel has closed the delivery is *stale*
and settling it does nothing: the broker has already put the message back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from kiwipy.exceptions import KiwipyError
from kiwipy.transports._amqp_support import amqp_errors, to_message
from kiwipy.transports.base import Delivery, DeliveryHandler, MessageHandler, Subscription

__all__ = ("AmqpDelivery", "MessageConsumer", "TaskConsumer")

_LOGGER = logging.getLogger("kiwipy.transports.amqp")

Spawn = Callable[[Coroutine[Any, Any, None], str], None]
#: Awaits a frame-writing call, or gives up with ``ConnectionLost`` once the connection is gone.
Guard = Callable[[Awaitable[None]], Awaitable[None]]


class AmqpDelivery(Delivery):
    """A task message received with manual acknowledgement on ``channel``."""

    def __init__(
        self, raw: Any, channel: Any, guard: Guard, on_settled: Callable[[], None] | None = None
    ) -> None:
        self.message = to_message(raw)
        self._channel = channel
        self._guard = guard
        self._tag: int = raw.delivery_tag
        self._on_settled = on_settled
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled or self.stale

    @property
    def stale(self) -> bool:
        return bool(self._channel.is_closed)

    async def ack(self) -> None:
        await self._settle(lambda: self._channel.basic_ack(self._tag))

    async def reject(self, *, requeue: bool) -> None:
        await self._settle(lambda: self._channel.basic_reject(self._tag, requeue=requeue))

    async def _settle(self, send: Callable[[], Awaitable[None]]) -> None:
        if self._settled:
            return
        self._settled = True
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


class TaskConsumer(Subscription):
    """Consumes a task queue on its own channel, with manual acks and a prefetch limit.

    After :meth:`cancel` the channel stays open until every delivery handed out on it is
    settled (or the transport closes), then it is closed.
    """

    def __init__(self, channel: Any, handler: DeliveryHandler, spawn: Spawn, guard: Guard) -> None:
        self._channel = channel
        self._handler = handler
        self._spawn = spawn
        self._guard = guard
        self._tag: str | None = None
        self._outstanding = 0
        self._cancelled = False

    async def start(self, queue: str, prefetch_count: int) -> None:
        with amqp_errors(f"consume task queue {queue!r}"):
            await self._channel.basic_qos(prefetch_count=prefetch_count)
            consume_ok = await self._channel.basic_consume(queue, self._on_message, no_ack=False)
        self._tag = consume_ok.consumer_tag

    async def _on_message(self, raw: Any) -> None:
        if self._cancelled:  # arrived while cancelling: never handed out, give it back
            if not self._channel.is_closed:
                with contextlib.suppress(Exception):
                    await self._guard(self._channel.basic_reject(raw.delivery_tag, requeue=True))
            return
        self._outstanding += 1
        delivery = AmqpDelivery(raw, self._channel, self._guard, self._settled_one)
        self._spawn(self._handler(delivery), "Task handler")

    def _settled_one(self) -> None:
        self._outstanding -= 1
        if self._cancelled and self._outstanding == 0:
            self._spawn(self._close_channel(), "Closing a cancelled task consumer's channel")

    async def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        if self._tag is not None and not self._channel.is_closed:
            with amqp_errors("cancel a task consumer"):
                await self._channel.basic_cancel(self._tag)
        if self._outstanding == 0:
            await self._close_channel()

    async def close(self) -> None:
        """Stop at once (the transport is closing): unsettled deliveries go back."""
        self._cancelled = True
        await self._close_channel()

    async def _close_channel(self) -> None:
        if not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()


class MessageConsumer(Subscription):
    """A no-ack consumer (RPC, broadcasts, replies) whose cancel runs ``teardown`` once."""

    def __init__(
        self,
        handler: MessageHandler,
        spawn: Spawn,
        what: str,
        teardown: Callable[[MessageConsumer], Awaitable[None]] | None = None,
    ) -> None:
        self._handler = handler
        self._spawn = spawn
        self._what = what
        self._teardown = teardown
        self.channel: Any = None
        self.tag: str | None = None
        self.cancelled = False

    async def start(self, channel: Any, queue: str) -> None:
        self.channel = channel
        consume_ok = await channel.basic_consume(queue, self._on_message, no_ack=True)
        self.tag = consume_ok.consumer_tag

    async def _on_message(self, raw: Any) -> None:
        if self.cancelled:
            _LOGGER.debug("Dropped a message that arrived after %s was cancelled", self._what)
            return
        self._spawn(self._handler(to_message(raw)), self._what)

    async def stop_consuming(self) -> None:
        """``basic.cancel`` this consumer (if its channel still lives)."""
        if self.tag is not None and self.channel is not None and not self.channel.is_closed:
            with amqp_errors(f"cancel {self._what}"):
                await self.channel.basic_cancel(self.tag)

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self._teardown is not None:
            await self._teardown(self)
