"""Plumbing for :mod:`kiwipy.transports.amqp`: error translation, message mapping, channels, tasks.

Like the transport itself, this module may import aiormq and pamqp; nothing else in the package
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import logging
import random
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import aiormq
import pamqp.exceptions
from pamqp.commands import Basic

from kiwipy.exceptions import (
    BrokerError,
    ConnectionLost,
    DeliveryFailed,
    KiwipyError,
    UnroutableError,
)
from kiwipy.transports.base import Message

__all__ = (
    "MAX_CONSUMER_TIMEOUT_MS",
    "AmqpConnectionLost",
    "AmqpUnroutableError",
    "ChannelSlot",
    "Lifeline",
    "Once",
    "OwnedTasks",
    "amqp_errors",
    "backoff_delays",
    "default_consumer_timeout",
    "is_fatal",
    "parse_version",
    "plain",
    "supports_consumer_timeout",
    "to_message",
    "to_properties",
    "translate",
    "url_with_heartbeat",
)

_LOGGER = logging.getLogger("kiwipy.transports.amqp")


class AmqpUnroutableError(UnroutableError, aiormq.exceptions.DeliveryError):
    """The broker could not route a message; also aio-pika's ``DeliveryError``, which kiwipy
    0.9's task queues raised and its users catch."""

    def __init__(self, text: str) -> None:
        Exception.__init__(self, text)
        self.message = None
        self.frame = None  # type: ignore[assignment]  # no frame: we made this error

    __str__ = Exception.__str__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class AmqpConnectionLost(
    ConnectionLost, aiormq.exceptions.ConnectionClosed, aiormq.exceptions.ChannelInvalidStateError
):
    """The broker connection is gone.

    Also an ``aio_pika.exceptions.ConnectionClosed`` and ``ChannelInvalidStateError`` (aio-pika
    re-exports aiormq's classes), because kiwipy 0.9 users such as plumpy catch those around
    ``broadcast_send``.
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


T = TypeVar("T")

_PRECONDITION_HINT = (
    " (an exchange or queue of that name already exists with other flags or arguments, for"
    " example one declared by another kiwipy version or with other settings; RabbitMQ refuses"
    " to redeclare it differently: use the same settings, or delete it first)"
)
_CONNECTION_ERRORS = (
    aiormq.AMQPConnectionError,
    aiormq.ChannelInvalidStateError,
    ConnectionError,
    OSError,  # includes the builtin TimeoutError (= asyncio.TimeoutError on 3.11+)
    asyncio.TimeoutError,
)


def _reply_text(exc: BaseException) -> str:
    return " ".join(str(arg) for arg in exc.args if arg is not None) or type(exc).__name__


def translate(exc: Exception, what: str) -> Exception:
    """Return the kiwipy exception for ``exc`` raised while doing ``what``.

    kiwipy's own errors and errors that are not the AMQP library's come back unchanged.
    """
    if isinstance(exc, KiwipyError):
        return exc
    if isinstance(exc, aiormq.PublishError):
        reason = getattr(exc.frame, "reply_text", None) or "NO_ROUTE"
        return AmqpUnroutableError(f"Cannot {what}: the broker could not route it ({reason})")
    if isinstance(exc, aiormq.DeliveryError):
        return DeliveryFailed(f"Cannot {what}: the broker refused the message (basic.nack)")
    if isinstance(exc, aiormq.ChannelPreconditionFailed):
        return BrokerError(f"Cannot {what}: {_reply_text(exc)}{_PRECONDITION_HINT}")
    if isinstance(exc, aiormq.AMQPChannelError):
        return BrokerError(f"Cannot {what}: the broker refused: {_reply_text(exc)}")
    # aiormq fails what is still pending on a closing connection with a bare ``Exception``.
    if isinstance(exc, _CONNECTION_ERRORS) or type(exc) is Exception:
        return AmqpConnectionLost(f"Cannot {what}: the broker connection is gone ({exc!r})")
    if isinstance(exc, (aiormq.AMQPError, pamqp.exceptions.PAMQPException)):
        return BrokerError(f"Cannot {what}: AMQP error {exc!r}")
    return exc


@contextlib.contextmanager
def amqp_errors(what: str) -> Iterator[None]:
    """Translate AMQP library errors raised in the block (``raise ... from exc``)."""
    try:
        yield
    except Exception as exc:
        translated = translate(exc, what)
        if translated is exc:
            raise
        raise translated from exc


def backoff_delays(first: float = 0.05, longest: float = 5.0) -> Iterator[float]:
    """Exponential back-off with jitter: many clients reconnecting do not knock in step."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, longest)


def is_fatal(exc: BaseException) -> bool:
    """Whether a connect error will not go away by trying again (bad credentials, no vhost)."""
    return isinstance(
        exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.ConnectionNotAllowed
    )


#: The largest consumer timeout RabbitMQ accepts (a 32-bit count of milliseconds, ~24.8 days);
#: used for ``consumer_timeout="none"``.
MAX_CONSUMER_TIMEOUT_MS = 2**31 - 1


