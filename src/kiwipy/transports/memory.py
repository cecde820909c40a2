"""An in-process broker with RabbitMQ's semantics, for users' unit tests.

Every ``memory://NAME`` URL names one broker shared by all communicators of the process (the
default name is empty). Like RabbitMQ it keeps task queues with prefetch limits and manual
settlement, puts unsettled tasks back when their transport closes, refuses unroutable tasks and
RPC requests, gives each RPC identifier one owner, and fans broadcasts out to every subscription.

Communicators may live on different event loops (the blocking facade runs one loop per
communicator on its own thread), so the broker is guarded by a lock and every handler runs on
the loop of the transport that registered it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from kiwipy._owned import OwnedTasks
from kiwipy.exceptions import (
    CommunicatorClosed,
    DuplicateSubscriberIdentifier,
    UnroutableError,
)
from kiwipy.settings import Settings
from kiwipy.transports.base import (
    CloseCallback,
    Delivery,
    DeliveryHandler,
    Message,
    MessageHandler,
    Subscription,
    Transport,
)

__all__ = ("MemoryBroker", "MemoryTransport", "get_broker")

_LOGGER = logging.getLogger(__name__)
_BROKERS: dict[str, MemoryBroker] = {}
_BROKERS_LOCK = threading.Lock()
#: How long a graceful close lets RPC and broadcast handlers already running finish.
_DRAIN_TIMEOUT = 5.0


def get_broker(name: str = "") -> MemoryBroker:
    """The process-wide in-memory broker called ``name`` (made on first use)."""
    with _BROKERS_LOCK:
        broker = _BROKERS.get(name)
        if broker is None:
            broker = _BROKERS[name] = MemoryBroker(name)
        return broker


class _MemoryDelivery(Delivery):
    def __init__(
        self, broker: MemoryBroker, queue: _Queue, owner: MemoryTransport, message: Message
    ) -> None:
        self.message = message
        self._broker = broker
        self._queue = queue
        self._owner = owner
        self._consumer: _Consumer | None = None
        self._settled = False
        self._stale_callbacks: list[Callable[[], None]] = []

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def stale(self) -> bool:
        return self._owner.is_closed

    def add_stale_callback(self, callback: Callable[[], None]) -> None:
        if self.stale:
            callback()
        else:
            self._stale_callbacks.append(callback)

    def went_stale(self) -> None:
        callbacks, self._stale_callbacks = self._stale_callbacks, []
        for callback in callbacks:
            callback()

    async def ack(self) -> None:
        self._broker.settle(self, requeue=False)

    async def reject(self, *, requeue: bool) -> None:
        self._broker.settle(self, requeue=requeue)


@dataclasses.dataclass(eq=False)
class _Consumer:
    owner: MemoryTransport
    handler: DeliveryHandler
    prefetch_count: int
    unsettled: int = 0
    active: bool = True

    def has_credit(self) -> bool:
        return self.active and (self.prefetch_count == 0 or self.unsettled < self.prefetch_count)


@dataclasses.dataclass(eq=False)
class _Queue:
    name: str
    ready: collections.deque[Message] = dataclasses.field(default_factory=collections.deque)
    consumers: list[_Consumer] = dataclasses.field(default_factory=list)
    turn: itertools.count[int] = dataclasses.field(default_factory=itertools.count)


@dataclasses.dataclass(eq=False)
class _Endpoint:
    owner: MemoryTransport
    handler: MessageHandler


class MemoryBroker:
    """The shared state of one in-memory broker. All methods are thread safe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.RLock()
        self._queues: dict[str, _Queue] = {}
        self._rpc: dict[str, _Endpoint] = {}
        self._broadcasts: dict[int, _Endpoint] = {}
        self._replies: dict[str, _Endpoint] = {}
        self._unsettled: dict[MemoryTransport, set[_MemoryDelivery]] = collections.defaultdict(set)

    # -- tasks ---------------------------------------------------------------------------------

    def declare_queue(self, name: str) -> None:
        with self._lock:
            self._queues.setdefault(name, _Queue(name))

    def publish_task(self, queue_name: str, message: Message) -> None:
        with self._lock:
            queue = self._queues.get(queue_name)
            if queue is None:
                raise UnroutableError(f"No task queue '{queue_name}' to route the task to")
            queue.ready.append(message)
            self._dispatch(queue)

    def add_consumer(self, queue_name: str, consumer: _Consumer) -> None:
        with self._lock:
            queue = self._queues.setdefault(queue_name, _Queue(queue_name))
            queue.consumers.append(consumer)
            self._dispatch(queue)

    def remove_consumer(self, queue_name: str, consumer: _Consumer) -> None:
        with self._lock:
            consumer.active = False
            queue = self._queues.get(queue_name)
            if queue is not None and consumer in queue.consumers:
                queue.consumers.remove(consumer)

    def get(self, queue_name: str, owner: MemoryTransport) -> _MemoryDelivery | None:
        with self._lock:
            queue = self._queues.get(queue_name)
            if queue is None or not queue.ready:
                return None
            return self._hand_out(queue, owner)

    def settle(self, delivery: _MemoryDelivery, *, requeue: bool) -> None:
        with self._lock:
            if delivery.settled or delivery.stale:
                return
            self._forget(delivery)
            if requeue:
                redelivered = dataclasses.replace(delivery.message, redelivered=True)
                delivery._queue.ready.appendleft(redelivered)
            self._dispatch(delivery._queue)

    def _forget(self, delivery: _MemoryDelivery) -> None:
        delivery._settled = True
        self._unsettled[delivery._owner].discard(delivery)
        if delivery._consumer is not None:
            delivery._consumer.unsettled -= 1

    def _hand_out(self, queue: _Queue, owner: MemoryTransport) -> _MemoryDelivery:
        delivery = _MemoryDelivery(self, queue, owner, queue.ready.popleft())
        self._unsettled[owner].add(delivery)
        return delivery

    def _dispatch(self, queue: _Queue) -> None:
        while queue.ready:
            consumer = self._next_consumer(queue)
            if consumer is None:
                return
            delivery = self._hand_out(queue, consumer.owner)
            delivery._consumer = consumer
            consumer.unsettled += 1
            consumer.owner._spawn(consumer.handler(delivery))

    def _next_consumer(self, queue: _Queue) -> _Consumer | None:
        count = len(queue.consumers)
        for _ in range(count):
            consumer = queue.consumers[next(queue.turn) % count]
            if consumer.has_credit():
                return consumer
        return None

    # -- rpc, broadcasts, replies --------------------------------------------------------------

    def bind_rpc(self, identifier: str, endpoint: _Endpoint) -> None:
        with self._lock:
            if identifier in self._rpc:
                raise DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}' is in use")
            self._rpc[identifier] = endpoint

    def unbind_rpc(self, identifier: str, endpoint: _Endpoint) -> None:
        with self._lock:
            if self._rpc.get(identifier) is endpoint:
                del self._rpc[identifier]

    def publish_rpc(self, identifier: str, message: Message) -> None:
        with self._lock:
            endpoint = self._rpc.get(identifier)
        if endpoint is None:
            raise UnroutableError(f"No RPC subscriber with identifier '{identifier}'")
        endpoint.owner._spawn(endpoint.handler(message), message=True)

    def subscribe_broadcasts(self, endpoint: _Endpoint) -> None:
        with self._lock:
            self._broadcasts[id(endpoint)] = endpoint

    def unsubscribe_broadcasts(self, endpoint: _Endpoint) -> None:
        with self._lock:
            self._broadcasts.pop(id(endpoint), None)

    def publish_broadcast(self, message: Message) -> None:
        with self._lock:
            endpoints = list(self._broadcasts.values())
        for endpoint in endpoints:
            endpoint.owner._spawn(endpoint.handler(message), message=True)

    def open_reply_queue(self, address: str, endpoint: _Endpoint) -> None:
        with self._lock:
            self._replies[address] = endpoint

    def publish_reply(self, address: str, message: Message) -> None:
        with self._lock:
            endpoint = self._replies.get(address)
        if endpoint is not None:
            endpoint.owner._spawn(endpoint.handler(message), message=True)

    # -- connections ---------------------------------------------------------------------------

    def disconnect_endpoints(self, owner: MemoryTransport) -> None:
        """Stop routing RPC requests, broadcasts and replies to ``owner``."""
        with self._lock:
            self._rpc = {k: e for k, e in self._rpc.items() if e.owner is not owner}
            self._replies = {k: e for k, e in self._replies.items() if e.owner is not owner}
            self._broadcasts = {k: e for k, e in self._broadcasts.items() if e.owner is not owner}

    def disconnect(self, owner: MemoryTransport) -> list[_MemoryDelivery]:
        """Drop everything ``owner`` held; its unsettled tasks go back to their queues."""
        self.disconnect_endpoints(owner)
        with self._lock:
            for queue in self._queues.values():
                queue.consumers = [c for c in queue.consumers if c.owner is not owner]
            returned = self._unsettled.pop(owner, set())
            for delivery in returned:
                delivery._settled = True
                delivery._queue.ready.appendleft(
                    dataclasses.replace(delivery.message, redelivered=True)
                )
            for queue in {delivery._queue for delivery in returned}:
                self._dispatch(queue)
            return list(returned)

    def queue_counts(self, queue_name: str) -> tuple[int, int, int] | None:
        """``(ready, unacknowledged, consumers)`` of ``queue_name``; ``None`` if it does not
        exist (what ``kiwipy top`` shows for the in-memory transport)."""
        with self._lock:
            queue = self._queues.get(queue_name)
            if queue is None:
                return None
            unacknowledged = sum(
                delivery._queue is queue
                for deliveries in self._unsettled.values()
                for delivery in deliveries
            )
            return len(queue.ready), unacknowledged, len(queue.consumers)

    def queue_size(self, queue_name: str) -> int:
        """How many tasks wait in ``queue_name`` (not counting unsettled ones)."""
        with self._lock:
            queue = self._queues.get(queue_name)
            return len(queue.ready) if queue else 0


