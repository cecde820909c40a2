"""Task queues: send tasks, push them to subscribers, or pull them one by one.

A task is acknowledged only when its outcome is known, including every future a subscriber
returned (the pending protocol). Until then it stays on the broker, and goes back to the queue
if the worker dies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from kiwipy import messages
from kiwipy.aio._core import Core
from kiwipy.aio._futures import done_future, follow_pending
from kiwipy.aio._futures import outcome as final_outcome
from kiwipy.aio._incoming import (
    IncomingTask,
    TaskState,
    current_incoming_task,
    reset_current_incoming_task,
)
from kiwipy.aio._rejections import Rejections
from kiwipy.exceptions import (
    DuplicateSubscriberIdentifier,
    MessageError,
    QueueEmpty,
    TaskRejected,
)
from kiwipy.observe import TASK, Outgoing
from kiwipy.settings import Settings
from kiwipy.transports.base import Delivery, Message, Subscription

__all__ = ("AsyncTaskQueue", "IncomingTask", "TaskState", "TaskSubscriber")

TaskSubscriber = Callable[[Any, Any], Any]

_LOGGER = logging.getLogger(__name__)


class _NoOutcome(enum.Enum):
    REJECTED = "every subscriber rejected the task"
    GIVE_BACK = "the task goes back to the queue untouched"


#: How often ``next_task`` polls an empty queue while it waits.
_POLL_INTERVAL_S = 0.05


class _NotStarted(Exception):
    """The subscriber was removed, or the task lost, before the subscriber's turn came."""


class _StillWanted:
    """A subscriber that runs only if it is still subscribed and its task still ours.

    With the blocking facade, deliveries wait in the subscriber's lane for their turn; this
    check at the turn lets a draining worker give back what it has not started, and skips
    copies of tasks the broker has already given to another worker.
    """

    def __init__(self, queue: AsyncTaskQueue, identifier: Any, subscriber: TaskSubscriber) -> None:
        self._queue = queue
        self._identifier = identifier
        self.subscriber = subscriber

    def __call__(self, communicator: Any, body: Any) -> Any:
        task = current_incoming_task()
        if self._identifier not in self._queue._subscribers or (task is not None and task.lost):
            raise _NotStarted()
        return self.subscriber(communicator, body)


