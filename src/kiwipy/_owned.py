"""Background tasks with an owner: the one helper the core and every transport use.

asyncio keeps only weak references to tasks, so a task nobody holds can vanish mid-way, and a
task that fails with nobody awaiting it reports its error late or never. :class:`OwnedTasks`
holds every task it started, logs a failure once, and cancels and awaits them all when its owner
closes, so nothing is orphaned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ("OwnedTasks",)

_LOGGER = logging.getLogger(__name__)


class OwnedTasks:
    """The background tasks of one owner (a communicator, a transport).

    After :meth:`close`, :meth:`spawn` still returns a task, but one cancelled before it ran:
    its owner is gone, so nothing more may start on its behalf.
    """

    def __init__(self, logger: logging.Logger = _LOGGER) -> None:
        self._tasks: dict[asyncio.Task[Any], str] = {}
        self._logger = logger
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` as an owned task; ``what`` names it in the log if it fails.

        An empty ``what`` means the coroutine reports its own failures.
        """
        task = asyncio.ensure_future(coro)
        if self._closed:
            task.cancel()
            return task
        self._tasks[task] = what
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        what = self._tasks.pop(task, "")
        if what and not task.cancelled() and task.exception() is not None:
            self._logger.error("%s failed", what, exc_info=task.exception())

    async def close(self) -> None:
        """Cancel every task (but the calling one) and wait until they have finished."""
        self._closed = True
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