class _MemorySubscription(Subscription):
    def __init__(self, cancel: Any) -> None:
        self._cancel = cancel
        self._cancelled = False

    async def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._cancel()


class MemoryTransport(Transport):
    """A transport to the in-memory broker named by the URL (``memory://NAME``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._broker = get_broker(urllib.parse.urlsplit(settings.url).netloc)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._tasks = OwnedTasks(_LOGGER)
        self._message_tasks: set[asyncio.Task[None]] = set()
        self._close_callbacks: list[CloseCallback] = []

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._closed:
            return
        await self._drain()
        self._closed = True
        for delivery in self._broker.disconnect(self):
            delivery.went_stale()
        await self._tasks.close()
        for callback in self._close_callbacks:
            callback(None)

    async def _drain(self) -> None:
        """Let requests and broadcasts already delivered to us be handled before closing."""
        self._broker.disconnect_endpoints(self)
        await asyncio.sleep(0)  # handlers scheduled from other threads start now
        running = self._message_tasks - {asyncio.current_task()}
        if running:
            await asyncio.wait(running, timeout=_DRAIN_TIMEOUT)

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def server_properties(self) -> dict[str, Any]:
        return {"product": "kiwipy in-memory broker", "broker": self._broker.name}

    def add_close_callback(self, callback: CloseCallback) -> None:
        self._close_callbacks.append(callback)

    def _spawn(self, coro: Coroutine[Any, Any, None], *, message: bool = False) -> None:
        """Run ``coro`` on this transport's loop; safe to call from any thread.

        ``message`` marks a handler of an RPC request, broadcast or reply, which a graceful
        close lets finish.
        """
        loop = self._loop
        if self._closed or loop is None or loop.is_closed():
            coro.close()
            return
        try:
            loop.call_soon_threadsafe(self._start, coro, message)
        except RuntimeError:  # the loop closed in between
            coro.close()

    def _start(self, coro: Coroutine[Any, Any, None], message: bool) -> None:
        if self._closed:
            coro.close()
            return
        task = self._tasks.spawn(coro, "Handler")
        if message:
            self._message_tasks.add(task)
            task.add_done_callback(self._message_tasks.discard)

    def _ensure_open(self) -> None:
        if self._closed:
            raise CommunicatorClosed("The in-memory transport is closed")

    # -- tasks ---------------------------------------------------------------------------------

    async def declare_task_queue(self, queue: str) -> None:
        self._ensure_open()
        self._broker.declare_queue(queue)

    async def publish_task(self, queue: str, message: Message) -> None:
        self._ensure_open()
        self._broker.publish_task(queue, message)

    async def consume_tasks(
        self, queue: str, handler: DeliveryHandler, *, prefetch_count: int
    ) -> Subscription:
        self._ensure_open()
        consumer = _Consumer(self, handler, prefetch_count)
        self._broker.add_consumer(queue, consumer)
        return _MemorySubscription(lambda: self._broker.remove_consumer(queue, consumer))

    async def get_task(self, queue: str) -> Delivery | None:
        self._ensure_open()
        return self._broker.get(queue, self)

    # -- rpc, broadcasts, replies --------------------------------------------------------------

    async def bind_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        self._ensure_open()
        endpoint = _Endpoint(self, handler)
        self._broker.bind_rpc(identifier, endpoint)
        return _MemorySubscription(lambda: self._broker.unbind_rpc(identifier, endpoint))

    async def publish_rpc(self, identifier: str, message: Message) -> None:
        self._ensure_open()
        self._broker.publish_rpc(identifier, message)

    async def publish_broadcast(self, message: Message) -> None:
        self._ensure_open()
        self._broker.publish_broadcast(message)

    async def subscribe_broadcasts(self, handler: MessageHandler) -> Subscription:
        self._ensure_open()
        endpoint = _Endpoint(self, handler)
        self._broker.subscribe_broadcasts(endpoint)
        return _MemorySubscription(lambda: self._broker.unsubscribe_broadcasts(endpoint))

    async def open_reply_queue(self, handler: MessageHandler) -> str:
        self._ensure_open()
        address = f"{self._settings.message_exchange}-reply-{uuid.uuid4()}"
        self._broker.open_reply_queue(address, _Endpoint(self, handler))
        return address

    async def publish_reply(self, reply_to: str, message: Message) -> None:
        self._ensure_open()
        self._broker.publish_reply(reply_to, message)
