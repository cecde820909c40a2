"""The transport interface: messaging semantics, not AMQP frames.

A transport moves opaque bodies (``bytes``) between communicators. It knows nothing of codecs,
subscribers, futures or the pending protocol; the asyncio core (:mod:`kiwipy.aio`) does all that
over this interface, so every transport gets the same behaviour.

Four kinds of traffic:

* **Tasks**: durable work queues. :meth:`Transport.publish_task` returns once the broker has the
  message safely (publisher confirm) and raises :class:`~kiwipy.exceptions.UnroutableError` when
  no queue takes it. Consumers receive :class:`Delivery` objects that must be settled exactly once
  (ack, or reject with or without requeue); a delivery that is never settled goes back to the
  queue when its consumer's connection (or the whole transport) closes.
* **RPC**: one live endpoint per identifier, broker wide. :meth:`Transport.bind_rpc` raises
  :class:`~kiwipy.exceptions.DuplicateSubscriberIdentifier` when the identifier is bound anywhere;
  :meth:`Transport.publish_rpc` raises ``UnroutableError`` when nobody is bound.
* **Broadcasts**: fan-out to every subscription, fire and forget.
* **Replies**: each transport has one reply address; anything published to it with
  :meth:`Transport.publish_reply` reaches the handler given to :meth:`Transport.open_reply_queue`.

Handlers are coroutines called on the transport's event loop. A transport may call several
handlers concurrently (one asyncio task per delivery); per-sender order of *arrival* is kept.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from kiwipy.exceptions import ConnectionLost

__all__ = (
    "CloseCallback",
    "Delivery",
    "DeliveryHandler",
    "LinkCallback",
    "Message",
    "Subscription",
    "Transport",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A message as it travels: an opaque body plus the few properties kiwipy uses."""

    body: bytes
    content_type: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Whether the broker must keep the message on disk (tasks are always persistent).
    persistent: bool = False
    #: Set on incoming task messages the broker delivered before (after a requeue or a fault).
    redelivered: bool = False


class Delivery(abc.ABC):
    """An incoming task message that must be settled exactly once.

    Settling twice is a no-op; so is settling a *stale* delivery (one received on a connection
    that has since died): the broker has already put it back, and acking it on a new channel
    would ack some other message.
    """

    message: Message

    @property
    @abc.abstractmethod
    def settled(self) -> bool:
        """Whether ack/reject was already called (or the delivery went stale)."""

    @property
    def stale(self) -> bool:
        """Whether the connection that received this delivery has died since."""
        return False

    def add_stale_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, on the loop, when this delivery goes stale.

        It goes stale when the connection or channel that received it dies before it is
        settled: the broker then gives the task to another consumer, so whoever processes this
        copy has lost ownership of it. Transports that cannot lose deliveries never call it.
        """
        del callback

    @abc.abstractmethod
    async def ack(self) -> None:
        """Tell the broker the task is done; it is removed from the queue."""

    @abc.abstractmethod
    async def reject(self, *, requeue: bool) -> None:
        """Give the task back (``requeue=True``) or drop / dead-letter it (``requeue=False``)."""


DeliveryHandler = Callable[[Delivery], Coroutine[Any, Any, None]]
MessageHandler = Callable[[Message], Coroutine[Any, Any, None]]
CloseCallback = Callable[[BaseException | None], None]
#: ``callback(connected, exc)``: the link to the broker was lost (``False``, with the reason)
#: or restored (``True``, ``None``) while the transport stays open.
LinkCallback = Callable[[bool, BaseException | None], None]


class Subscription(abc.ABC):
    """A running consumer. :meth:`cancel` stops new deliveries; it is idempotent."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Stop consuming. Deliveries already handed out may still be settled."""


