"""The communicator interface of kiwipy 0.9, and a helper base for in-process communicators.

This module is pure: no asyncio, no threads, no broker library. The blocking
:class:`kiwipy.sync.Communicator` (what :func:`kiwipy.connect` returns) and
:class:`kiwipy.LocalCommunicator` both implement :class:`Communicator`, so
``isinstance(comm, kiwipy.Communicator)`` holds for either.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kiwipy import exceptions, futures, messages

# Re-exported for backwards compatibility: kiwipy 0.9 code imports them from here.
from kiwipy.exceptions import (  # noqa: F401
    CommunicatorClosed,
    DeliveryFailed,
    DuplicateSubscriberIdentifier,
    InvalidStateError,
    QueueEmpty,
    RemoteException,
    TaskRejected,
    TimeoutError,
    UnroutableError,
)

__all__ = ("Communicator", "CommunicatorHelper")

#: RPC subscriber: ``subscriber(communicator, msg)``; returns the answer (or a future of it).
RpcSubscriber = Callable[["Communicator", Any], Any]
#: Task subscriber: ``subscriber(communicator, task)``; returns the outcome (or a future of it),
#: or raises :class:`~kiwipy.exceptions.TaskRejected` to pass the task on.
TaskSubscriber = Callable[["Communicator", Any], Any]
#: Broadcast subscriber: ``subscriber(communicator, body, sender, subject, correlation_id)``.
BroadcastSubscriber = Callable[["Communicator", Any, Any, Any, Any], Any]

_C = TypeVar("_C", bound="Communicator")
_LOGGER = logging.getLogger(__name__)


class Communicator:
    """What every communicator offers: tasks (one worker each), RPC (one owner per identifier)
    and broadcasts (everybody). Subscribers receive the communicator as their first argument.

    A plain class, as in kiwipy 0.9: the abstract markers document the interface but are not
    enforced at instantiation.
    """

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, exc_type: object, exc_val: object, exc_tb: object) -> None:
        self.close()

    @abc.abstractmethod
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called."""

    @abc.abstractmethod
    def close(self) -> None:
        """Free every resource; no operation is allowed afterwards. Idempotent."""

    @abc.abstractmethod
    def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        """Answer RPCs sent to ``identifier`` (generated when ``None``); return the identifier."""

    @abc.abstractmethod
    def remove_rpc_subscriber(self, identifier: Any) -> None:
        """Stop answering RPCs for ``identifier``; ``ValueError`` if it is unknown."""

    @abc.abstractmethod
    def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        """Take tasks from the default queue; return the identifier (generated when ``None``)."""

    @abc.abstractmethod
    def remove_task_subscriber(self, identifier: Any) -> None:
        """Stop taking tasks with this subscriber; ``ValueError`` if it is unknown."""

    @abc.abstractmethod
    def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        """Receive every broadcast; return the identifier (generated when ``None``)."""

    @abc.abstractmethod
    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        """Stop receiving broadcasts with this subscriber; ``ValueError`` if it is unknown."""

    @abc.abstractmethod
    def task_send(self, task: Any, no_reply: bool = False) -> futures.Future[Any] | None:
        """Queue ``task`` for one worker; return the future of its outcome (``None`` with
        ``no_reply=True``)."""

    @abc.abstractmethod
    def rpc_send(self, recipient_id: Any, msg: Any) -> futures.Future[Any]:
        """Call the RPC subscriber ``recipient_id``; return the future of its answer."""

    @abc.abstractmethod
    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """Send ``body`` to every broadcast subscriber; ``True`` once it is on its way."""


def _new_identifier() -> str:
    return uuid.uuid4().hex


