"""The ``local://`` transport: a client of the local broker (:mod:`kiwipy.broker`).

One Unix-socket connection per transport (:mod:`._link`). Deliveries, RPC requests, broadcasts
and replies arrive unasked. When the connection drops (the broker was killed, or restarted),
deliveries in hand go stale, the link reconnects (starting the broker again if needed) and this
transport restores what it had: queues, consumers, RPC endpoints, broadcast subscriptions and
its reply address. Requests that were not answered (a publish whose confirm never came) are sent
again: at least once.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from kiwipy._owned import OwnedTasks
from kiwipy.broker._wire import StatePaths, state_directory
from kiwipy.exceptions import DuplicateSubscriberIdentifier, InvalidStateError
from kiwipy.settings import Settings
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
from kiwipy.transports.local._link import BrokerLink

__all__ = ("LocalTransport",)

_LOGGER = logging.getLogger(__name__)
_DRAIN_TIMEOUT = 5.0


class LocalDelivery(Delivery):
    def __init__(self, transport: LocalTransport, header: dict[str, Any], body: bytes) -> None:
        self.message = _to_message(header, body)
        self._transport = transport
        self._generation = transport._link.generation
        self._tag = int(header["dtag"])
        self._epoch = header["epoch"]
        self._settled = False
        self._stale_callbacks: list[Callable[[], None]] = []

    @property
    def settled(self) -> bool:
        return self._settled or self.stale

    @property
    def stale(self) -> bool:
        return self._generation != self._transport._link.generation or self._transport.is_closed

    def add_stale_callback(self, callback: Callable[[], None]) -> None:
        if self.stale and not self._settled:
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._stale_callbacks.append(callback)

    def went_stale(self) -> None:
        callbacks, self._stale_callbacks = self._stale_callbacks, []
        for callback in callbacks:
            callback()

    async def ack(self) -> None:
        self._settle({"op": "ack"})

    async def reject(self, *, requeue: bool) -> None:
        self._settle({"op": "reject", "requeue": requeue})

    def _settle(self, header: dict[str, Any]) -> None:
        if self.settled:
            return
        self._settled = True
        self._transport._unsettled.discard(self)
        self._transport._link.send_soon({**header, "dtag": self._tag, "epoch": self._epoch})


class _Subscription(Subscription):
    def __init__(self, cancel: Callable[[], Any]) -> None:
        self._cancel = cancel
        self._cancelled = False

    async def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            await self._cancel()


class LocalTransport(Transport):
    """A :class:`~kiwipy.transports.base.Transport` to the local broker of a state directory."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        parts = urllib.parse.urlsplit(settings.url)
        options = dict(urllib.parse.parse_qsl(parts.query))
        self._paths = StatePaths(state_directory(parts.netloc, urllib.parse.unquote(parts.path)))
        # RPC identifiers and broadcasts are per message exchange, as on RabbitMQ.
        self._space = settings.message_exchange
        self._tasks = OwnedTasks(_LOGGER)
        self._link = BrokerLink(
            settings,
            self._paths,
            options,
            self._tasks,
            on_frame=self._received,
            on_lost=self._deliveries_went_stale,
            restore=self._restore,
        )
        self._call = self._link.call
        self._message_tasks: set[asyncio.Task[Any]] = set()
        self._unsettled: set[LocalDelivery] = set()
        self._declared: set[str] = set()
        self._consumers: dict[str, tuple[str, DeliveryHandler, int]] = {}
        self._rpc: dict[str, tuple[str, MessageHandler]] = {}
        self._broadcasts: dict[str, MessageHandler] = {}
        self._reply: tuple[str, MessageHandler] | None = None
        self._close_callbacks: list[CloseCallback] = []

    def __repr__(self) -> str:
        return f"LocalTransport({str(self._paths.directory)!r})"

    # -- the link ------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._link.connect()

    def _deliveries_went_stale(self) -> None:
        unsettled, self._unsettled = self._unsettled, set()
        for delivery in unsettled:
            delivery.went_stale()

    async def _restore(self) -> None:
        for queue in list(self._declared):
            await self._call({"op": "declare", "queue": queue}, direct=True)
        for tag, (queue, _handler, prefetch) in list(self._consumers.items()):
            consume = {"op": "consume", "queue": queue, "tag": tag, "prefetch": prefetch}
            await self._call(consume, direct=True)
        for key, (identifier, _endpoint) in list(self._rpc.items()):
            try:
                await self._call(_bind_rpc(key, identifier), direct=True)
            except DuplicateSubscriberIdentifier as exc:
                _LOGGER.error("Lost RPC endpoint %r on reconnecting: %s", identifier, exc)
                del self._rpc[key]
        for sid in list(self._broadcasts):
            await self._call({"op": "subscribe", "space": self._space, "sid": sid}, direct=True)
        if self._reply is not None:
            await self._call({"op": "bind_reply", "address": self._reply[0]}, direct=True)

    def _received(self, header: dict[str, Any], body: bytes) -> None:
        op = header.get("op")
        if op == "deliver":
            self._on_delivery(header, body)
        elif op == "message":
            self._on_message(header, body)

    def _on_delivery(self, header: dict[str, Any], body: bytes) -> None:
        consumer = self._consumers.get(str(header.get("tag")))
        delivery = LocalDelivery(self, header, body)
        self._unsettled.add(delivery)
        if consumer is None:  # cancelled meanwhile: give it back
            delivery._settle({"op": "reject", "requeue": True})
            return
        self._tasks.spawn(consumer[1](delivery), "Task handler")

    def _on_message(self, header: dict[str, Any], body: bytes) -> None:
        message = _to_message(header, body)
        kind = header.get("kind")
        if kind == "reply":
            if self._reply is not None:
                _run_inline(self._reply[1](message))
            return
        handler: MessageHandler | None
        if kind == "rpc":
            endpoint = self._rpc.get(str(header.get("key")))
            handler = endpoint[1] if endpoint else None
        else:
            handler = self._broadcasts.get(str(header.get("sid")))
        if handler is not None:
            task = self._tasks.spawn(handler(message), "Message handler")
            self._message_tasks.add(task)
            task.add_done_callback(self._message_tasks.discard)

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._link.closed:
            return
        running = self._message_tasks - {asyncio.current_task()}
        self._rpc.clear()
        self._broadcasts.clear()
        if running:
            await asyncio.wait(running, timeout=_DRAIN_TIMEOUT)
        await self._link.close()
        await self._tasks.close()
        for callback in self._close_callbacks:
            callback(None)

    @property
    def is_closed(self) -> bool:
        return self._link.closed

    @property
    def is_connected(self) -> bool:
        return self._link.is_connected

    @property
    def server_properties(self) -> dict[str, Any]:
        return dict(self._link.server_properties)

    def add_close_callback(self, callback: CloseCallback) -> None:
        self._close_callbacks.append(callback)

    def add_link_callback(self, callback: LinkCallback) -> None:
        self._link.link_callbacks.append(callback)

    # -- tasks ---------------------------------------------------------------------------------

    async def declare_task_queue(self, queue: str) -> None:
        if queue not in self._declared:
            await self._call({"op": "declare", "queue": queue})
            self._declared.add(queue)

    async def publish_task(self, queue: str, message: Message) -> None:
        await self._call({"op": "publish", "queue": queue, "m": _properties(message)}, message.body)

    async def consume_tasks(
        self, queue: str, handler: DeliveryHandler, *, prefetch_count: int
    ) -> Subscription:
        await self.declare_task_queue(queue)
        tag = uuid.uuid4().hex
        self._consumers[tag] = (queue, handler, prefetch_count)
        try:
            await self._call(
                {"op": "consume", "queue": queue, "tag": tag, "prefetch": prefetch_count}
            )
        except BaseException:
            self._consumers.pop(tag, None)
            raise

        async def cancel() -> None:
            self._consumers.pop(tag, None)
            if self.is_connected:
                await self._call({"op": "cancel", "queue": queue, "tag": tag})

        return _Subscription(cancel)

    async def get_task(self, queue: str) -> Delivery | None:
        await self.declare_task_queue(queue)
        answer, body = await self._call({"op": "get", "queue": queue})
        if answer.get("empty"):
            return None
        delivery = LocalDelivery(self, answer, body)
        self._unsettled.add(delivery)
        return delivery

    async def queue_stats(self) -> dict[str, dict[str, int]]:
        """``{queue: {"ready", "unacked", "consumers"}}`` for every queue the broker has."""
        answer, _ = await self._call({"op": "stats"})
        queues: dict[str, dict[str, int]] = answer.get("queues", {})
        return queues

    # -- rpc, broadcasts, replies --------------------------------------------------------------

    async def bind_rpc(self, identifier: str, handler: MessageHandler) -> Subscription:
        key = f"{self._space}/{identifier}"
        if key in self._rpc:
            raise DuplicateSubscriberIdentifier(f"RPC identifier {identifier!r} is already bound")
        await self._call(_bind_rpc(key, identifier))
        self._rpc[key] = (identifier, handler)

        async def unbind() -> None:
            self._rpc.pop(key, None)
            if self.is_connected:
                await self._call({"op": "unbind_rpc", "key": key})

        return _Subscription(unbind)

    async def publish_rpc(self, identifier: str, message: Message) -> None:
        key = f"{self._space}/{identifier}"
        header = {"op": "rpc", "key": key, "identifier": identifier, "m": _properties(message)}
        await self._call(header, message.body)

    async def publish_broadcast(self, message: Message) -> None:
        header = {"op": "broadcast", "space": self._space, "m": _properties(message)}
        await self._call(header, message.body)

    async def subscribe_broadcasts(self, handler: MessageHandler) -> Subscription:
        sid = uuid.uuid4().hex
        self._broadcasts[sid] = handler
        await self._call({"op": "subscribe", "space": self._space, "sid": sid})

        async def unsubscribe() -> None:
            self._broadcasts.pop(sid, None)
            if self.is_connected:
                await self._call({"op": "unsubscribe", "space": self._space, "sid": sid})

        return _Subscription(unsubscribe)

    async def open_reply_queue(self, handler: MessageHandler) -> str:
        if self._reply is not None:
            raise InvalidStateError("The reply queue is already open")
        address = f"{self._space}-reply-{uuid.uuid4()}"
        self._reply = (address, handler)
        await self._call({"op": "bind_reply", "address": address})
        return address

    async def publish_reply(self, reply_to: str, message: Message) -> None:
        await self._call(_reply_header(reply_to, message), message.body)

    async def publish_final_reply(self, reply_to: str, message: Message) -> None:
        # Sent at once, with no wait for an answer (a reply without a request id gets none).
        if not self._link.is_connected:
            await self.publish_reply(reply_to, message)  # waits for the link to come back
            return
        self._link.send(_reply_header(reply_to, message), message.body)

    async def reply_and_ack(self, delivery: Delivery, reply_to: str, message: Message) -> None:
        # The broker acts on a connection's frames in order: the reply, then the ack, in one
        # write at the end of this loop turn, with no wait for the reply's answer (a reply
        # without a request id gets none).
        if isinstance(delivery, LocalDelivery) and not delivery.settled:
            self._link.send_soon(_reply_header(reply_to, message), message.body)
            await delivery.ack()
        else:
            await super().reply_and_ack(delivery, reply_to, message)


