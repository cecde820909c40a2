"""Drive a blocking communicator from async test code, so one suite covers both facades.

Every blocking call runs in a worker thread (``asyncio.to_thread``), so the test's own event loop
stays free while the communicator's loop thread and callback thread do their work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from kiwipy.settings import Settings
from kiwipy.sync._communicator import Communicator
from kiwipy.sync._tasks import BlockingIncomingTask, TaskQueue

__all__ = ("BlockingDriver", "connect_blocking")


async def connect_blocking(url: str, **options: Any) -> BlockingDriver:
    settings = Settings.from_url(url, **options)
    return BlockingDriver(await asyncio.to_thread(Communicator, settings))


def _threaded(method: Callable[..., Any]) -> Callable[..., Any]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, *args, **kwargs)

    return call


class _LoopProxy:
    """Runs an object's coroutine methods on the communicator's own loop."""

    def __init__(self, target: Any, communicator: Communicator) -> None:
        self._target = target
        self._communicator = communicator

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            future = asyncio.run_coroutine_threadsafe(
                method(*args, **kwargs), self._communicator.loop()
            )
            return await asyncio.wrap_future(future)

        return call


class BlockingDriver:
    """The asyncio-shaped API over a blocking :class:`Communicator` (``wrapped``)."""

    def __init__(self, communicator: Communicator) -> None:
        self.wrapped = communicator
        self.settings = communicator.settings
        self.transport = _LoopProxy(communicator.asyncio_communicator.transport, communicator)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.wrapped, name)
        return _threaded(attribute) if callable(attribute) else attribute

    def is_closed(self) -> bool:
        return self.wrapped.is_closed()

    async def task_queue(self, *args: Any, **kwargs: Any) -> _QueueDriver:
        return _QueueDriver(await asyncio.to_thread(self.wrapped.task_queue, *args, **kwargs))


class _QueueDriver:
    def __init__(self, queue: TaskQueue) -> None:
        self.wrapped = queue

    def __getattr__(self, name: str) -> Any:
        return _threaded(getattr(self.wrapped, name))

    @contextlib.asynccontextmanager
    async def next_task(self, **kwargs: Any) -> AsyncIterator[_TaskDriver | None]:
        manager = self.wrapped.next_task(**kwargs)
        task = await asyncio.to_thread(manager.__enter__)
        try:
            yield None if task is None else _TaskDriver(task)
        except BaseException as exc:
            if not await asyncio.to_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
                raise
        else:
            await asyncio.to_thread(manager.__exit__, None, None, None)

    async def __aiter__(self) -> AsyncIterator[_TaskDriver]:
        iterator = iter(self.wrapped)
        sentinel = object()
        try:
            while (task := await asyncio.to_thread(next, iterator, sentinel)) is not sentinel:
                assert isinstance(task, BlockingIncomingTask)
                yield _TaskDriver(task)
        finally:
            await asyncio.to_thread(iterator.close)  # type: ignore[attr-defined]


class _TaskDriver:
    def __init__(self, task: BlockingIncomingTask) -> None:
        self.wrapped = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    @contextlib.asynccontextmanager
    async def processing(self) -> AsyncIterator[Any]:
        manager = self.wrapped.processing()
        outcome = await asyncio.to_thread(manager.__enter__)
        try:
            yield outcome
        except BaseException as exc:
            if not await asyncio.to_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
                raise
        else:
            await asyncio.to_thread(manager.__exit__, None, None, None)
