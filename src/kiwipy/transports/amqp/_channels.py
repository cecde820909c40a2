"""Channels and the traffic on them.

* *control*: declares, binds, unbinds and deletes, one sequence per channel at a time
  (:class:`ControlChannels`). A refused declare (``RESOURCE_LOCKED``, ``PRECONDITION_FAILED``)
  closes its channel; it is reopened on next use, and nothing else lives on it.
* *publisher*: every publish, in publisher-confirm mode (:class:`Publisher`). aiormq holds its
  channel lock only while writing the frames and awaits the confirm outside it, so concurrent
  publishes pipeline.
* *listener*: the no-ack consumers (RPC endpoints, broadcast subscriptions, the reply queue).
* *getter*: ``basic.get`` for :meth:`~kiwipy.transports.amqp.AmqpTransport.get_task`.
* one channel per task consumer, with its own prefetch limit (:mod:`._consumers`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiormq

from kiwipy.transports.amqp._errors import amqp_errors
from kiwipy.transports.amqp._frames import to_properties
from kiwipy.transports.amqp._link import Link, observe_outcome, usable
from kiwipy.transports.base import Message

__all__ = ("ChannelSlot", "ControlChannels", "Publisher")


class ChannelSlot:
    """Holds one channel and opens a new one when the broker has closed the old one."""

    def __init__(self, open_channel: Callable[[], Awaitable[Any]]) -> None:
        self._open_channel = open_channel
        self._channel: Any = None
        self._lock = asyncio.Lock()

    def release(self, channel: Any) -> bool:
        """Hand ``channel`` out no more (the next :meth:`get` opens another); ``True`` if it
        was the one held."""
        if channel is None or self._channel is not channel:
            return False
        self._channel = None
        return True

    def current(self) -> Any:
        """The channel held, if it is still open; else ``None`` (opening one is :meth:`get`)."""
        channel = self._channel
        return channel if usable(channel) else None

    async def get(self) -> Any:
        channel = self._channel
        if usable(channel):
            return channel
        async with self._lock:
            if not usable(self._channel):
                self._channel = await self._open_channel()
            return self._channel

    def observe_confirmations(self) -> None:
        """Mark the pending publisher confirms' errors as seen.

        Closing the connection fails them all; under aiormq 6.9 those of publishes that never
        got to wait for them would be logged as "Future exception was never retrieved".
        """
        channel = self._channel
        for confirmation in list(getattr(channel, "confirmations", {}).values()):
            confirmation.add_done_callback(observe_outcome)


class ControlChannels:
    """Channels for declarations, one per sequence of operations in progress (up to ``size``).

    A sequence (declare a queue, bind it, ...) has its channel to itself, so a failure closes
    only that channel; independent sequences, such as the task queue's and the reply queue's
    on a first send, run side by side. The channel used last is handed out first, so more
    than one is opened only when sequences overlap.
    """

    def __init__(self, open_channel: Callable[[], Awaitable[Any]], size: int) -> None:
        slots = [ChannelSlot(open_channel) for _ in range(size)]
        self._free: asyncio.LifoQueue[ChannelSlot] = asyncio.LifoQueue()
        for slot in slots:
            self._free.put_nowait(slot)
        self._first = slots[-1]  # last in, first out: the one taken first

    @contextlib.asynccontextmanager
    async def take(self) -> AsyncIterator[ChannelSlot]:
        """A slot for one sequence; ``await slot.get()`` gives its (re)opened channel."""
        slot = await self._free.get()
        try:
            yield slot
        finally:
            self._free.put_nowait(slot)

    async def warm(self) -> None:
        """Open the channel the first sequence gets (which waits for this if it comes early)."""
        await self._first.get()


class Publisher:
    """Publishes on the publisher channel and waits for the broker's confirm.

    ``ensure_exchange(name)`` declares an exchange the first time it is used; ``forget_exchange``
    drops it from that cache (an auto-deleted exchange in testing mode is declared again).
    """

    def __init__(
        self,
        link: Link,
        ensure_exchange: Callable[[str], Coroutine[Any, Any, None]],
        forget_exchange: Callable[[str], None],
    ) -> None:
        self._link = link
        self._ensure_exchange = ensure_exchange
        self._forget_exchange = forget_exchange
        self.slot = ChannelSlot(
            lambda: link.open_channel(publisher_confirms=True, on_return_raises=True)
        )

    def _replace(self, channel: Any) -> None:
        """Open a new channel for the next publish; ``channel`` closes once its confirms
        settle."""
        if self.slot.release(channel):
            self._link.abandon(channel, settle=True)

    async def publish(
        self,
        what: str,
        exchange: str,
        routing_key: str,
        message: Message,
        *,
        mandatory: bool,
        delivery_mode: int,
    ) -> None:
        self._link.check_open()
        properties = to_properties(message, delivery_mode=delivery_mode)
        # aiormq fails a publish whose confirm is pending with a CancelledError when it drops
        # the connection for missed heartbeats: that is a ConnectionLost, not a cancellation.
        with amqp_errors(what, gone=lambda: not self._link.is_connected):
            for last_try in (False, True):
                if exchange:
                    await self._ensure_exchange(exchange)
                channel = await self.slot.get()
                try:
                    await self._link.lifeline.guard(
                        channel.basic_publish(
                            message.body,
                            exchange=exchange,
                            routing_key=routing_key,
                            properties=properties,
                            mandatory=mandatory,
                            # Not a wait per frame for the writer: the confirm is awaited.
                            wait=self._link.congested,
                        )
                    )
                    return
                except aiormq.DeliveryError as exc:
                    # A nack (a PublishError is a return: unroutable). RabbitMQ 3.10 nacks every
                    # later publish to a quorum queue on a channel whose first publish to it
                    # came during a leader election: a task sent again goes on a new channel.
                    if not isinstance(exc, aiormq.PublishError):
                        self._replace(channel)
                    raise
                except asyncio.CancelledError:
                    # The send's deadline passed with no confirm. A channel that first
                    # published to a quorum queue while its leader was frozen keeps sending to
                    # that leader and is never confirmed (RabbitMQ 3.10): the send made again
                    # goes on a new channel, which asks for the current leader.
                    self._replace(channel)
                    raise
                except aiormq.ChannelNotFoundEntity:
                    if last_try or not exchange:
                        raise
                    self._forget_exchange(exchange)  # gone: auto-deleted, or a restarted broker