def parse_version(text: str) -> tuple[int, ...]:
    """``"3.12.1"`` -> ``(3, 12, 1)``; what does not parse is dropped (``"4.0.0-rc.1"``)."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def supports_consumer_timeout(version: tuple[int, ...]) -> bool:
    """Whether ``x-consumer-timeout`` works as a consumer argument (RabbitMQ 3.11.15+)."""
    return version >= (3, 11, 15)


def default_consumer_timeout(version: tuple[int, ...]) -> float | None:
    """The default ``consumer_timeout`` of a RabbitMQ version, in seconds."""
    if version >= (3, 8, 17):
        return 1800.0
    if version >= (3, 8, 15):
        return 900.0
    return None


def url_with_heartbeat(url: str, heartbeat: int) -> str:
    """Add ``heartbeat`` to the query of ``url`` unless the URL sets it already."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "heartbeat" for name, _ in query):
        return url
    query.append(("heartbeat", str(heartbeat)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def plain(value: Any, *, decode: bool = True) -> Any:
    """Turn an AMQP field value into plain Python dicts and lists (bytes to text if ``decode``)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace") if decode else bytes(value)
    if isinstance(value, Mapping):
        return {str(plain(key)): plain(item, decode=decode) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, decode=decode) for item in value]
    return value


def to_properties(message: Message, *, delivery_mode: int) -> Any:
    """The AMQP properties for ``message``; a unique ``message_id`` lets returns be matched."""
    return Basic.Properties(
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        headers=dict(message.headers) if message.headers else None,
        delivery_mode=delivery_mode,
        message_id=f"{_MESSAGE_ID_PREFIX}{next(_MESSAGE_NUMBERS)}",
    )


# Unique per process (returns are matched per channel): cheaper than a uuid4 per message.
_MESSAGE_ID_PREFIX = f"{uuid.uuid4().hex[:16]}-"
_MESSAGE_NUMBERS = itertools.count()


def to_message(raw: Any) -> Message:
    """The kiwipy :class:`Message` for an aiormq ``DeliveredMessage``."""
    properties = raw.header.properties
    return Message(
        body=bytes(raw.body),
        content_type=properties.content_type,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        headers=plain(properties.headers or {}, decode=False),
        persistent=properties.delivery_mode == 2,
        redelivered=bool(getattr(raw.delivery, "redelivered", False)),
    )


class ChannelSlot:
    """Holds one channel and opens a new one when the broker has closed the old one."""

    def __init__(self, open_channel: Callable[[], Awaitable[Any]]) -> None:
        self._open_channel = open_channel
        self._channel: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._open_channel()
            return self._channel

    def observe_confirmations(self) -> None:
        """Mark the pending publisher confirms' errors as seen.

        Closing the connection fails them all; under aiormq 6.9 those of publishes that never
        got to wait for them would be logged as "Future exception was never retrieved".
        """
        channel = self._channel
        for confirmation in list(getattr(channel, "confirmations", {}).values()):
            confirmation.add_done_callback(_observe)


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


def _observe(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class OwnedTasks:
    """Background tasks with an owner: kept referenced, failures logged, cancelled on close."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Future[Any], str] = {}
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Future[Any] | None:
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = what
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        what = self._tasks.pop(task, "")
        if not task.cancelled() and task.exception() is not None and what:
            _LOGGER.error("%s failed", what, exc_info=task.exception())

    async def close(self) -> None:
        """Cancel every task (but the calling one) and wait for them to finish."""
        self._closed = True
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# aiormq 7 fails publishes and acks that are in flight when the connection dies; 6.9 may not.
_AIORMQ_FAILS_IN_FLIGHT_WORK = int(importlib.metadata.version("aiormq").split(".")[0]) >= 7


class Lifeline:
    """Knows when the connection is gone, and makes waits on it end then.

    aiormq 6.9 can wait forever on a dead connection: a publish or ack whose frame no longer
    fits the write queue is never woken. :meth:`guard` gives up on such an operation (and
    cancels it) with ``ConnectionLost`` as soon as :meth:`cut` was called. Each guarded
    operation costs a set insertion, not a wait on a future shared by all of them.
    """

    def __init__(self, message: str) -> None:
        self._message = message
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._cut = False

    def start(self) -> None:
        self._cut = False

    def cut(self) -> None:
        self._cut = True
        for operation in list(self._in_flight):
            operation.cancel()

    async def guard(self, operation: Awaitable[T]) -> T:
        if _AIORMQ_FAILS_IN_FLIGHT_WORK and not self._cut:
            return await operation  # aiormq 7 fails it when the connection dies: no task needed
        if self._cut:
            if asyncio.iscoroutine(operation):
                operation.close()
            raise AmqpConnectionLost(self._message)
        task = asyncio.ensure_future(operation)
        self._in_flight.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if self._cut and task.cancelled():
                raise AmqpConnectionLost(self._message) from None
            raise
        finally:
            self._in_flight.discard(task)


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
