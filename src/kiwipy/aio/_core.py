"""What the parts of the asyncio communicator share: transport, codec, replies, owned tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from kiwipy import messages, observe
from kiwipy._owned import OwnedTasks
from kiwipy.aio._futures import Invoker
from kiwipy.aio._hooks import Hooks
from kiwipy.aio._replies import ReplyFutures
from kiwipy.aio._window import SendWindow
from kiwipy.codecs import MessageCodec
from kiwipy.exceptions import CommunicatorClosed, ConnectionLost, DeadlineExceeded, MessageError
from kiwipy.settings import Settings
from kiwipy.transports.base import Delivery, Message, Transport

__all__ = ("Core",)

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

#: Sends of one communicator past their start at once (more wait their turn, in order). Each
#: send in progress holds a stack of coroutines and AMQP state of several kB until its
#: confirm; a waiting one holds a few hundred bytes. 512 keeps the broker's confirm pipeline
#: full (it confirms in batches) while a backlog of many thousands stays small.
SEND_WINDOW = 512


class Core:
    """Shared state of one asyncio communicator.

    ``subscriber_target`` is what subscribers receive as their first argument (the communicator
    the user holds: the asyncio one, or the blocking facade); ``invoke`` is how they are called.
    """

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        invoke: Invoker,
        subscriber_target: Callable[[], Any],
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.codec = MessageCodec(settings)
        self.replies = ReplyFutures(transport, self.codec)
        self.invoke = invoke
        self._subscriber_target = subscriber_target
        self._tasks = OwnedTasks(_LOGGER)
        self._settling = 0
        self._all_settled = asyncio.Event()
        self._warned: set[str] = set()
        self._send_window = SendWindow(SEND_WINDOW)
        self.closed = False
        self._listeners: tuple[Any, ...] = ()
        #: The listeners to call at each event; ``None`` while nobody listens (kiwipy.observe).
        self.hooks: Hooks | None = None
        observe.watch_global_listeners(self)
        self.listeners_changed()

    def add_listener(self, listener: Any) -> None:
        if not any(known is listener for known in self._listeners):
            self._listeners = (*self._listeners, listener)
            self.listeners_changed()

    def remove_listener(self, listener: Any) -> None:
        self._listeners = tuple(known for known in self._listeners if known is not listener)
        self.listeners_changed()

    def listeners_changed(self) -> None:
        listeners = (*observe.global_listeners(), *self._listeners)
        self.hooks = Hooks(listeners) if listeners else None

    @property
    def target(self) -> Any:
        return self._subscriber_target()

    def warn_once(self, topic: str, message: str) -> None:
        """Log ``message`` as a warning the first time ``topic`` comes up."""
        if topic not in self._warned:
            self._warned.add(topic)
            _LOGGER.warning(message)

    def ensure_open(self) -> None:
        if self.closed:
            raise CommunicatorClosed("The communicator is closed")

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by the communicator (cancelled by :meth:`close`)."""
        return self._tasks.spawn(coro, what)

    async def protect(self, settlement: Coroutine[Any, Any, None]) -> None:
        """Run a settlement (reply, then ack) to its end; :meth:`close` waits for these first.

        So a graceful close never sends a reply and then drops the ack (which would run the
        task again elsewhere). A settlement that fails (the link died) is logged: the broker
        then gives the task to another worker.
        """
        self._settling += 1
        self._all_settled.clear()
        try:
            await settlement
        except (ConnectionLost, CommunicatorClosed) as exc:
            _LOGGER.warning("Could not settle a task: %s", exc)
        finally:
            self._settling -= 1
            if not self._settling:
                self._all_settled.set()

    async def wait_settling(self, timeout: float) -> None:
        if self._settling:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._all_settled.wait(), timeout)

    async def cancel_tasks(self) -> None:
        await self._tasks.close()

    def encode(self, value: Any) -> tuple[bytes, str | None]:
        return self.codec.encode(value)

    async def send_reply(self, request: Message, reply: dict[str, Any]) -> None:
        """Answer ``request``; a value the codec cannot encode becomes an exception reply."""
        if request.reply_to:
            await self.transport.publish_reply(request.reply_to, self._reply(request, reply))

    async def send_final_reply(self, request: Message, reply: dict[str, Any]) -> None:
        """Answer ``request`` for the last time (see ``Transport.publish_final_reply``)."""
        if request.reply_to:
            message = self._reply(request, reply)
            await self.transport.publish_final_reply(request.reply_to, message)

    async def reply_and_ack(self, delivery: Delivery, reply: dict[str, Any]) -> None:
        """Answer the task ``delivery`` (as :meth:`send_reply`), then ack it."""
        request = delivery.message
        if request.reply_to:
            message = self._reply(request, reply)
            await self.transport.reply_and_ack(delivery, request.reply_to, message)
        else:
            await delivery.ack()

    def _reply(self, request: Message, reply: dict[str, Any]) -> Message:
        try:
            body, content_type = self.codec.encode(reply)
        except MessageError as exc:
            body, content_type = self.codec.encode(messages.exception_reply(exc))
        return Message(body, content_type, correlation_id=request.correlation_id)

    async def announce_pending(self, request: Message) -> None:
        """Tell the requester the answer comes later (the pending protocol).

        A lost link is not the request's outcome: the subscriber's work goes on, and its result
        is still replied (or the task, if lost, runs again elsewhere).
        """
        try:
            await self.send_reply(request, messages.pending_reply())
        except (ConnectionLost, CommunicatorClosed) as exc:
            _LOGGER.debug("Could not announce a pending answer: %s", exc)

    async def bounded_send(
        self,
        send: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        timeout: float | None,
        what: str,
    ) -> T:
        """Run ``send(*args)`` in its turn among the sends in flight, all within ``timeout``.

        ``send`` is called only once the turn has come, so a send that waits costs little:
        this frame, a timer and a future (a backlog of thousands stays small).
        """
        limit = self._limit(timeout)
        try:
            if sys.version_info >= (3, 11):  # one coroutine per send, not three (_in_window)
                async with asyncio.timeout(limit):
                    ticket = self._send_window.turn()
                    if ticket is not None:
                        try:
                            await ticket
                        except BaseException:
                            self._send_window.left_waiting(ticket)
                            raise
                    try:
                        return await send(*args)
                    finally:
                        self._send_window.leave()
            result: T = await _within(limit, _in_window(self._send_window, send, args))
        except asyncio.TimeoutError as exc:
            raise self._late(exc, limit, what) from exc
        return result

    async def bounded(self, awaitable: Awaitable[Any], timeout: float | None, what: str) -> Any:
        """Await ``awaitable`` for at most ``timeout`` s (default ``operation_timeout``).

        A late operation is cancelled and fails with ``DeadlineExceeded``, or with the
        transport's ``ConnectionLost`` when it was waiting for a lost link to come back.
        """
        limit = self._limit(timeout)
        try:
            return await _within(limit, awaitable)
        except asyncio.TimeoutError as exc:
            raise self._late(exc, limit, what) from exc

    def _limit(self, timeout: float | None) -> float:
        return self.settings.operation_timeout if timeout is None else timeout

    def _late(self, exc: asyncio.TimeoutError, limit: float, what: str) -> BaseException:
        """What a timed-out operation raises."""
        if isinstance(exc, DeadlineExceeded):
            return exc
        if not self.transport.is_connected:
            message = f"{what} failed: no connection to the broker within {limit:g} s"
            return self.transport.connection_error(message)
        return DeadlineExceeded(f"{what} did not complete within {limit:g} s")


async def _in_window(
    window: SendWindow, send: Callable[..., Awaitable[T]], args: tuple[Any, ...]
) -> T:
    """``send(*args)`` in its turn (Python 3.10; :meth:`Core.bounded_send` inlines this on
    3.11+, where each coroutine of a send waiting its turn is one more object that every full
    garbage collection visits, thousands of times over when thousands of sends are gathered).
    """
    ticket = window.turn()
    if ticket is not None:
        try:
            await ticket
        except BaseException:
            window.left_waiting(ticket)
            raise
    try:
        return await send(*args)
    finally:
        window.leave()


if sys.version_info >= (3, 11):

    async def _within(limit: float, awaitable: Awaitable[Any]) -> Any:
        async with asyncio.timeout(limit):  # no extra task, unlike wait_for on 3.11
            return await awaitable

else:

    async def _within(limit: float, awaitable: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(awaitable, limit)
