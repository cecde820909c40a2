"""The link to the broker: one connection, noticed when lost, redialled with back-off.

When the connection dies (heartbeat missed, socket error, broker shut down) the transport stays
open and the link redials with jittered back-off; what waits for the link meanwhile (a publish,
a declare) goes on once it is back, bounded by its caller's deadline. Bad credentials or a
refused virtual host end the link instead of being retried forever.

With failover addresses (``Settings.failover_urls``) connecting tries each address once, and
each reconnection attempt goes to the next address in turn. Every channel open, declare, bind
and consume has a deadline (``Settings.declare_timeout``): a connection that no longer answers
a channel open is dropped (and redialled, on the next address), whatever the heartbeats say.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from kiwipy._owned import OwnedTasks
from kiwipy.exceptions import (
    BrokerRefused,
    CommunicatorClosed,
    ConnectionLost,
    DeadlineExceeded,
    InvalidStateError,
    TLSError,
)
from kiwipy.settings import Settings
from kiwipy.transports.amqp._errors import (
    AmqpBrokerRefused,
    AmqpConnectionLost,
    amqp_errors,
    refusal,
    scrub,
)
from kiwipy.transports.amqp._tls import AmqpTLSError, DialTarget, dial_targets, tls_error
from kiwipy.transports.amqp._wire import WideQueueConnection, dial
from kiwipy.transports.base import CloseCallback, LinkCallback

__all__ = ("Expired", "Lifeline", "Link", "backoff_delays", "usable", "within")

_LOGGER = logging.getLogger("kiwipy.transports.amqp")

T = TypeVar("T")

_CLOSE_TIMEOUT = 1.0


def backoff_delays(first: float = 0.05, longest: float = 5.0) -> Iterator[float]:
    """Exponential back-off with jitter: many clients reconnecting do not knock in step."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, longest)


class Expired(Exception):
    """An operation did not finish before its deadline (it was cancelled)."""


async def within(operation: Awaitable[T], timeout: float) -> T:
    """Await ``operation``, or cancel it and raise :class:`Expired` after ``timeout`` seconds.

    Unlike ``asyncio.wait_for``, a ``TimeoutError`` raised by the operation itself is not
    mistaken for the deadline.
    """
    task = asyncio.ensure_future(operation)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        task.add_done_callback(_observe)
        raise
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(_observe)
    # Let the AMQP client clean up after the cancellation (it closes the channel), briefly.
    await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT)
    raise Expired()


