"""A task worker for asyncio code: ``concurrency`` tasks at once, drained on stop.

A plain task subscriber runs one task at a time, whatever its ``prefetch_count`` (the others
wait, held, in its lane). :class:`Worker` runs up to ``concurrency`` at once: ``async def``
functions as tasks on the loop, plain functions on a pool of ``concurrency`` threads.

Draining (:meth:`Worker.drain`) takes no new task, finishes the running ones (their senders get
the results) and gives the held, unstarted ones back to the queue; :meth:`Worker.stop_now` gives
back everything, the running tasks included (their results are then dropped). With ``name`` the
worker answers the RPCs ``"pause"``, ``"play"`` and ``"status"`` until it is gone (a draining
worker says so); with ``events`` it broadcasts ``task.<id>.started`` / ``.finished`` /
``.failed`` (sender: its name), ``<id>`` being the task's ``"id"`` field or the worker's count.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from kiwipy.aio._communicator import AsyncCommunicator
from kiwipy.aio._incoming import IncomingTask, current_incoming_task, reset_current_incoming_task

__all__ = ("TaskFunction", "Worker", "adapt")

_LOGGER = logging.getLogger(__name__)

#: ``function(communicator, task)`` or ``function(task)``; plain or ``async def``.
TaskFunction = Callable[..., Any]


def adapt(function: TaskFunction) -> TaskFunction:
    """``function`` as ``f(communicator, task)``; one taking one positional argument is called
    with the task alone. ``async def`` stays ``async def``."""
    try:
        parameters = [
            p
            for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):  # builtins without a signature: assume the full one
        return function
    if len(parameters) != 1 or parameters[0].kind == parameters[0].VAR_POSITIONAL:
        return function
    if inspect.iscoroutinefunction(function):

        async def one_async(_communicator: Any, task: Any) -> Any:
            return await function(task)

        return one_async
    return lambda _communicator, task: function(task)


class _Job:
    __slots__ = ("body", "incoming", "outcome", "runner")

    def __init__(self, body: Any, incoming: IncomingTask | None) -> None:
        self.body = body
        self.incoming = incoming
        self.outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.runner: asyncio.Task[None] | None = None


class Worker:
    """Runs ``function`` on the tasks of ``queue`` (default: the communicator's default queue),
    up to ``concurrency`` at a time, holding up to ``prefetch`` (default: ``concurrency``).

    ``function(communicator, task)`` (or ``function(task)``) may be ``async def`` (run on the
    loop) or plain (run on the worker's threads). Its return value is the task's result, an
    exception its error. Inside it, :func:`kiwipy.aio.current_incoming_task` is the task: its
    ``lost`` turns true if the broker took the task back (the connection died).
    """

    def __init__(
        self,
        communicator: AsyncCommunicator,
        function: TaskFunction,
        *,
        queue: str | None = None,
        concurrency: int = 1,
        prefetch: int | None = None,
        name: str | None = None,
        events: bool = False,
        on_event: Callable[[str], None] | None = None,
        target: Any = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.communicator = communicator
        self.function = adapt(function)
        self.queue_name = queue or communicator.settings.task_queue
        self.concurrency = concurrency
        self.prefetch = prefetch or concurrency
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.rpc_name = name
        self.events = events
        self._on_event = on_event or (lambda _line: None)
        #: What the function gets as its first argument (the blocking facade passes itself).
        self._target = communicator if target is None else target
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._held: set[_Job] = set()
        self._counts = {"running": 0, "done": 0, "failed": 0, "requeued": 0}
        self._draining = False
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._numbers = itertools.count(1)
        self._runners: list[asyncio.Task[None]] = []
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._subscriber: Any = None
        self._rpc_bound = False
        self._started = False

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, queue={self.queue_name!r}, concurrency={self.concurrency})"

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start taking tasks (and answering RPCs at ``name``)."""
        if self._started:
            return
        self._started = True
        if not inspect.iscoroutinefunction(self.function):
            self._threads = concurrent.futures.ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="kiwipy-worker"
            )
        self._runners = [asyncio.ensure_future(self._run_jobs()) for _ in range(self.concurrency)]
        if self.rpc_name is not None:
            await self.communicator.add_rpc_subscriber(self._on_rpc, self.rpc_name)
            self._rpc_bound = True
        queue = await self.communicator.task_queue(self.queue_name, prefetch_count=self.prefetch)
        self._subscriber = await queue.add_task_subscriber(self._on_task)

    async def drain(self, timeout: float | None = None) -> bool:
        """Take no new task, give back those held but not started, finish those running (at
        most ``timeout`` s; then they are given back too). ``True`` when all finished in time.

        The RPC endpoint answers (``"draining": true``) until the end.
        """
        if not self._started:
            return True
        await self._stop_taking()
        self._unpaused.set()  # paused runners wake up to give their jobs back
        running = [job.runner for job in self._held if job.runner is not None]
        for runner in self._runners:
            if runner not in running:
                runner.cancel()
        finished = True
        if running:
            _done, pending = await asyncio.wait(running, timeout=timeout)
            finished = not pending
        await self._give_back_all()
        await self._close()
        return finished

    async def stop_now(self) -> None:
        """Give every held task back to the queue, the running ones included, and stop.

        An ``async def`` function is cancelled; a plain one runs on, but its result is dropped.
        """
        if not self._started:
            return
        await self._stop_taking()
        await self._give_back_all()
        await self._close()

    async def _stop_taking(self) -> None:
        self._draining = True
        if self._subscriber is not None:
            subscriber, self._subscriber = self._subscriber, None
            queue = await self.communicator.task_queue(
                self.queue_name, prefetch_count=self.prefetch
            )
            with contextlib.suppress(Exception):  # the connection may be gone
                await queue.remove_task_subscriber(subscriber)

    async def _give_back_all(self) -> None:
        for job in list(self._held):
            await self._give_back(job)
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)

    async def _close(self) -> None:
        if self._rpc_bound:
            self._rpc_bound = False
            try:
                await self.communicator.remove_rpc_subscriber(self.rpc_name)
            except Exception as exc:  # the connection may be gone: nothing to remove then
                _LOGGER.debug("Could not remove the RPC subscriber: %s", exc)
        if self._threads is not None:
            self._threads.shutdown(wait=False)

    # -- control ---------------------------------------------------------------------------------

    def pause(self) -> None:
        """Start no new task until :meth:`play` (held tasks wait, up to ``prefetch``)."""
        self._unpaused.clear()

    def play(self) -> None:
        self._unpaused.set()

    def status(self) -> dict[str, Any]:
        """What the RPC ``"status"`` answers."""
        return {
            "name": self.name,
            "queue": self.queue_name,
            "paused": not self._unpaused.is_set(),
            "draining": self._draining,
            **self._counts,
            "concurrency": self.concurrency,
            "prefetch": self.prefetch,
            "pid": os.getpid(),
        }

    def _on_rpc(self, _communicator: Any, message: Any) -> Any:
        if message == "pause":
            self.pause()
        elif message == "play":
            self.play()
        elif message != "status":
            raise ValueError(f"Unknown request {message!r}: ask 'pause', 'play' or 'status'")
        return self.status()

    # -- tasks -----------------------------------------------------------------------------------

    async def _on_task(self, _communicator: Any, body: Any) -> Any:
        # Awaited on the loop: the outcome is the task's result, with no "pending" answer.
        job = _Job(body, current_incoming_task())
        self._held.add(job)
        if self._draining:
            await self._give_back(job)
        else:
            self._jobs.put_nowait(job)
        return await job.outcome

    async def _run_jobs(self) -> None:
        while True:
            job = await self._jobs.get()
            await self._unpaused.wait()
            if self._draining or job.outcome.done():
                await self._give_back(job)
                continue
            job.runner = asyncio.current_task()
            try:
                await self._run(job)
            finally:
                job.runner = None
                self._held.discard(job)
            if self._draining:  # drain() waits for this runner: its job is done
                return

    async def _run(self, job: _Job) -> None:
        task_id = job.body.get("id") if isinstance(job.body, dict) else None
        if task_id is None:
            task_id = next(self._numbers)
        self._counts["running"] += 1
        await self._event(f"task.{task_id}.started", {"id": task_id})
        started = time.monotonic()
        try:
            result = await self._call(job)
        except Exception as exc:
            self._counts["failed"] += 1
            self._on_event(f"task {task_id} failed: {type(exc).__name__}: {exc}")
            await self._event(f"task.{task_id}.failed", {"id": task_id, "error": repr(exc)})
            if not job.outcome.done():
                job.outcome.set_exception(exc)
            return
        finally:
            self._counts["running"] -= 1
        seconds = time.monotonic() - started
        self._counts["done"] += 1
        self._on_event(f"task {task_id} done in {seconds:.2f} s")
        await self._event(f"task.{task_id}.finished", {"id": task_id, "seconds": round(seconds, 3)})
        if not job.outcome.done():
            job.outcome.set_result(result)

    async def _call(self, job: _Job) -> Any:
        """The function's result, with the job's task as the current incoming task."""
        token = job.incoming.bind_to_context() if job.incoming is not None else None
        try:
            if self._threads is None:
                result = self.function(self._target, job.body)
            else:
                call = functools.partial(
                    contextvars.copy_context().run, self.function, self._target, job.body
                )
                result = await asyncio.get_running_loop().run_in_executor(self._threads, call)
            if inspect.isawaitable(result):  # e.g. a lambda around an async function
                result = await result
            return result
        finally:
            if token is not None:
                reset_current_incoming_task(token)

    async def _give_back(self, job: _Job) -> None:
        """Requeue a held task; its outcome then settles nothing."""
        if job not in self._held:
            return
        self._held.discard(job)
        if job.incoming is not None:
            try:
                await job.incoming.requeue()
            except Exception as exc:  # lost already: the broker has it back anyway
                _LOGGER.debug("Could not requeue a task: %s", exc)
        self._counts["requeued"] += 1
        if job.runner is not None and job.runner is not asyncio.current_task():
            job.runner.cancel()
        if not job.outcome.done():
            job.outcome.set_result(None)  # the task is requeued: finishing it is a no-op

    async def _event(self, subject: str, body: dict[str, Any]) -> None:
        if not self.events:
            return
        try:
            await self.communicator.broadcast_send(body, sender=self.name, subject=subject)
        except Exception as exc:
            _LOGGER.warning("Could not broadcast %s: %s", subject, exc)
