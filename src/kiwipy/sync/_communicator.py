"""The blocking communicator: thin delegations to the asyncio core on a private loop thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from kiwipy import communications
from kiwipy.aio._communicator import AsyncCommunicator
from kiwipy.aio._futures import weak_callback
from kiwipy.exceptions import CommunicatorClosed
from kiwipy.settings import Settings, resolve_url
from kiwipy.sync._callbacks import CallbackThreads
from kiwipy.sync._futures import final_result, to_concurrent
from kiwipy.sync._portal import Portal
from kiwipy.sync._tasks import TaskQueue

__all__ = ("Communicator", "connect")

T = TypeVar("T")
_NUMBERS = itertools.count(1)


def connect(url: str | None = None, **options: Any) -> Communicator:
    """Connect to the broker at ``url`` and return a blocking :class:`Communicator`.

    With no ``url``: ``$KIWIPY_URL``, else ``local://`` (the local broker, started if need be).
    """
    return Communicator(Settings.from_url(resolve_url(url), **options))


class Communicator(communications.Communicator):
    """Tasks, RPC and broadcasts for plain blocking Python.

    An event loop on a daemon thread does all I/O (heartbeats and acks go on while your code is
    busy); subscribers run on a dedicated callback thread, in arrival order. Every blocking
    method takes ``timeout`` (seconds, default ``settings.operation_timeout``); a call that
    times out is cancelled and raises :class:`kiwipy.exceptions.DeadlineExceeded` (a
    ``TimeoutError``).
    """

    #: What :meth:`task_queue` wraps its queues in (kiwipy 0.9's names use a subclass).
    _task_queue_type: type[TaskQueue] = TaskQueue

    def __init__(self, settings: Settings) -> None:
        number = next(_NUMBERS)
        self._settings = settings
        self._closed = False
        self._portal = Portal(f"kiwipy-loop-{number}")
        self._callbacks = CallbackThreads(
            f"kiwipy-callbacks-{number}", at_turn_end=self._portal.at_turn_end
        )
        try:
            self._async = self._portal.call(
                self._create, settings.connection_timeout + 5, "Connect"
            )
        except BaseException:
            self._stop_threads()
            raise
        self._default_queue = TaskQueue(self._async.default_task_queue, self._portal)

    async def _create(self) -> AsyncCommunicator:
        communicator = AsyncCommunicator(
            self._settings, invoke=self._callbacks.invoke, subscriber_target=lambda: self
        )
        await communicator.connect()
        return communicator

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Communicator({self._settings.masked_url!r}, {state})"

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise CommunicatorClosed("The communicator is closed")

    def _call(
        self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None, what: str
    ) -> T:
        self._check_open()
        return self._portal.call_operation(make, timeout, self._settings.operation_timeout, what)

    def _stop_threads(self) -> None:
        self._callbacks.stop()
        self._portal.stop()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def server_properties(self) -> dict[str, Any]:
        return self._async.server_properties

    @property
    def asyncio_communicator(self) -> AsyncCommunicator:
        """The asyncio communicator underneath (use it only on :meth:`loop`)."""
        return self._async

    def loop(self) -> asyncio.AbstractEventLoop:
        """The private event loop that does the I/O."""
        return self._portal.loop

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        """kiwipy 0.9's attribute for :meth:`loop`; plumpy's tests call ``_loop.set_debug()``."""
        return self._portal.loop

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection and join the threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._portal.call(self._async.close, self._settings.operation_timeout, "Close")
        finally:
            self._stop_threads()

    def add_close_callback(self, callback: Callable[..., Any], weak: bool = False) -> None:
        """Call ``callback(communicator, exc)`` when the connection closes (``exc`` is ``None``
        after :meth:`close`, which calls it before returning). With ``weak``, the callback is
        held by a weak reference and dropped once nothing else keeps it alive."""
        if self._closed:
            raise CommunicatorClosed("The communicator is closed")
        target = weak_callback(callback) if weak else callback
        self._async.add_close_callback(lambda _comm, exc: target(self, exc))

    def add_listener(self, listener: Any) -> None:
        """Give the events of this communicator to ``listener`` (see :mod:`kiwipy.observe`);
        its methods are called on the loop thread."""
        self._async.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        """Stop giving events to ``listener``; no error if it was not listening."""
        self._async.remove_listener(listener)

    def add_connection_callback(self, callback: Callable[..., Any]) -> None:
        """Call ``callback(communicator, connected, exc)`` when the link to the broker is lost
        or restored (from the loop thread: keep it short)."""
        self._async.add_connection_callback(
            lambda _comm, connected, exc: callback(self, connected, exc)
        )

    # -- tasks ---------------------------------------------------------------------------------

    def task_send(
        self,
        task: Any,
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[Any] | None:
        """Send a task; when this returns the broker has confirmed it (it is on disk)."""
        return self._default_queue.task_send(task, no_reply, deadline=deadline, timeout=timeout)

    def task_call(
        self, task: Any, *, deadline: float | None = None, timeout: float | None = None
    ) -> Any:
        """Send a task to the default queue and wait for its result; see
        :meth:`TaskQueue.task_call`."""
        return self._default_queue.task_call(task, deadline=deadline, timeout=timeout)

    def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> list[concurrent.futures.Future[Any] | None]:
        """Send many tasks with their confirms in flight together; return when all are confirmed."""
        return self._default_queue.task_send_many(
            tasks, no_reply, deadline=deadline, timeout=timeout
        )

    def task_queue(
        self,
        queue_name: str,
        prefetch_size: int = 0,
        prefetch_count: int | None = None,
        *,
        timeout: float | None = None,
    ) -> TaskQueue:
        """The task queue ``queue_name`` (``prefetch_size`` is accepted and ignored, as RabbitMQ
        does)."""

        async def get() -> TaskQueue:
            queue = await self._async.task_queue(queue_name, prefetch_size, prefetch_count)
            return self._task_queue_type(queue, self._portal)

        return self._call(get, timeout, "task_queue")

    def add_task_subscriber(
        self,
        subscriber: Callable[..., Any],
        identifier: Any = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        return self._default_queue.add_task_subscriber(subscriber, identifier, timeout=timeout)

    def remove_task_subscriber(self, identifier: Any, *, timeout: float | None = None) -> None:
        self._default_queue.remove_task_subscriber(identifier, timeout=timeout)

    # -- rpc -----------------------------------------------------------------------------------

    def add_rpc_subscriber(
        self,
        subscriber: Callable[..., Any],
        identifier: Any = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        return self._call(
            lambda: self._async.add_rpc_subscriber(subscriber, identifier),
            timeout,
            "add_rpc_subscriber",
        )

    def remove_rpc_subscriber(self, identifier: Any, *, timeout: float | None = None) -> None:
        self._call(
            lambda: self._async.remove_rpc_subscriber(identifier), timeout, "remove_rpc_subscriber"
        )

    def rpc_send(
        self,
        recipient_id: Any,
        msg: Any,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Send an RPC; ``UnroutableError`` is raised here when nobody owns ``recipient_id``."""
        self._check_open()
        send = _send_rpc(self._async, self._portal, recipient_id, msg, deadline, timeout)
        default = self._settings.operation_timeout
        return self._portal.run_operation(send, timeout, default, "rpc_send")

    def rpc_call(
        self,
        recipient_id: Any,
        msg: Any,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send an RPC and wait for its answer (``comm.rpc_call(42, "status")``): the remote
        exception is raised here, ``UnroutableError`` at once when nobody owns
        ``recipient_id``, ``DeadlineExceeded`` when ``deadline`` (default
        ``settings.rpc_timeout``) passes."""
        return final_result(self.rpc_send(recipient_id, msg, deadline=deadline, timeout=timeout))

    # -- broadcasts ----------------------------------------------------------------------------

    def add_broadcast_subscriber(
        self,
        subscriber: Callable[..., Any],
        identifier: Any = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        return self._call(
            lambda: self._async.add_broadcast_subscriber(subscriber, identifier),
            timeout,
            "add_broadcast_subscriber",
        )

    def remove_broadcast_subscriber(self, identifier: Any, *, timeout: float | None = None) -> None:
        self._call(
            lambda: self._async.remove_broadcast_subscriber(identifier),
            timeout,
            "remove_broadcast_subscriber",
        )

    def broadcast_send(
        self,
        body: Any,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
        *,
        timeout: float | None = None,
    ) -> bool:
        """Send a broadcast; ``True`` once the broker has it."""
        self._check_open()
        send = self._async.broadcast_send(body, sender, subject, correlation_id, timeout=timeout)
        default = self._settings.operation_timeout
        return self._portal.run_operation(send, timeout, default, "broadcast_send")


async def _send_rpc(
    communicator: AsyncCommunicator,
    portal: Portal,
    recipient_id: Any,
    msg: Any,
    deadline: float | None,
    timeout: float | None,
) -> concurrent.futures.Future[Any]:
    future = await communicator.rpc_send(recipient_id, msg, deadline=deadline, timeout=timeout)
    return to_concurrent(future, portal)