def _reply_header(reply_to: str, message: Message) -> dict[str, Any]:
    return {"op": "reply", "address": reply_to, "m": _properties(message)}


def _run_inline(handler: Coroutine[Any, Any, None]) -> None:
    """Run a handler that never awaits (a reply handler: Transport.open_reply_queue) to its
    end, here and now."""
    try:
        handler.send(None)
    except StopIteration:
        return
    except Exception:
        _LOGGER.exception("The reply handler failed")
        return
    handler.close()
    _LOGGER.error("The reply handler awaited: it was stopped (a reply handler must not await)")


def _bind_rpc(key: str, identifier: str) -> dict[str, Any]:
    return {"op": "bind_rpc", "key": key, "identifier": identifier}


def _properties(message: Message) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if message.content_type is not None:
        properties["ct"] = message.content_type
    if message.correlation_id is not None:
        properties["cid"] = message.correlation_id
    if message.reply_to is not None:
        properties["rt"] = message.reply_to
    if message.headers:
        properties["h"] = dict(message.headers)
    if message.persistent:
        properties["p"] = True
    return properties


def _to_message(header: dict[str, Any], body: bytes) -> Message:
    properties = header.get("m") or {}
    return Message(
        body=body,
        content_type=properties.get("ct"),
        correlation_id=properties.get("cid"),
        reply_to=properties.get("rt"),
        headers=properties.get("h") or {},
        persistent=bool(properties.get("p")),
        redelivered=bool(header.get("redelivered")),
    )
