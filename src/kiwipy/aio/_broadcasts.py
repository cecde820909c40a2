"""Broadcasts: one-to-many events, filtered on the receiving side.

Each subscriber has its own mailbox and delivery task, so it sees broadcasts in arrival order
(per-sender order holds) and a slow subscriber delays nobody else.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from kiwipy import messages
from kiwipy.aio._core import Core
from kiwipy.exceptions import DuplicateSubscriberIdentifier, MessageError
from kiwipy.observe import BROADCAST, Outgoing
from kiwipy.transports.base import Message, Subscription

__all__ = ("BroadcastSubscriber", "Broadcasts")

_LOGGER = logging.getLogger(__name__)

BroadcastSubscriber = Callable[[Any, Any, Any, Any, Any], Any]


class _Mailbox:
    def __init__(self, core: Core, subscriber: BroadcastSubscriber) -> None:
        self._core = core
        self._subscriber = subscriber
        self._inbox: asyncio.Queue[messages.BroadcastEnvelope] = asyncio.Queue()
        self._task = core.spawn(self._deliver(), "Broadcast delivery")

    def put(self, envelope: messages.BroadcastEnvelope) -> None:
        self._inbox.put_nowait(envelope)

    def close(self) -> None:
        self._task.cancel()

    async def _deliver(self) -> None:
        while True:
            envelope = await self._inbox.get()
            try:
                await self._core.invoke(
                    self._subscriber,
                    self._core.target,
                    envelope.body,
                    envelope.sender,
                    envelope.subject,
                    envelope.correlation_id,
                )
            except Exception:
                _LOGGER.exception("Exception in broadcast subscriber")


class Broadcasts:
    """The broadcast side of one communicator: one transport subscription while anyone listens."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._mailboxes: dict[Any, _Mailbox] = {}
        self._subscription: Subscription | None = None

    async def add_subscriber(self, subscriber: BroadcastSubscriber, identifier: Any) -> Any:
        self._core.ensure_open()
        identifier = identifier if identifier is not None else uuid.uuid4().hex
        if identifier in self._mailboxes:
            raise DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'")
        self._mailboxes[identifier] = _Mailbox(self._core, subscriber)
        if self._subscription is None:
            try:
                self._subscription = await self._core.transport.subscribe_broadcasts(
                    self._on_message
                )
            except BaseException:
                self._mailboxes.pop(identifier).close()
                raise
        return identifier

    async def remove_subscriber(self, identifier: Any) -> None:
        mailbox = self._mailboxes.pop(identifier, None)
        if mailbox is None:
            raise ValueError(f"Broadcast subscriber '{identifier}' unknown")
        mailbox.close()
        if not self._mailboxes and self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.cancel()

    async def send(self, envelope: messages.BroadcastEnvelope, timeout: float | None) -> bool:
        self._core.ensure_open()
        await self._core.bounded_send(self._publish, (envelope,), timeout, "A broadcast")
        return True

    async def _publish(self, envelope: messages.BroadcastEnvelope) -> None:
        data, content_type = self._core.encode(messages.broadcast_body(envelope))
        message = Message(data, content_type)
        if (hooks := self._core.hooks) is not None:
            outgoing = Outgoing(BROADCAST, None, _text_or_none(envelope.correlation_id))
            await hooks.publish(outgoing, self._core.transport.publish_broadcast, message)
        else:
            await self._core.transport.publish_broadcast(message)

    async def _on_message(self, message: Message) -> None:
        # No await before the hand-off: mailboxes fill in arrival order.
        if (hooks := self._core.hooks) is not None:
            hooks.received(BROADCAST, None, message)
        try:
            data = self._core.codec.decode(message.body, message.content_type)
            envelope = messages.parse_broadcast(data)
        except MessageError as exc:
            _LOGGER.warning("Dropped an undecodable broadcast: %s", exc)
            return
        for mailbox in list(self._mailboxes.values()):
            mailbox.put(envelope)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