class CommunicatorHelper(Communicator):
    """Subscriber bookkeeping for in-process communicators (see :class:`kiwipy.LocalCommunicator`).

    Subclasses implement the three ``*_send`` methods, usually with :meth:`fire_task`,
    :meth:`fire_rpc` and :meth:`fire_broadcast`. Identifiers are generated only when ``None`` is
    given (so ``0`` and ``''`` are valid identifiers).
    """

    def __init__(self) -> None:
        self._task_subscribers: dict[Any, TaskSubscriber] = {}
        self._broadcast_subscribers: dict[Any, BroadcastSubscriber] = {}
        self._rpc_subscribers: dict[Any, RpcSubscriber] = {}
        self._queued_tasks: list[_QueuedTask] = []
        self._closed = False

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._task_subscribers.clear()
        self._broadcast_subscribers.clear()
        self._rpc_subscribers.clear()
        queued, self._queued_tasks = self._queued_tasks, []
        for task in queued:
            _settle(task.future, exception=exceptions.CommunicatorClosed("Closed before delivery"))

    def _ensure_open(self) -> None:
        if self.is_closed():
            raise exceptions.CommunicatorClosed("The communicator is closed")

    def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> Any:
        self._ensure_open()
        identifier = _new_identifier() if identifier is None else identifier
        if identifier in self._rpc_subscribers:
            raise exceptions.DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}'")
        self._rpc_subscribers[identifier] = subscriber
        return identifier

    def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        if identifier not in self._rpc_subscribers:
            raise ValueError(f"Unknown subscriber '{identifier}'")
        del self._rpc_subscribers[identifier]

    def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        self._ensure_open()
        identifier = _new_identifier() if identifier is None else identifier
        if identifier in self._task_subscribers:
            raise exceptions.DuplicateSubscriberIdentifier(f"Task identifier '{identifier}'")
        self._task_subscribers[identifier] = subscriber
        self._offer_queued_tasks()
        return identifier

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        if identifier not in self._task_subscribers:
            raise ValueError(f"Unknown subscriber: '{identifier}'")
        del self._task_subscribers[identifier]

    def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> Any:
        self._ensure_open()
        identifier = _new_identifier() if identifier is None else identifier
        if identifier in self._broadcast_subscribers:
            raise exceptions.DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'")
        self._broadcast_subscribers[identifier] = subscriber
        return identifier

    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        if identifier not in self._broadcast_subscribers:
            raise ValueError(f"Broadcast subscriber '{identifier}' unknown")
        del self._broadcast_subscribers[identifier]

    # -- delivering in process -----------------------------------------------------------------

    def fire_task(self, msg: Any, no_reply: bool = False) -> futures.Future[Any] | None:
        """Hand ``msg`` to the first task subscriber that does not reject it, synchronously.

        The future gets the subscriber's return value (a future it returns becomes a nested
        future) or a :class:`~kiwipy.exceptions.RemoteException`. With no subscriber, or only
        rejecting ones, the task stays queued, as on a broker, and is offered again when a task
        subscriber is added; :meth:`close` fails the futures of tasks still queued.
        """
        self._ensure_open()
        task = _QueuedTask(msg, no_reply, futures.Future())
        if not self._offer_task(task):
            self._queued_tasks.append(task)
        return None if no_reply else task.future

    def fire_rpc(self, recipient_id: Any, msg: Any) -> futures.Future[Any]:
        """Call the RPC subscriber ``recipient_id`` synchronously; return the future of its answer.

        Raises :class:`~kiwipy.exceptions.UnroutableError` at once if nobody has that identifier.
        """
        self._ensure_open()
        if recipient_id not in self._rpc_subscribers:
            raise exceptions.UnroutableError(f"Unknown rpc recipient '{recipient_id}'")
        future: futures.Future[Any] = futures.Future()
        _run_into(future, self._rpc_subscribers[recipient_id], self, msg, rejectable=False)
        return future

    def fire_broadcast(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        """Call every broadcast subscriber as ``subscriber(self, body, sender, subject,
        correlation_id)`` (positionally, as the broker path does, so any parameter names work and
        a :class:`~kiwipy.filters.BroadcastFilter` sees every field). A failing subscriber is
        logged and does not stop the others, nor does its exception reach the sender.
        """
        self._ensure_open()
        for subscriber in list(self._broadcast_subscribers.values()):
            try:
                result = subscriber(self, body, sender, subject, correlation_id)
                _refuse_coroutine(result)
            except Exception:
                _LOGGER.exception("Exception in broadcast subscriber %r", subscriber)
        return True

    def _offer_task(self, task: _QueuedTask) -> bool:
        """Run ``task`` with the first subscriber that takes it; ``False`` if all rejected it."""
        for subscriber in list(self._task_subscribers.values()):
            try:
                _run_into(task.future, subscriber, self, task.body, rejectable=True)
            except exceptions.TaskRejected:
                continue
            if task.no_reply and not task.future.cancelled() and task.future.exception():
                _LOGGER.warning("Task without reply failed: %s", task.future.exception())
            return True
        return False

    def _offer_queued_tasks(self) -> None:
        for task in list(self._queued_tasks):
            if task not in self._queued_tasks:  # taken by a nested offer meanwhile
                continue
            self._queued_tasks.remove(task)
            if task.future.cancelled():  # the sender gave up on it before anybody took it
                continue
            if not self._offer_task(task):
                self._queued_tasks.append(task)


@dataclasses.dataclass(eq=False)
class _QueuedTask:
    body: Any
    no_reply: bool
    future: futures.Future[Any]


def _run_into(
    future: futures.Future[Any], subscriber: Callable[..., Any], *args: Any, rejectable: bool
) -> None:
    """Call ``subscriber(*args)`` and put its outcome in ``future``.

    ``TaskRejected`` propagates if ``rejectable`` (a task subscriber passing the task on);
    ``kiwipy.CancelledError`` cancels the future; another exception becomes a
    :class:`~kiwipy.exceptions.RemoteException` built as one that came over the broker.
    """
    try:
        result = subscriber(*args)
        _refuse_coroutine(result)
    except exceptions.TaskRejected as exc:
        if rejectable:
            raise
        _settle(future, exception=remote_exception(exc))
    except futures.CancelledError:
        future.cancel()
    except Exception as exc:
        _settle(future, exception=remote_exception(exc))
    else:
        _settle(future, result=result)


def _refuse_coroutine(result: object) -> None:
    if inspect.iscoroutine(result):
        result.close()
        raise TypeError(
            "An async subscriber was given to an in-process communicator, which calls "
            "subscribers synchronously; use a plain function"
        )


def _settle(
    future: futures.Future[Any], *, result: Any = None, exception: BaseException | None = None
) -> None:
    if future.done():  # cancelled by its owner meanwhile
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


def remote_exception(exc: BaseException) -> exceptions.RemoteException:
    """The :class:`~kiwipy.exceptions.RemoteException` a peer would receive for ``exc``.

    It carries the type name, message and traceback text; in process, the original exception
    is also kept as ``__cause__``.
    """
    error = messages.parse_reply(messages.exception_reply(exc)).error
    assert error is not None
    error.__cause__ = exc
    return error
