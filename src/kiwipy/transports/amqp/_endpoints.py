"""The no-ack consumers on the listener channel: RPC endpoints, broadcast subscriptions and the
reply queue. Each heals itself after a reconnect (see :mod:`._consumers`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

from kiwipy.exceptions import DuplicateSubscriberIdentifier, InvalidStateError
from kiwipy.settings import MESSAGE_TTL_MS, QUEUE_EXPIRES_MS, Settings
from kiwipy.transports.amqp._channels import ChannelSlot
from kiwipy.transports.amqp._consumers import ConsumerContext, MessageConsumer
from kiwipy.transports.amqp._topology import Bindings, Topology
from kiwipy.transports.base import MessageHandler, Subscription

__all__ = ("BROADCAST_TOPIC", "RPC_TOPIC", "Endpoints")

RPC_TOPIC = "[rpc]"
BROADCAST_TOPIC = "[broadcast]"
REPLY_QUEUE_EXPIRES_MS = QUEUE_EXPIRES_MS
MAX_IDENTIFIER_BYTES = 200
_CLOSE_TIMEOUT = 1.0
#: How long a graceful close lets RPC and broadcast handlers already running finish.
_DRAIN_TIMEOUT = 5.0


def _check_rpc_identifier(identifier: str) -> None:
    if "*" in identifier or "#" in identifier:
        raise ValueError(f"RPC identifier {identifier!r} must not contain '*' or '#'")
    if len(identifier.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"RPC identifier is longer than {MAX_IDENTIFIER_BYTES} bytes")


class Endpoints:
    """Starts, tracks and drains the no-ack consumers of one transport."""

    def __init__(
        self,
        settings: Settings,
        context: ConsumerContext,
        topology: Topology,
        listener: ChannelSlot,
    ) -> None:
        self._settings = settings
        self._context = context
        self._topology = topology
        self._listener = listener
        self._consumers: set[MessageConsumer] = set()
        self._rpc_identifiers: set[str] = set()
        self._reply_queue: str | None = None

    async def drain(self, connected: bool) -> None:
        """Let requests and broadcasts already delivered to us be handled before closing.

        ``basic.cancel`` comes back after every delivery the broker sent before it, so once the
        consumers are cancelled nothing more arrives; handlers then get a moment to finish.
        Unsettled tasks need no such care: the broker gives them to another worker.
        """
        consumers = [c for c in self._consumers if not c.cancelled]
        if not consumers or not connected:
            return
        with contextlib.suppress(Exception):
            stops = asyncio.gather(*(c.stop_consuming() for c in consumers))
            await asyncio.wait_for(stops, _CLOSE_TIMEOUT)
        running = set().union(*(c.running for c in consumers)) - {asyncio.current_task()}
        if running:
            await asyncio.wait(running, timeout=_DRAIN_TIMEOUT)

    def _consumer(
        self,
        queue: str,
        handler: MessageHandler,
        what: str,
        declare: Callable[[], Awaitable[None]],
        teardown: Callable[[MessageConsumer], Awaitable[None]] | None = None,
        *,
        inline: bool = False,
    ) -> MessageConsumer:
        listener = self._listener.get
        return MessageConsumer(
            self._context, queue, handler, what, declare, listener, teardown, inline=inline
        )

    async def _listen(self, consumer: MessageConsumer, unbind: Bindings) -> None:
        """Start a self-restoring no-ack consumer; delete its queue if that fails."""
        try:
            await consumer.start()
            live = {c for c in self._consumers if not c.cancelled}
            self._consumers = live | {consumer}
        except DuplicateSubscriberIdentifier:
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await self._topology.delete_queue(consumer.queue, unbind)
            raise

    # -- rpc -----------------------------------------------------------------------------------

    async def bind_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        _check_rpc_identifier(identifier)
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
            await self._topology.declare_queue(
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
                await self._topology.delete_queue(queue, bindings)
            finally:
                self._rpc_identifiers.discard(identifier)

        what = f"RPC handler for {identifier!r}"
        consumer = self._consumer(queue, handler, what, declare, teardown)
        await self._listen(consumer, bindings)
        return consumer

    # -- broadcasts ----------------------------------------------------------------------------

    async def subscribe_broadcasts(self, handler: MessageHandler) -> Subscription:
        queue = f"broadcast-{uuid.uuid4().hex}"
        bindings = [(self._settings.message_exchange, BROADCAST_TOPIC)]

        async def declare() -> None:
            await self._topology.declare_queue(
                "subscribe to broadcasts",
                queue,
                bindings,
                exclusive=True,
                arguments={"x-message-ttl": MESSAGE_TTL_MS},
            )

        async def teardown(consumer: MessageConsumer) -> None:
            await consumer.stop_consuming()
            await self._topology.delete_queue(queue, [])

        consumer = self._consumer(queue, handler, "Broadcast handler", declare, teardown)
        await self._listen(consumer, bindings)
        return consumer

    # -- replies -------------------------------------------------------------------------------

    async def open_reply_queue(self, handler: MessageHandler) -> str:
        if self._reply_queue is not None:
            raise InvalidStateError("The reply queue is already open")
        settings = self._settings
        # The same name after a reconnect: peers that answer late still reach us.
        queue = self._reply_queue = f"{settings.message_exchange}-reply-{uuid.uuid4()}"
        # kiwipy 0.9 workers reply through the exchange the request came in on.
        bindings = [(settings.message_exchange, queue), (settings.task_exchange, queue)]

        async def declare() -> None:
            await self._topology.declare_queue(
                "open the reply queue",
                queue,
                bindings,
                locked="The reply queue is still held by the previous connection",
                exclusive=True,
                arguments={"x-expires": REPLY_QUEUE_EXPIRES_MS},
            )

        # A reply handler never awaits (Transport.open_reply_queue): it runs inline.
        consumer = self._consumer(queue, handler, "Reply handler", declare, inline=True)
        try:
            await self._listen(consumer, bindings)
        except BaseException:
            self._reply_queue = None
            raise
        return queue