class AsyncTaskQueue:
    """One durable task queue: send to it, subscribe to it, or pull from it."""

    def __init__(self, core: Core, name: str, prefetch_count: int) -> None:
        self._core = core
        self.name = name
        self.prefetch_count = prefetch_count
        self._subscribers: dict[Any, _StillWanted] = {}
        self._subscription: Subscription | None = None
        self._declared = False
        self._rejections = Rejections(core, name)

    def __repr__(self) -> str:
        return f"AsyncTaskQueue({self.name!r})"

    @property
    def settings(self) -> Settings:
        return self._core.settings

    async def _declare(self) -> None:
        if not self._declared:
            await self._core.transport.declare_task_queue(self.name)
            self._declared = True

    # -- sending -------------------------------------------------------------------------------

    async def task_send(
        self,
        task: Any,
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any] | None:
        """Send a task; return once the broker has confirmed it (it is on disk).

        Returns a future of the outcome (``None`` with ``no_reply=True``). ``deadline`` bounds
        the wait for that outcome in seconds (default ``settings.task_timeout``: none);
        ``timeout`` bounds the send itself (default ``settings.operation_timeout``).
        """
        self._core.ensure_open()
        args = (task, no_reply, deadline)
        return await self._core.bounded_send(self._send, args, timeout, "Sending a task")

    async def task_call(
        self, task: Any, *, deadline: float | None = None, timeout: float | None = None
    ) -> Any:
        """Send a task and return its result (``result = await queue.task_call(task)``).

        The one-await form of ``await (await queue.task_send(task))``: the worker's exception
        is raised here, :class:`~kiwipy.exceptions.DeadlineExceeded` when ``deadline`` passes.
        """
        future = await self.task_send(task, deadline=deadline, timeout=timeout)
        assert future is not None  # a reply was asked for
        return await final_outcome(future)

    async def _send(
        self, task: Any, no_reply: bool, deadline: float | None
    ) -> asyncio.Future[Any] | None:
        body, content_type = self._core.encode(messages.task_body(task, no_reply))
        if not self._declared:  # the first send: both declarations at once
            await asyncio.gather(self._declare(), self._core.replies.address())
        reply_to = await self._core.replies.address()
        future: asyncio.Future[Any] | None = None
        if no_reply:
            correlation_id = uuid.uuid4().hex
        else:
            correlation_id, future = self._core.replies.register(
                deadline if deadline is not None else self._core.settings.task_timeout
            )
        message = Message(body, content_type, correlation_id, reply_to, persistent=True)
        try:
            if (hooks := self._core.hooks) is not None:
                outgoing = Outgoing(TASK, self.name, correlation_id)
                publish = functools.partial(self._core.transport.publish_task, self.name)
                await hooks.publish(outgoing, publish, message, future)
            else:
                await self._core.transport.publish_task(self.name, message)
        except BaseException:
            self._core.replies.abandon(correlation_id, future)
            raise
        return future

    async def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> list[asyncio.Future[Any] | None]:
        """Send every task with the confirms in flight together; return once all are confirmed.

        If any send fails, the first error is raised after every send has settled (the others
        are then confirmed or failed too, never left running).
        """
        sends = [
            self.task_send(task, no_reply, deadline=deadline, timeout=timeout) for task in tasks
        ]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        futures: list[asyncio.Future[Any] | None] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            futures.append(outcome)
        return futures

    # -- subscribing ---------------------------------------------------------------------------

    async def add_task_subscriber(self, subscriber: TaskSubscriber, identifier: Any = None) -> Any:
        self._core.ensure_open()
        identifier = identifier if identifier is not None else uuid.uuid4().hex
        if identifier in self._subscribers:
            raise DuplicateSubscriberIdentifier(f"Task identifier '{identifier}'")
        self._subscribers[identifier] = _StillWanted(self, identifier, subscriber)
        if self._subscription is None:
            try:
                await self._declare()
                self._subscription = await self._core.transport.consume_tasks(
                    self.name, self._on_delivery, prefetch_count=self.prefetch_count
                )
            except BaseException:
                del self._subscribers[identifier]
                raise
        return identifier

    async def remove_task_subscriber(self, identifier: Any) -> None:
        if identifier not in self._subscribers:
            raise ValueError(f"Unknown subscriber '{identifier}'")
        del self._subscribers[identifier]
        if not self._subscribers and self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.cancel()

    async def _on_delivery(self, delivery: Delivery) -> None:
        task = await self._receive(delivery)
        if task is None:
            return
        if delivery.stale:  # its channel died before we got to it: the broker has it back
            return
        if not self._subscribers:  # removed meanwhile: not a rejection, give it straight back
            await task.requeue()
            return
        task._start()
        token = task.bind_to_context()
        try:
            outcome = await self._run_subscribers(task)
        finally:
            reset_current_incoming_task(token)
        if outcome is _NoOutcome.GIVE_BACK:
            await task.requeue()
        elif outcome is _NoOutcome.REJECTED:
            task._settle(TaskState.REQUEUED)
            await self._rejections.rejected_by_all(delivery)
        else:
            await task.finish(outcome)

    async def _run_subscribers(self, task: IncomingTask) -> asyncio.Future[Any] | _NoOutcome:
        """The outcome of the first subscriber that does not reject, or why there is none."""

        async def announce_pending() -> None:
            if not task.no_reply:
                await self._core.announce_pending(task._delivery.message)

        for subscriber in list(self._subscribers.values()):
            try:
                result = await self._core.invoke(subscriber, self._core.target, task.body)
                result = await follow_pending(result, announce_pending)
            except TaskRejected:
                continue
            except _NotStarted:
                return _NoOutcome.GIVE_BACK
            except concurrent.futures.CancelledError:
                return done_future(cancelled=True)
            except Exception as exc:
                return done_future(exception=exc)
            return done_future(result=result)
        return _NoOutcome.REJECTED

    async def _receive(self, delivery: Delivery, *, pulled: bool = False) -> IncomingTask | None:
        """Decode a delivery; settle an undecodable one at once (never requeue poison)."""
        message = delivery.message
        try:
            body = self._core.codec.decode(message.body, message.content_type)
            task, no_reply = messages.parse_task(body)
        except MessageError as exc:
            await self._rejections.undecodable(delivery, exc)
            return None
        return IncomingTask(self._core, delivery, task, no_reply, queue=self.name, pulled=pulled)

    # -- pulling -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def next_task(
        self, timeout: float = 5.0, fail: bool = True
    ) -> AsyncIterator[IncomingTask | None]:
        """Take the next task; a task still pending when the block ends is requeued.

        With nothing in the queue within ``timeout`` seconds: ``QueueEmpty``, or ``None`` when
        ``fail`` is false.
        """
        task = await self.fetch(timeout)
        if task is None and fail:
            raise QueueEmpty(f"No task in queue '{self.name}' within {timeout:g} s")
        try:
            yield task
        finally:
            if task is not None and task.state == TaskState.PENDING:
                await task.requeue()

    async def fetch(self, timeout: float) -> IncomingTask | None:
        """The next decodable task, waiting up to ``timeout`` s; ``None`` if there is none."""
        self._core.ensure_open()
        await self._declare()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            delivery = await self._core.transport.get_task(self.name)
            if delivery is not None:
                task = await self._receive(delivery, pulled=True)
                if task is not None:
                    return task
                continue
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(_POLL_INTERVAL_S)

    async def __aiter__(self) -> AsyncIterator[IncomingTask]:
        """Every task now in the queue; those left pending are requeued when iteration ends."""
        fetched: list[IncomingTask] = []
        try:
            while (task := await self.fetch(0.0)) is not None:
                fetched.append(task)
                yield task
        finally:
            for task in fetched:
                if task.state == TaskState.PENDING:
                    await task.requeue()

    async def close(self) -> None:
        self._subscribers.clear()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.cancel()
