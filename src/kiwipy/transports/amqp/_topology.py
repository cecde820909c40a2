"""Exchanges, queues and bindings: declared once per connection, again after a reconnect.

The names and flags match kiwipy 0.9 (``KIWIPY-0.9-API.md`` sections 1.10 and 4), so old and
new peers share a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiormq

from kiwipy.exceptions import BrokerError, DuplicateSubscriberIdentifier
from kiwipy.settings import TESTING_QUEUE_EXPIRES_MS, Settings
from kiwipy.transports.amqp._channels import ChannelSlot, ControlChannels
from kiwipy.transports.amqp._errors import amqp_errors
from kiwipy.transports.amqp._link import Link

__all__ = ("Bindings", "Once", "Topology", "task_queue_arguments")

_LOGGER = logging.getLogger("kiwipy.transports.amqp")

Bindings = list[tuple[str, str]]
#: Control channels open at most at once: declarations that do not wait for each other.
_CONTROL_CHANNELS = 4


class Once:
    """Runs one operation per key at a time: concurrent callers share the one in progress."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[None]] = {}

    async def run(self, key: str, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(make())
            running.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: a caller that gives up does not cancel it for the others.
        await asyncio.shield(running)

    def _finished(self, key: str, done: asyncio.Future[None]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # each waiter got it; nobody else needs to hear of it


class Topology:
    """Declares, binds and deletes on the control channels, and remembers what exists.

    The memory of queues is of this connection only: :meth:`forget_all` runs on each new
    connection. Exchanges are remembered across connections: they are cluster-wide and a
    declare needs every node (a frozen one blocks it); one that did vanish (a restarted single
    node, an auto-deleted one) answers a publish or bind with NOT_FOUND, and is declared then.
    """

    def __init__(self, settings: Settings, link: Link) -> None:
        self._settings = settings
        self._link = link
        self.controls = ControlChannels(
            lambda: link.open_channel(publisher_confirms=False), _CONTROL_CHANNELS
        )
        self._once = Once()
        self._exchanges: set[str] = set()
        self._task_queues: set[str] = set()
        self._warned_mismatch: set[str] = set()

    def forget_all(self) -> None:
        self._task_queues.clear()

    def forget_exchange(self, exchange: str) -> None:
        self._exchanges.discard(exchange)

    def forget_task_queue(self, queue: str) -> None:
        """It may have expired or been deleted: declare it for real next time."""
        self._task_queues.discard(queue)

    @contextlib.asynccontextmanager
    async def control_channel(self, what: str) -> AsyncIterator[ChannelSlot]:
        """A control channel's slot, for one sequence of operations that may fail on their own.

        ``await slot.get()`` gives the channel (a new one after a failure closed it).
        """
        await self._link.live_connection()
        async with self.controls.take() as slot:
            with amqp_errors(what):
                await slot.get()
                yield slot

    async def _declare_exchange(self, channel: Any, exchange: str) -> None:
        if exchange in self._exchanges:
            return
        await self._link.bounded(
            f"declare exchange {exchange!r}",
            channel,
            channel.exchange_declare(
                exchange,
                exchange_type="topic",
                durable=False,
                auto_delete=self._settings.testing_mode,
            ),
        )
        self._exchanges.add(exchange)

    async def ensure_exchange(self, exchange: str) -> None:
        if exchange not in self._exchanges:
            await self._once.run(
                f"exchange {exchange}", lambda: self._declare_exchange_now(exchange)
            )

    async def _declare_exchange_now(self, exchange: str) -> None:
        async with self.control_channel(f"declare exchange {exchange!r}") as slot:
            await self._declare_exchange(await slot.get(), exchange)

    async def _bind(self, slot: ChannelSlot, queue: str, exchange: str, routing_key: str) -> None:
        """Bind on ``slot``'s channel; redeclare the exchange once if it vanished (auto-delete)."""
        for last_try in (False, True):
            channel = await slot.get()
            await self._declare_exchange(channel, exchange)
            try:
                await self._link.bounded(
                    f"bind queue {queue!r} to exchange {exchange!r}",
                    channel,
                    channel.queue_bind(queue, exchange, routing_key=routing_key),
                )
                return
            except aiormq.ChannelNotFoundEntity:
                if last_try:
                    raise
                self._exchanges.discard(exchange)

    async def declare_queue(
        self,
        what: str,
        queue: str,
        bindings: Bindings,
        *,
        locked: str | None = None,
        **declare: Any,
    ) -> None:
        async with self.control_channel(what) as slot:
            channel = await slot.get()
            try:
                await self._link.bounded(what, channel, channel.queue_declare(queue, **declare))
            except aiormq.ChannelLockedResource as exc:
                if locked is None:
                    raise
                raise DuplicateSubscriberIdentifier(locked) from exc
            for exchange, routing_key in bindings:
                await self._bind(slot, queue, exchange, routing_key)

    async def delete_queue(self, queue: str, unbind: Bindings) -> None:
        if not self._link.is_connected:  # exclusive queues went with the connection
            return
        async with self.control_channel(f"delete queue {queue!r}") as slot:
            channel = await slot.get()
            for exchange, routing_key in unbind:
                await self._link.bounded(
                    f"unbind queue {queue!r}",
                    channel,
                    channel.queue_unbind(queue, exchange, routing_key=routing_key),
                )
            await self._link.bounded(
                f"delete queue {queue!r}", channel, channel.queue_delete(queue)
            )

    async def declare_task_queue(self, queue: str) -> None:
        self._link.check_open()
        if queue not in self._task_queues:
            await self._once.run(f"queue {queue}", lambda: self._declare_task_queue(queue))

    async def _declare_task_queue(self, queue: str) -> None:
        settings = self._settings
        arguments = task_queue_arguments(settings)
        # Durable even in testing mode: RabbitMQ 4.3 refuses transient non-exclusive queues.
        try:
            await self.declare_queue(
                f"declare task queue {queue!r}",
                queue,
                [(settings.task_exchange, queue)],
                durable=True,
                arguments=arguments,
            )
        except BrokerError as exc:
            if not isinstance(exc.__cause__, aiormq.ChannelPreconditionFailed):
                raise
            await self._use_existing_queue(queue, arguments, exc)
        self._task_queues.add(queue)

    async def _use_existing_queue(
        self, queue: str, arguments: dict[str, Any], refusal: BrokerError
    ) -> None:
        """The queue exists with other arguments (a kiwipy 0.9 peer's, another queue type):
        use it as it is, after one clear warning."""
        what = f"check task queue {queue!r}"
        async with self.control_channel(what) as slot:
            channel = await slot.get()
            await self._link.bounded(what, channel, channel.queue_declare(queue, passive=True))
            await self._bind(slot, queue, self._settings.task_exchange, queue)
        if queue not in self._warned_mismatch:
            self._warned_mismatch.add(queue)
            _LOGGER.warning(
                "Task queue %r already exists with other arguments than kiwipy's %s; using it "
                "as it is. The broker said: %s. To change it, delete the queue when it is "
                "empty, or set a policy (kiwipy's docs/operations.md: quorum queues).",
                queue,
                arguments,
                refusal.__cause__,
            )


def task_queue_arguments(settings: Settings) -> dict[str, Any]:
    """The task queue's arguments, by queue type.

    Classic: kiwipy 0.9's exactly (a message TTL, and an expiry in testing mode). Quorum: the
    same plus the type and an explicit delivery limit; never the arguments quorum queues refuse
    (priority, lazy mode, exclusive, auto-delete).
    """
    arguments: dict[str, Any] = {"x-message-ttl": settings.task_message_ttl_ms}
    if settings.testing_mode:
        arguments["x-expires"] = TESTING_QUEUE_EXPIRES_MS
    if settings.task_queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
        arguments["x-delivery-limit"] = settings.task_delivery_limit
    return arguments