class Transport(abc.ABC):
    """What the asyncio core needs from a broker. See the module docstring for the semantics."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise :class:`~kiwipy.exceptions.ConnectionLost` on failure."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close everything; unsettled deliveries go back to their queues. Idempotent."""

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called or the connection died for good."""

    @property
    def server_properties(self) -> dict[str, Any]:
        """What the broker said about itself on connect (product, version, ...)."""
        return {}

    @property
    def consumer_timeout(self) -> float | None:
        """Seconds a task may stay unacknowledged before the broker takes it back (``None``:
        no limit)."""
        return None

    @property
    def is_connected(self) -> bool:
        """Whether the link to the broker is up now (it may be down while reconnecting)."""
        return not self.is_closed

    @abc.abstractmethod
    def add_close_callback(self, callback: CloseCallback) -> None:
        """Call ``callback(exc)`` once when the transport closes (``exc`` is ``None`` if asked)."""

    def add_link_callback(self, callback: LinkCallback) -> None:
        """Call ``callback(connected, exc)`` each time the link is lost or restored."""
        del callback

    def connection_error(self, message: str) -> ConnectionLost:
        """The error to raise when an operation gave up waiting for the link."""
        return ConnectionLost(message)

    # -- tasks ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def declare_task_queue(self, queue: str) -> None:
        """Make sure the durable task queue ``queue`` exists and is routable. Idempotent."""

    @abc.abstractmethod
    async def publish_task(self, queue: str, message: Message) -> None:
        """Publish persistently to ``queue``; return when the broker confirmed it.

        Raises ``UnroutableError`` if the queue does not exist.
        """

    @abc.abstractmethod
    async def consume_tasks(
        self, queue: str, handler: DeliveryHandler, *, prefetch_count: int
    ) -> Subscription:
        """Deliver tasks from ``queue`` to ``handler``, at most ``prefetch_count`` unsettled."""

    @abc.abstractmethod
    async def get_task(self, queue: str) -> Delivery | None:
        """Take one task from ``queue`` without a consumer; ``None`` if it is empty."""

    # -- rpc -----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def bind_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        """Own the RPC endpoint ``identifier`` broker wide; requests reach ``handler``.

        Raises ``DuplicateSubscriberIdentifier`` if anybody (this process or another) owns it.
        """

    @abc.abstractmethod
    async def publish_rpc(self, identifier: str, message: Message) -> None:
        """Send a request to the owner of ``identifier``; ``UnroutableError`` if there is none."""

    # -- broadcasts ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def publish_broadcast(self, message: Message) -> None:
        """Send ``message`` to every broadcast subscription (none is fine)."""

    @abc.abstractmethod
    async def subscribe_broadcasts(self, handler: MessageHandler) -> Subscription:
        """Receive every broadcast from now on until cancelled."""

    # -- replies -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def open_reply_queue(self, handler: MessageHandler) -> str:
        """Start receiving replies; return the address peers reply to. Call once.

        ``handler`` must not await anything: a transport may run it inline, without a task
        of its own (replies are many, and resolving a future needs no wait).
        """

    @abc.abstractmethod
    async def publish_reply(self, reply_to: str, message: Message) -> None:
        """Send a reply to the address ``reply_to``; a vanished address is not an error."""

    async def publish_final_reply(self, reply_to: str, message: Message) -> None:
        """Send the last reply to a request (an RPC's answer) as :meth:`publish_reply` does.

        :meth:`publish_reply` returns once the broker has the reply, so that a later reply to
        the same request (the answer after a pending notice) cannot overtake it. Nothing follows
        a final reply, so a transport may return as soon as it is sent. This default waits.
        """
        await self.publish_reply(reply_to, message)

    async def reply_and_ack(self, delivery: Delivery, reply_to: str, message: Message) -> None:
        """Send a task's reply, then ack the task: the broker never has the ack without the reply.

        If the worker dies in between, the task runs again and its sender still gets an
        answer (the duplicate reply is dropped by its correlation id). This default waits for
        the reply's confirm before it acks; a transport whose broker takes a connection's frames
        in order overrides it to send both at once.
        """
        await self.publish_reply(reply_to, message)
        await delivery.ack()
