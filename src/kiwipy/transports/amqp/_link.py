"""The link to the broker: one connection, noticed when lost, redialled with back-off.

When the connection dies (heartbeat missed, socket error, broker shut down) the transport stays
open and the link redials with jittered back-off; what waits for the link meanwhile (a publish,
a declare) goes on once it is back, bounded by its caller's deadline. Bad credentials or a
refused virtual host end the link instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from kiwipy._owned import OwnedTasks
from kiwipy.exceptions import BrokerError, CommunicatorClosed, InvalidStateError
from kiwipy.settings import Settings
from kiwipy.transports.amqp._errors import AmqpConnectionLost, amqp_errors, is_fatal, scrub
from kiwipy.transports.amqp._tls import DialTarget, dial_target, tls_error
from kiwipy.transports.amqp._wire import WideQueueConnection, dial
from kiwipy.transports.base import CloseCallback, LinkCallback

__all__ = ("Lifeline", "Link", "backoff_delays")

_LOGGER = logging.getLogger("kiwipy.transports.amqp")

T = TypeVar("T")

_CLOSE_TIMEOUT = 1.0


def backoff_delays(first: float = 0.05, longest: float = 5.0) -> Iterator[float]:
    """Exponential back-off with jitter: many clients reconnecting do not knock in step."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, longest)


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
        self._dial_target: DialTarget | None = None

    @property
    def is_connected(self) -> bool:
        connection = self.connection
        return not self.closed and connection is not None and not connection.is_closed

    async def connect(self) -> None:
        if self.connection is not None or self.closed:
            raise InvalidStateError("AmqpTransport.connect() may be called only once")
        settings = self._settings
        # Built once (TLS context, the one "verification is off" warning); reconnects reuse it.
        target = self._dial_target = dial_target(settings)
        try:
            connection = await asyncio.wait_for(_dial(target), settings.connection_timeout)
        except asyncio.TimeoutError as exc:
            message = (
                f"No connection to {settings.masked_url} within {settings.connection_timeout}s"
            )
            raise AmqpConnectionLost(message) from exc
        except Exception as exc:
            what = f"Cannot connect to {settings.masked_url}"
            if settings.scheme == "amqps":
                tls = tls_error(what, exc)
                if tls is not None:  # fail closed, with the cause
                    raise tls from exc
            reason = scrub(f"{type(exc).__name__}: {exc}", settings.url)
            raise AmqpConnectionLost(f"{what}: {reason}") from exc
        self._install(connection)
        _LOGGER.debug("Connected to %s", settings.masked_url)

    def _install(self, connection: Any) -> None:
        self.connection = connection
        self.lifeline = Lifeline(f"The connection to {self._settings.masked_url} is gone")
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
            reason = AmqpConnectionLost(f"The transport to {self._settings.masked_url} was closed")
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
        _LOGGER.warning("Lost the connection to %s: %r", self._settings.masked_url, reason)
        lost = AmqpConnectionLost(f"Lost the connection to {self._settings.masked_url}: {reason!r}")
        lost.__cause__ = reason
        for callback in list(self._link_callbacks):
            _call_link_callback(callback, False, lost)
        if not self._reconnecting:
            self._reconnecting = True
            self._tasks.spawn(self._reconnect(), "Reconnecting to the broker")

    async def _reconnect(self) -> None:
        settings = self._settings
        target = self._dial_target
        assert target is not None  # made by connect()
        try:
            for delay in backoff_delays(first=0.1, longest=settings.reconnect_max_delay):
                await asyncio.sleep(delay)
                try:
                    connection = await asyncio.wait_for(_dial(target), settings.connection_timeout)
                except Exception as exc:
                    if is_fatal(exc):
                        self._give_up(exc)
                        return
                    _LOGGER.debug(
                        "Reconnecting to %s failed: %s", settings.masked_url, self._reason(exc)
                    )
                    continue
                self._install(connection)
                _LOGGER.info("Reconnected to %s", settings.masked_url)
                for callback in list(self._link_callbacks):
                    _call_link_callback(callback, True, None)
                return
        finally:
            self._reconnecting = False

    def _reason(self, exc: Exception) -> str:
        if self._settings.scheme == "amqps":
            tls = tls_error("TLS", exc)
            if tls is not None:
                return str(tls)
        return scrub(repr(exc), self._settings.url)

    def _give_up(self, exc: BaseException) -> None:
        reason = scrub(f"{type(exc).__name__}: {exc}", self._settings.url)
        fatal = BrokerError(f"Cannot reconnect to {self._settings.masked_url}: {reason}")
        _LOGGER.error("%s; giving up", fatal)
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
        connection = await self.live_connection()
        with amqp_errors("open an AMQP channel"):
            try:
                return await connection.channel(**options)
            except RuntimeError as exc:  # aiormq: "<connection> closed"
                if connection.is_closed:
                    raise AmqpConnectionLost(
                        f"Lost the connection to {self._settings.masked_url}"
                    ) from exc
                raise

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


async def _dial(target: DialTarget) -> WideQueueConnection:
    # The URL has no TLS query parameters (file paths), and aiormq masks its password.
    return await dial(target.url, target.kwargs)
