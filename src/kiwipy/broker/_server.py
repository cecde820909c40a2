"""The local broker: routes tasks, RPC requests, broadcasts and replies between its clients.

One asyncio loop serves every connection. Tasks live in :class:`~._store.Store` and, for speed,
in memory (the ready queues); a task handed to a consumer is *leased* to that consumer's
connection until it is settled, and goes back to the front of its queue the moment that
connection closes, however it closed (kill -9 included): no heartbeat to wait for.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import logging
import os
from typing import Any

from kiwipy.broker._store import Store
from kiwipy.broker._wire import (
    PRODUCT,
    PROTOCOL_VERSION,
    FrameError,
    FrameProtocol,
    encode_frame,
    encode_ok,
)

__all__ = ("Broker", "ClientConnection")

_LOGGER = logging.getLogger("kiwipy.broker")

#: Unsent bytes to a client above which broadcasts to it are dropped (a slow subscriber must
#: not grow the broker's memory without bound); tasks are bounded by prefetch instead.
BROADCAST_HIGH_WATER = 8 * 1024 * 1024
#: Longest wait before a write that no confirm waits for (an ack, a delivery count) is committed.
_LAZY_COMMIT_S = 0.05
_PROPERTIES = json.JSONEncoder(separators=(",", ":"))


@dataclasses.dataclass(eq=False)
class Task:
    id: int
    queue: str
    properties: dict[str, Any]
    body: bytes
    deliveries: int = 0
    #: Whether a delivery count is on disk: from then on, ``redelivered`` survives a crash.
    counted: bool = False


@dataclasses.dataclass(eq=False)
class Consumer:
    connection: ClientConnection
    tag: str
    queue: str
    prefetch: int
    unsettled: int = 0

    def has_credit(self) -> bool:
        return self.prefetch == 0 or self.unsettled < self.prefetch


@dataclasses.dataclass(eq=False)
class Queue:
    name: str
    ready: collections.deque[Task] = dataclasses.field(default_factory=collections.deque)
    consumers: list[Consumer] = dataclasses.field(default_factory=list)
    turn: itertools.count[int] = dataclasses.field(default_factory=itertools.count)


class Broker:
    """The routing state of one broker process."""

    def __init__(self, store: Store, directory: str, idle_timeout: float, poll_us: int = 0) -> None:
        self.store = store
        self.epoch = store.epoch
        self.directory = directory
        #: How long its loop polls before sleeping (told to clients in the hello's answer).
        self.poll_us = poll_us
        self._idle_timeout = idle_timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self.stopped = asyncio.Event()
        self.queues: dict[str, Queue] = {name: Queue(name) for name in store.queues()}
        for task_id, queue, props, body, deliveries in store.tasks():
            owner = self.queues.setdefault(queue, Queue(queue))
            task = Task(task_id, queue, json.loads(props), body, deliveries, deliveries > 0)
            owner.ready.append(task)
        self.rpc: dict[str, ClientConnection] = {}
        self.broadcasts: dict[str, dict[tuple[ClientConnection, str], None]] = {}
        self.replies: dict[str, ClientConnection] = {}
        self.connections: set[ClientConnection] = set()
        self._loop = asyncio.get_running_loop()
        #: Frames that wait for the next commit, with their connection.
        self._after_commit: list[tuple[ClientConnection, bytes]] = []
        #: Tasks whose first delivery count the next commit writes.
        self._counting: list[Task] = []
        self._flush_soon: asyncio.Handle | None = None
        self._flush_later: asyncio.TimerHandle | None = None
        self._arm_idle_timer()

    # -- connections ---------------------------------------------------------------------------

    def connected(self, connection: ClientConnection) -> None:
        self.connections.add(connection)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def disconnected(self, connection: ClientConnection) -> None:
        self.connections.discard(connection)
        self.rpc = {key: owner for key, owner in self.rpc.items() if owner is not connection}
        self.replies = {key: c for key, c in self.replies.items() if c is not connection}
        for subscribers in self.broadcasts.values():
            for key in [key for key in subscribers if key[0] is connection]:
                del subscribers[key]
        for queue in self.queues.values():
            queue.consumers = [c for c in queue.consumers if c.connection is not connection]
        self._return_leases(connection)
        self._arm_idle_timer()

    def _return_leases(self, connection: ClientConnection) -> None:
        """Back to the front of their queues, in their order, marked redelivered."""
        leases = sorted(connection.leases.values(), key=lambda lease: lease[0].id, reverse=True)
        connection.leases.clear()
        for task, _consumer in leases:
            self.queues[task.queue].ready.appendleft(task)
        for name in {task.queue for task, _ in leases}:
            self.dispatch(self.queues[name])

    def _arm_idle_timer(self) -> None:
        if self.connections or self._idle_timeout <= 0 or self._idle_timer is not None:
            return
        self._idle_timer = self._loop.call_later(self._idle_timeout, self._idle)

    def _idle(self) -> None:
        if not self.connections:
            _LOGGER.info("No client for %.0f s: exiting (state is on disk)", self._idle_timeout)
            self.stopped.set()

    # -- commits -------------------------------------------------------------------------------

    def confirm_after_commit(self, connection: ClientConnection, request: int) -> None:
        """Answer ``request`` once what it wrote is committed: at the end of this loop turn,
        with whatever else the turn wrote (group commit)."""
        self._defer(connection, encode_ok(request))

    def send_after_commit(
        self, connection: ClientConnection, header: dict[str, Any], body: bytes = b""
    ) -> None:
        """Send a delivery once its count is committed (later deliveries to that connection
        wait too, so that they keep their order)."""
        connection.deferred = True
        self._defer(connection, encode_frame(header, body))

    def _defer(self, connection: ClientConnection, frame: bytes) -> None:
        self._after_commit.append((connection, frame))
        if self._flush_soon is None:
            self._flush_soon = self._loop.call_soon(self.flush)

    def commit_lazily(self) -> None:
        """Commit soon, but no sooner than a confirm needs (acks and delivery counts)."""
        if self._flush_soon is None and self._flush_later is None:
            self._flush_later = self._loop.call_later(_LAZY_COMMIT_S, self.flush)

    def flush(self) -> None:
        """Commit, then confirm every publish the commit covers."""
        for handle in (self._flush_soon, self._flush_later):
            if handle is not None:
                handle.cancel()
        self._flush_soon = self._flush_later = None
        self.store.commit()
        for task in self._counting:
            task.counted = True
        self._counting.clear()
        frames, self._after_commit = self._after_commit, []
        batches: dict[ClientConnection, list[bytes]] = {}
        for connection, frame in frames:
            connection.deferred = False
            batches.setdefault(connection, []).append(frame)
        for connection, batch in batches.items():  # one write each
            connection.write(batch[0] if len(batch) == 1 else b"".join(batch))

    # -- tasks ---------------------------------------------------------------------------------

    def dispatch(self, queue: Queue) -> None:
        while queue.ready:
            consumer = self._next_consumer(queue)
            if consumer is None:
                return
            task = queue.ready.popleft()
            consumer.unsettled += 1
            self.deliver(consumer.connection, task, consumer)

    def deliver(self, connection: ClientConnection, task: Task, consumer: Consumer) -> None:
        """Send ``task`` to ``consumer``: at once, unless this is the first delivery of a
        stored task, which waits for the commit of its count.

        A task published since the last commit goes out at once (as RabbitMQ delivers before
        its fsync), so that the worker runs it while the broker commits: if the broker dies
        before the commit, the task was never stored nor confirmed, so there is no count to
        lose (its publisher sends it again). A stored task's first delivery waits for the
        commit of its count, so that ``redelivered`` is true after a broker crash too; once a
        count is on disk, that holds whatever happens, so a redelivery (a worker killed) goes
        out at once.
        """
        pending = self.store.pending(task.id)
        header = {"op": "deliver", "tag": consumer.tag, **self.lease(connection, task, consumer)}
        if (pending or task.counted) and not connection.deferred:
            connection.send(header, task.body)
        else:
            self.send_after_commit(connection, header, task.body)

    def lease(
        self, connection: ClientConnection, task: Task, consumer: Consumer | None
    ) -> dict[str, Any]:
        """Hand ``task`` to ``connection`` until it settles it or closes; the delivery's fields
        (see :meth:`deliver` for when they may go out)."""
        redelivered = task.deliveries > 0
        task.deliveries += 1
        if not task.counted:
            self._counting.append(task)
        self.store.delivered(task.id)
        connection.leases[task.id] = (task, consumer)
        return {
            "dtag": task.id,
            "epoch": self.epoch,
            "redelivered": redelivered,
            "m": task.properties,
        }

    def _next_consumer(self, queue: Queue) -> Consumer | None:
        count = len(queue.consumers)
        for _ in range(count):
            consumer = queue.consumers[next(queue.turn) % count]
            if consumer.has_credit():
                return consumer
        return None

    def settle(self, connection: ClientConnection, task_id: int, requeue: bool) -> None:
        lease = connection.leases.pop(task_id, None)
        if lease is None:  # stale (another epoch or connection) or settled already: a no-op
            return
        task, consumer = lease
        if consumer is not None:
            consumer.unsettled -= 1
        queue = self.queues[task.queue]
        if requeue:
            queue.ready.appendleft(task)
        else:
            self.store.remove(task.id)
            self.commit_lazily()
        self.dispatch(queue)


class ClientConnection(FrameProtocol):
    """One client: its frames in, its deliveries and answers out, and its leases."""

    def __init__(self, broker: Broker) -> None:
        super().__init__()
        self.broker = broker
        self.leases: dict[int, tuple[Task, Consumer | None]] = {}
        #: Whether a delivery to this connection waits for the next commit.
        self.deferred = False
        self._greeted = False
        self._dropped_broadcasts = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.broker.connected(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.broker.disconnected(self)

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        self.write(encode_frame(header, body))

    def write(self, frames: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frames)

    def send_broadcast(self, header: dict[str, Any], body: bytes) -> None:
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > BROADCAST_HIGH_WATER:
            self._dropped_broadcasts += 1
            if self._dropped_broadcasts in (1, 100, 10_000):
                _LOGGER.warning(
                    "A broadcast subscriber reads too slowly: %d broadcasts dropped for it",
                    self._dropped_broadcasts,
                )
            return
        self.send(header, body)

    def frame_refused(self, error: FrameError) -> None:
        self._refuse("frame", str(error))

    def _refuse(self, kind: str, text: str) -> None:
        _LOGGER.warning("Closing a client connection: %s", text)
        self.send({"op": "err", "id": None, "type": kind, "text": text})
        if self.transport is not None:
            self.transport.close()

    def frame_received(self, header: dict[str, Any], body: bytes) -> None:
        op = header.get("op")
        if not self._greeted and op != "hello":
            self._refuse("protocol", "The first frame must be hello")
            return
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            self._answer(header, error=("bad_request", f"Unknown operation {op!r}"))
            return
        handler(header, body)

    def _answer(
        self, header: dict[str, Any], error: tuple[str, str] | None = None, **fields: Any
    ) -> None:
        request = header.get("id")
        if error is None:
            self.send({"op": "ok", "id": request, **fields})
        else:
            self.send({"op": "err", "id": request, "type": error[0], "text": error[1]})

    # -- operations ----------------------------------------------------------------------------

    def _op_hello(self, header: dict[str, Any], body: bytes) -> None:
        version = header.get("version")
        if version != PROTOCOL_VERSION:
            text = (
                f"This broker speaks protocol {PROTOCOL_VERSION}, the client {version}: "
                "use the same kiwipy version, or stop the broker (it restarts on demand)"
            )
            self._answer(header, error=("version", text))
            if self.transport is not None:
                self.transport.close()
            return
        self._greeted = True
        self._answer(
            header,
            product=PRODUCT,
            version=str(PROTOCOL_VERSION),
            protocol=PROTOCOL_VERSION,
            pid=os.getpid(),
            epoch=self.broker.epoch,
            directory=self.broker.directory,
            poll_us=self.broker.poll_us,
        )

    def _op_declare(self, header: dict[str, Any], body: bytes) -> None:
        name = str(header["queue"])
        if name not in self.broker.queues:
            self.broker.queues[name] = Queue(name)
            self.broker.store.declare(name)
            self.broker.confirm_after_commit(self, header["id"])
            return
        self._answer(header)

    def _op_publish(self, header: dict[str, Any], body: bytes) -> None:
        queue = self.broker.queues.get(str(header["queue"]))
        if queue is None:
            text = f"No task queue '{header['queue']}' to route the task to"
            self._answer(header, error=("unroutable", text))
            return
        properties = header.get("m") or {}
        # "again": the client sends it a second time, its first try's answer lost with the
        # connection: that copy may have been stored, or handed to a worker before its commit,
        # so this one is delivered as a redelivery (a possible duplicate, flagged).
        seen = 1 if header.get("again") else 0
        encoded = _PROPERTIES.encode(properties)
        task_id = self.broker.store.add(queue.name, encoded, body, seen)
        queue.ready.append(Task(task_id, queue.name, properties, body, deliveries=seen))
        self.broker.dispatch(queue)
        self.broker.confirm_after_commit(self, header["id"])

    def _op_consume(self, header: dict[str, Any], body: bytes) -> None:
        name = str(header["queue"])
        queue = self.broker.queues.setdefault(name, Queue(name))
        consumer = Consumer(self, str(header["tag"]), name, int(header.get("prefetch") or 0))
        queue.consumers.append(consumer)
        self._answer(header)
        self.broker.dispatch(queue)

    def _op_cancel(self, header: dict[str, Any], body: bytes) -> None:
        queue = self.broker.queues.get(str(header["queue"]))
        if queue is not None:
            tag = str(header["tag"])
            queue.consumers = [
                c for c in queue.consumers if not (c.connection is self and c.tag == tag)
            ]
        self._answer(header)

    def _op_get(self, header: dict[str, Any], body: bytes) -> None:
        queue = self.broker.queues.get(str(header["queue"]))
        if queue is None or not queue.ready:
            self._answer(header, empty=True)
            return
        task = queue.ready.popleft()
        fields = self.broker.lease(self, task, None)
        answer = {"op": "ok", "id": header.get("id"), "empty": False, **fields}
        self.broker.send_after_commit(self, answer, task.body)

    def _op_ack(self, header: dict[str, Any], body: bytes) -> None:
        if header.get("epoch") == self.broker.epoch:
            self.broker.settle(self, int(header["dtag"]), requeue=False)

    def _op_reject(self, header: dict[str, Any], body: bytes) -> None:
        if header.get("epoch") == self.broker.epoch:
            self.broker.settle(self, int(header["dtag"]), requeue=bool(header.get("requeue")))

    def _op_bind_rpc(self, header: dict[str, Any], body: bytes) -> None:
        key = str(header["key"])
        owner = self.broker.rpc.get(key)
        if owner is not None and owner is not self:
            text = f"RPC identifier '{header.get('identifier')}' is bound by another client"
            self._answer(header, error=("duplicate", text))
            return
        self.broker.rpc[key] = self
        self._answer(header)

    def _op_unbind_rpc(self, header: dict[str, Any], body: bytes) -> None:
        key = str(header["key"])
        if self.broker.rpc.get(key) is self:
            del self.broker.rpc[key]
        self._answer(header)

    def _op_rpc(self, header: dict[str, Any], body: bytes) -> None:
        owner = self.broker.rpc.get(str(header["key"]))
        if owner is None:
            text = f"No RPC subscriber with identifier '{header.get('identifier')}'"
            self._answer(header, error=("unroutable", text))
            return
        owner.send({"op": "message", "kind": "rpc", "key": header["key"], "m": header["m"]}, body)
        self._answer(header)

    def _op_subscribe(self, header: dict[str, Any], body: bytes) -> None:
        subscribers = self.broker.broadcasts.setdefault(str(header["space"]), {})
        subscribers[(self, str(header["sid"]))] = None
        self._answer(header)

    def _op_unsubscribe(self, header: dict[str, Any], body: bytes) -> None:
        subscribers = self.broker.broadcasts.get(str(header["space"]), {})
        subscribers.pop((self, str(header["sid"])), None)
        self._answer(header)

    def _op_broadcast(self, header: dict[str, Any], body: bytes) -> None:
        subscribers = self.broker.broadcasts.get(str(header["space"]), {})
        for connection, sid in list(subscribers):
            message = {"op": "message", "kind": "broadcast", "sid": sid, "m": header["m"]}
            connection.send_broadcast(message, body)
        self._answer(header)

    def _op_bind_reply(self, header: dict[str, Any], body: bytes) -> None:
        self.broker.replies[str(header["address"])] = self
        self._answer(header)

    def _op_reply(self, header: dict[str, Any], body: bytes) -> None:
        owner = self.broker.replies.get(str(header["address"]))
        if owner is not None:
            message = {"op": "message", "kind": "reply", "m": header["m"]}
            owner.send(message, body)
        if "id" in header:  # a task's reply sent with its ack has none: nobody waits for it
            self._answer(header)

    def _op_bye(self, header: dict[str, Any], body: bytes) -> None:
        """A graceful close: free everything now, so that when the client's close returns its
        RPC identifiers are free and its unsettled tasks back in their queues."""
        self.broker.disconnected(self)
        self._answer(header)

    def _op_stats(self, header: dict[str, Any], body: bytes) -> None:
        unsettled: collections.Counter[str] = collections.Counter()
        for connection in self.broker.connections:
            for task, _consumer in connection.leases.values():
                unsettled[task.queue] += 1
        queues = {
            name: {
                "ready": len(queue.ready),
                "unacked": unsettled[name],
                "consumers": len(queue.consumers),
            }
            for name, queue in self.broker.queues.items()
        }
        self._answer(header, queues=queues)
