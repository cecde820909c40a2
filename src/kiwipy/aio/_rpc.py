"""The RPC side of one communicator: endpoints it owns, and requests it sends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from kiwipy import messages
from kiwipy.aio._core import Core
from kiwipy.aio._futures import follow_pending, is_future
from kiwipy.aio._hooks import Hooks
from kiwipy.exceptions import DuplicateSubscriberIdentifier, MessageError
from kiwipy.observe import RPC, Incoming, Outgoing
from kiwipy.transports.base import Message, Subscription

__all__ = ("Rpc", "RpcSubscriber")

_LOGGER = logging.getLogger(__name__)

RpcSubscriber = Callable[[Any, Any], Any]
_Observed = tuple[Hooks, Incoming]


class Rpc:
    """Owns RPC endpoints (one transport binding each) and sends requests to others'."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._subscriptions: dict[str, Subscription] = {}
        self._identifiers: dict[str, Any] = {}

    async def add_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """Answer RPCs sent to ``identifier``; it must be free on the whole broker."""
        self._core.ensure_open()
        identifier = identifier if identifier is not None else uuid.uuid4().hex
        key = str(identifier)
        if key in self._subscriptions:
            raise DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}'")

        async def on_request(message: Message) -> None:
            if (hooks := self._core.hooks) is not None:
                await self._on_request_observed(hooks, key, subscriber, message)
            else:
                await self._on_request(subscriber, message)

        self._subscriptions[key] = await self._core.transport.bind_rpc(key, on_request)
        self._identifiers[key] = identifier
        return identifier

    async def remove_subscriber(self, identifier: Any) -> None:
        subscription = self._subscriptions.pop(str(identifier), None)
        if subscription is None:
            raise ValueError(f"Unknown subscriber '{identifier}'")
        del self._identifiers[str(identifier)]
        await subscription.cancel()

    async def send(
        self,
        recipient_id: Any,
        msg: Any,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        """Send ``msg`` to the RPC subscriber ``recipient_id``; return the future of its answer.

        ``UnroutableError`` is raised here at once when nobody owns ``recipient_id``.
        ``deadline`` bounds the wait for the answer in seconds (default
        ``settings.rpc_timeout``); ``timeout`` bounds the send itself.
        """
        self._core.ensure_open()
        args = (str(recipient_id), msg, deadline)
        return await self._core.bounded_send(self._send, args, timeout, "An RPC send")

    async def _send(
        self, recipient_id: str, msg: Any, deadline: float | None
    ) -> asyncio.Future[Any]:
        body, content_type = self._core.encode(msg)
        reply_to = await self._core.replies.address()
        if deadline is None:
            deadline = self._core.settings.rpc_timeout
        correlation_id, future = self._core.replies.register(deadline)
        message = Message(body, content_type, correlation_id, reply_to)
        try:
            if (hooks := self._core.hooks) is not None:
                outgoing = Outgoing(RPC, recipient_id, correlation_id)
                publish = functools.partial(self._core.transport.publish_rpc, recipient_id)
                await hooks.publish(outgoing, publish, message, future)
            else:
                await self._core.transport.publish_rpc(recipient_id, message)
        except BaseException:
            self._core.replies.abandon(correlation_id, future)
            raise
        return future

    async def _on_request(
        self, subscriber: RpcSubscriber, message: Message, observed: _Observed | None = None
    ) -> None:
        try:
            request = self._core.codec.decode(message.body, message.content_type)
        except MessageError as exc:
            _LOGGER.warning("Rejected an undecodable RPC request: %s", exc)
            await self._core.send_final_reply(message, messages.exception_reply(exc))
            if observed is not None:
                observed[0].ended(observed[1], exc)
            return
        try:
            result = await self._core.invoke(subscriber, self._core.target, request)
        except Exception as exc:
            await self._core.send_final_reply(message, _rpc_reply(exc=exc))
            if observed is not None:
                observed[0].ended(observed[1], exc)
            return
        if is_future(result):
            # The answer comes later: wait for it in a task of our own, so that this handler
            # (which a graceful close waits for) ends once the subscriber has been called.
            answer = self._answer_later(message, result, observed)
            self._core.spawn(answer, "Answering an RPC")
        else:
            await self._core.send_final_reply(message, messages.result_reply(result))
            if observed is not None:
                observed[0].ended(observed[1], None)

    async def _on_request_observed(
        self, hooks: Hooks, identifier: str, subscriber: RpcSubscriber, message: Message
    ) -> None:
        incoming = hooks.received(RPC, identifier, message)
        hooks.started(incoming)
        await self._on_request(subscriber, message, (hooks, incoming))

    async def _answer_later(
        self, message: Message, future: Any, observed: _Observed | None = None
    ) -> None:
        async def announce_pending() -> None:
            await self._core.announce_pending(message)

        error: BaseException | None = None
        try:
            result = await follow_pending(future, announce_pending)
        except Exception as exc:
            reply = _rpc_reply(exc=exc)
            error = exc
        else:
            reply = messages.result_reply(result)
        await self._core.send_final_reply(message, reply)
        if observed is not None:
            observed[0].ended(observed[1], error)


def _rpc_reply(*, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, concurrent.futures.CancelledError):
        return messages.cancelled_reply("The RPC was cancelled")
    return messages.exception_reply(exc)
