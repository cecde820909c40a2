"""Blocking task queues and incoming tasks, delegating to :mod:`kiwipy.aio._tasks`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from kiwipy.aio._futures import done_future
from kiwipy.aio._tasks import AsyncTaskQueue, IncomingTask, TaskState
from kiwipy.exceptions import QueueEmpty
from kiwipy.sync._futures import final_result, to_concurrent
from kiwipy.sync._portal import Portal

__all__ = ("BlockingIncomingTask", "TaskQueue")

T = TypeVar("T")


class TaskQueue:
    """One durable task queue, for blocking code."""

    def __init__(self, queue: AsyncTaskQueue, portal: Portal) -> None:
        self._queue = queue
        self._portal = portal

    def __repr__(self) -> str:
        return f"TaskQueue({self._queue.name!r})"

    @property
    def name(self) -> str:
        return self._queue.name

    def _call(
        self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None, what: str
    ) -> T:
        default = self._queue.settings.operation_timeout
        return self._portal.call_operation(make, timeout, default, what)

    def task_send(
        self,
        task: Any,
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[Any] | None:
        """Send a task; when this returns the broker has confirmed it."""
        send = _send_task(self._queue, self._portal, task, no_reply, deadline, timeout)
        default = self._queue.settings.operation_timeout
        return self._portal.run_operation(send, timeout, default, "task_send")

    def task_call(
        self, task: Any, *, deadline: float | None = None, timeout: float | None = None
    ) -> Any:
        """Send a task and wait for its result: the worker's exception is raised here,
        ``DeadlineExceeded`` when ``deadline`` passes (default: none, as for ``task_send``)."""
        future = self.task_send(task, deadline=deadline, timeout=timeout)
        assert future is not None  # a reply was asked for
        return final_result(future)

    def task_send_many(
        self,
        tasks: Iterable[Any],
        no_reply: bool = False,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> list[concurrent.futures.Future[Any] | None]:
        """Send every task with the confirms in flight together; return once all are confirmed.

        If any send fails, the first error is raised after every send has settled (the others
        are then confirmed or failed too, never left running).
        """
        batch = list(tasks)

        async def send_all() -> list[concurrent.futures.Future[Any] | None]:
            futures = await self._queue.task_send_many(
                batch, no_reply, deadline=deadline, timeout=timeout
            )
            return [None if f is None else to_concurrent(f, self._portal) for f in futures]

        return self._call(send_all, timeout, "task_send_many")

    def add_task_subscriber(
        self,
        subscriber: Callable[..., Any],
        identifier: Any = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        return self._call(
            lambda: self._queue.add_task_subscriber(subscriber, identifier),
            timeout,
            "add_task_subscriber",
        )

    def remove_task_subscriber(self, identifier: Any, *, timeout: float | None = None) -> None:
        self._call(
            lambda: self._queue.remove_task_subscriber(identifier),
            timeout,
            "remove_task_subscriber",
        )

    @contextlib.contextmanager
    def next_task(
        self, timeout: float = 5.0, fail: bool = True
    ) -> Iterator[BlockingIncomingTask | None]:
        """Take the next task; one still pending when the block ends is requeued."""
        task = self._call(lambda: self._queue.fetch(timeout), timeout + 5.0, "next_task")
        if task is None and fail:
            raise QueueEmpty(f"No task in queue '{self.name}' within {timeout:g} s")
        wrapped = None if task is None else BlockingIncomingTask(task, self._portal)
        try:
            yield wrapped
        finally:
            if wrapped is not None and wrapped.state == TaskState.PENDING:
                wrapped.requeue()

    def __iter__(self) -> Iterator[BlockingIncomingTask]:
        """Every task now in the queue; those left pending are requeued when iteration ends."""
        fetched: list[BlockingIncomingTask] = []
        try:
            while (task := self._call(lambda: self._queue.fetch(0.0), None, "iterate")) is not None:
                wrapped = BlockingIncomingTask(task, self._portal)
                fetched.append(wrapped)
                yield wrapped
        finally:
            for wrapped in fetched:
                if wrapped.state == TaskState.PENDING:
                    wrapped.requeue()


class BlockingIncomingTask:
    """A task taken from a queue, for blocking code (see :class:`kiwipy.aio.IncomingTask`)."""

    def __init__(self, task: IncomingTask, portal: Portal) -> None:
        self._task = task
        self._portal = portal

    def __repr__(self) -> str:
        return f"BlockingIncomingTask(state={self.state!r}, body={self.body!r})"

    @property
    def body(self) -> Any:
        return self._task.body

    @property
    def no_reply(self) -> bool:
        return self._task.no_reply

    @property
    def state(self) -> str:
        return self._task.state

    @property
    def redelivered(self) -> bool:
        return self._task.redelivered

    @property
    def lost(self) -> bool:
        """See :attr:`kiwipy.aio.IncomingTask.lost`."""
        return self._task.lost

    def add_lost_callback(self, callback: Callable[[BlockingIncomingTask], Any]) -> None:
        """Call ``callback(task)`` if this task is lost (from the loop thread: keep it short,
        for example set a ``threading.Event``)."""
        self._task.add_lost_callback(lambda _task: callback(self))

    def process(self) -> concurrent.futures.Future[Any]:
        """Start processing; resolving the returned future finishes the task on the loop."""

        async def start() -> concurrent.futures.Future[Any]:
            return _forward_to(self._task.process(), self._portal)

        return self._portal.call(start, None, "process")

    def requeue(self) -> None:
        self._portal.call(self._task.requeue, None, "requeue")

    @contextlib.contextmanager
    def processing(self) -> Iterator[concurrent.futures.Future[Any]]:
        """Yield the outcome future; an exception in the block becomes the outcome.

        With the outcome set when the block ends, the task is finished; unset, requeued.
        """
        outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

        async def enter() -> None:
            self._task._start()

        self._portal.call(enter, None, "processing")
        try:
            yield outcome
        except Exception as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            raise
        finally:
            self._portal.call(lambda: self._settle(outcome), None, "processing")

    async def _settle(self, outcome: concurrent.futures.Future[Any]) -> None:
        if not outcome.done():
            await self._task.requeue()
        elif outcome.cancelled():
            await self._task.finish(done_future(cancelled=True))
        elif outcome.exception() is not None:
            await self._task.finish(done_future(exception=outcome.exception()))
        else:
            await self._task.finish(done_future(result=outcome.result()))


async def _send_task(
    queue: AsyncTaskQueue,
    portal: Portal,
    task: Any,
    no_reply: bool,
    deadline: float | None,
    timeout: float | None,
) -> concurrent.futures.Future[Any] | None:
    future = await queue.task_send(task, no_reply, deadline=deadline, timeout=timeout)
    return None if future is None else to_concurrent(future, portal)


def _forward_to(outcome: asyncio.Future[Any], portal: Portal) -> concurrent.futures.Future[Any]:
    """A concurrent future whose resolution, from any thread, resolves ``outcome`` on the loop."""
    proxy: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def forward(done: concurrent.futures.Future[Any]) -> None:
        portal.call_soon(_copy_into, done, outcome)

    proxy.add_done_callback(forward)
    return proxy


def _copy_into(source: concurrent.futures.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
        return
    exception = source.exception()
    if exception is not None:
        target.set_exception(exception)
    else:
        target.set_result(source.result())