def _observe(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


#: Channels given up on after a deadline: aiormq may still count them open until the broker
#: answers their close, but nothing may use them again (a late answer would be misread).
_ABANDONED: weakref.WeakSet[Any] = weakref.WeakSet()


def usable(channel: Any) -> bool:
    """Whether ``channel`` may carry another operation."""
    return channel is not None and not channel.is_closed and channel not in _ABANDONED


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


class Link:
    """The connection of one transport, across reconnections.

    ``on_connected(connection)`` runs each time a connection becomes the live one (the first
    and every reconnection), before anyone waiting for the link is woken; ``on_lost()`` each
    time the live one closes, the transport's own close included.
    """

    def __init__(
        self,
        settings: Settings,
        tasks: OwnedTasks,
        on_connected: Callable[[Any], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._tasks = tasks
        self._on_connected = on_connected
        self._on_lost = on_lost
        self.connection: Any = None
        self.closed = False
        self.lifeline = Lifeline(f"The connection to {settings.masked_url} is gone")
        self._up = asyncio.Event()
        self._link_callbacks: list[LinkCallback] = []
        self._close_callbacks: list[CloseCallback] | None = []  # None once they were called
        self._close_reason: BaseException | None = None
        self._fatal: BaseException | None = None
        self._reconnecting = False
        #: The addresses, in the order tried (shuffled once with ``failover_shuffle``).
        self._targets: list[DialTarget] = []
        #: Which of them the live connection (or the last one) is to.
        self._current = 0

    @property
    def address(self) -> str:
        """The address of the live (or last) connection, its password masked."""
        if not self._targets:
            return self._settings.masked_url
        return self._targets[self._current].label

    @property
    def addresses(self) -> list[str]:
        """Every address, in the order tried, masked."""
        return [target.label for target in self._targets]

    @property
    def is_connected(self) -> bool:
        connection = self.connection
        return not self.closed and connection is not None and not connection.is_closed

    async def connect(self) -> None:
        """Connect to the first address that answers, trying each once."""
        if self.connection is not None or self.closed:
            raise InvalidStateError("AmqpTransport.connect() may be called only once")
        settings = self._settings
        # Built once (TLS context, the one "verification is off" warning); reconnects reuse it.
        targets = dial_targets(settings)
        if settings.failover_shuffle:
            random.shuffle(targets)
        self._targets = targets
        failures: list[ConnectionLost] = []
        for index, target in enumerate(targets):
            try:
                connection = await self._dial(target)
            except ConnectionLost as exc:
                failures.append(exc)
                if len(targets) > 1:
                    _LOGGER.warning("%s", exc)
                continue
            self._current = index
            self._install(connection)
            _LOGGER.debug("Connected to %s", target.label)
            return
        raise self._failure(failures)

    async def _dial(self, target: DialTarget) -> WideQueueConnection:
        """One connection attempt to ``target``, its failure as a kiwipy error."""
        settings = self._settings
        try:
            return await asyncio.wait_for(_dial(target), settings.connection_timeout)
        except asyncio.TimeoutError as exc:
            message = f"No connection to {target.label} within {settings.connection_timeout}s"
            raise AmqpConnectionLost(message) from exc
        except Exception as exc:
            refused = refusal(exc, f"Cannot connect to {target.label}: the broker refused")
            if refused is not None:
                raise refused from exc
            what = f"Cannot connect to {target.label}"
            if settings.scheme == "amqps":
                tls = tls_error(what, exc)
                if tls is not None:  # fail closed, with the cause
                    raise tls from exc
            reason = scrub(f"{type(exc).__name__}: {exc}", *settings.addresses)
            raise AmqpConnectionLost(f"{what}: {reason}") from exc

    def _failure(self, failures: list[ConnectionLost]) -> ConnectionLost:
        """The one error for a connect that found no address to connect to."""
        if len(failures) == 1:
            return failures[0]
        summary = f"Cannot connect to any of the {len(failures)} addresses: " + "; ".join(
            str(failure) for failure in failures
        )
        refused = [f for f in failures if isinstance(f, BrokerRefused)]
        if refused:
            first = refused[0]
            error: ConnectionLost = AmqpBrokerRefused(
                summary, reply_code=first.reply_code, reply_text=first.reply_text
            )
        elif all(isinstance(f, TLSError) for f in failures):
            error = AmqpTLSError(summary)
        else:
            error = AmqpConnectionLost(summary)
        error.__cause__ = failures[-1]
        return error

    def _install(self, connection: Any) -> None:
        self.connection = connection
        self.lifeline = Lifeline(f"The connection to {self.address} is gone")
        self.lifeline.start()
        connection.closing.add_done_callback(
            lambda future: self._on_connection_closed(connection, future)
        )
        self._on_connected(connection)
        self._up.set()

    async def close(self) -> None:
        """Close the connection (the transport has drained what it needed first)."""
        self.closed = True
        self._up.set()  # wake whatever waits for the link: it sees the transport closed
        self.lifeline.cut()
        connection = self.connection
        if connection is not None and not connection.is_closed:
            reason = AmqpConnectionLost(f"The transport to {self.address} was closed")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(reason), _CLOSE_TIMEOUT)

    def add_link_callback(self, callback: LinkCallback) -> None:
        self._link_callbacks.append(callback)

    def add_close_callback(self, callback: CloseCallback) -> None:
        if self._close_callbacks is None:  # closed already: call it at once
            _call_back(callback, self._close_reason)
        else:
            self._close_callbacks.append(callback)

    def fire_close_callbacks(self, exc: BaseException | None) -> None:
        callbacks, self._close_callbacks = self._close_callbacks, None
        if callbacks is None:
            return
        self._close_reason = exc
        for callback in callbacks:
            _call_back(callback, exc)

    def _on_connection_closed(self, connection: Any, future: asyncio.Future[Any]) -> None:
        if connection is not self.connection:
            return
        self._up.clear()
        self.lifeline.cut()
        self._on_lost()
        if self.closed:
            return
        reason = None if future.cancelled() else future.exception()
        if isinstance(reason, asyncio.CancelledError):  # aiormq's way to say "stuck"
            described = "nothing came from the broker for too long (missed heartbeats)"
        else:
            described = scrub(repr(reason), *self._settings.addresses)
        _LOGGER.warning("Lost the connection to %s: %s", self.address, described)
        lost = AmqpConnectionLost(f"Lost the connection to {self.address}: {described}")
        lost.__cause__ = reason
        for callback in list(self._link_callbacks):
            _call_link_callback(callback, False, lost)
        if not self._reconnecting:
            self._reconnecting = True
            self._tasks.spawn(self._reconnect(), "Reconnecting to the broker")

    async def _reconnect(self) -> None:
        """Redial with back-off, each attempt to the next address; give up on refusals.

        A refusal (bad credentials, no such virtual host, no permission) will not go away by
        trying again: once a whole round over the addresses has failed with at least one
        refusal among them, the link ends with it instead of looping.
        """
        settings = self._settings
        count = len(self._targets)
        index = self._current
        refused: collections.deque[BrokerRefused | None] = collections.deque(maxlen=count)
        try:
            for delay in backoff_delays(first=0.1, longest=settings.reconnect_max_delay):
                await asyncio.sleep(delay)
                if self.closed:
                    return
                index = (index + 1) % count  # rotate: the next address first
                target = self._targets[index]
                try:
                    connection = await self._dial(target)
                except ConnectionLost as exc:
                    refused.append(exc if isinstance(exc, BrokerRefused) else None)
                    refusals = [r for r in refused if r is not None]
                    if len(refused) == count and refusals:
                        self._give_up(refusals[-1])
                        return
                    _LOGGER.debug("Reconnecting failed: %s", exc)
                    continue
                self._current = index
                self._install(connection)
                _LOGGER.info("Reconnected to %s", target.label)
                for callback in list(self._link_callbacks):
                    _call_link_callback(callback, True, None)
                return
        finally:
            self._reconnecting = False

    def _give_up(self, refused: BrokerRefused) -> None:
        fatal = AmqpBrokerRefused(
            f"Cannot reconnect: {refused}",
            reply_code=refused.reply_code,
            reply_text=refused.reply_text,
        )
        _LOGGER.error("%s; giving up (a refusal is not retried)", fatal)
        self._fatal = fatal
        self.closed = True
        self._up.set()
        self.fire_close_callbacks(fatal)

    def check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self.closed:
            raise CommunicatorClosed("The AMQP transport is closed")
        if self.connection is None:
            raise InvalidStateError("The AMQP transport is not connected: call connect() first")

    async def live_connection(self) -> Any:
        """The live connection, waiting while the transport reconnects."""
        while True:
            self.check_open()
            connection = self.connection
            if self._up.is_set() and not connection.is_closed:
                return connection
            if self._up.is_set():  # closed, and its callback has not run yet
                await asyncio.sleep(0.01)
            else:
                await self._up.wait()

    async def open_channel(self, **options: Any) -> Any:
        """A new channel on the live connection (waiting while the transport reconnects).

        A connection that does not answer within ``declare_timeout`` is dropped (the link
        redials, on the next address) and ``ConnectionLost`` raised.
        """
        connection = await self.live_connection()
        return await self._open_channel_on(connection, options)

    async def _open_channel_on(self, connection: Any, options: dict[str, Any]) -> Any:
        timeout = self._settings.declare_timeout
        with amqp_errors("open an AMQP channel", gone=lambda: bool(connection.is_closed)):
            try:
                return await within(connection.channel(**options), timeout)
            except Expired:
                why = f"no answer to a channel open within {timeout}s"
                self.drop(connection, why)
                raise AmqpConnectionLost(
                    f"Cannot open an AMQP channel: {self.address} gave {why}; reconnecting"
                ) from None
            except RuntimeError as exc:  # aiormq: "<connection> closed"
                if connection.is_closed:
                    raise AmqpConnectionLost(f"Lost the connection to {self.address}") from exc
                raise

    def drop(self, connection: Any, why: str) -> None:
        """Drop ``connection`` at once (it no longer answers): the link notices and redials."""
        if connection is not self.connection or connection.is_closed:
            return
        _LOGGER.warning("Dropping the connection to %s: %s", self.address, why)
        writer = getattr(getattr(connection, "wire", None), "writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None:
            transport.abort()  # the reader sees the socket closed: aiormq closes the connection
        else:
            self._tasks.spawn(_close_quietly(connection), "")

    async def bounded(self, what: str, channel: Any, operation: Awaitable[T]) -> T:
        """Await ``operation`` on ``channel`` (a declare, bind, consume...) within
        ``declare_timeout``.

        On expiry ``channel`` is given up on, and the connection is checked with a channel
        open under the same deadline: if it does not answer it is dropped (the link redials)
        and ``ConnectionLost`` raised; if it does, the broker is slow for this operation alone
        (a frozen cluster member, a partition) and ``DeadlineExceeded`` is raised.
        """
        timeout = self._settings.declare_timeout
        try:
            return await within(operation, timeout)
        except Expired:
            pass
        self.abandon(channel)
        connection = self.connection
        late = f"Cannot {what}: no answer from {self.address} within {timeout}s"
        if connection is None or connection.is_closed:
            raise AmqpConnectionLost(f"{late}; the connection is gone")
        try:
            probe = await self._open_channel_on(connection, {"publisher_confirms": False})
        except ConnectionLost as exc:
            raise AmqpConnectionLost(f"{late}, nor to a channel open: reconnecting") from exc
        self._tasks.spawn(_close_quietly(probe), "")
        raise DeadlineExceeded(
            f"{late} (the connection itself answers: a frozen or partitioned cluster member?)"
        )

    def abandon(self, channel: Any) -> None:
        """Use ``channel`` no more, and close it in the background."""
        if channel is None:
            return
        _ABANDONED.add(channel)
        self._tasks.spawn(_close_quietly(channel), "")

    @property
    def congested(self) -> bool:
        """Whether a publish should wait until the socket takes its frame (backpressure)."""
        connection = self.connection
        return connection is None or bool(connection.congested)


def _call_link_callback(callback: LinkCallback, connected: bool, exc: BaseException | None) -> None:
    try:
        callback(connected, exc)
    except Exception:
        _LOGGER.exception("Link callback %r failed", callback)


def _call_back(callback: CloseCallback, exc: BaseException | None) -> None:
    try:
        callback(exc)
    except Exception:
        _LOGGER.exception("Close callback %r failed", callback)


async def _close_quietly(closable: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closable.close(), _CLOSE_TIMEOUT)


async def _dial(target: DialTarget) -> WideQueueConnection:
    # The URL has no TLS query parameters (file paths), and aiormq masks its password.
    return await dial(target.url, target.kwargs)
