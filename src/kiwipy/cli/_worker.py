"""A task worker that drains: on stop it takes no new task, finishes what runs, requeues the rest.

Tasks arrive through a task subscriber that returns at once with a future (kiwipy's pending
protocol); ``concurrency`` threads run them. A task not started when the worker drains or is
told to is given back to the queue; one running is finished and replied to before the worker
closes. With ``name``, the worker answers the RPCs ``"pause"``, ``"play"`` and ``"status"`` at
that identifier; with ``events`` it broadcasts ``task.<id>.started`` / ``task.<id>.finished``
(sender: its name), where ``<id>`` is the task's ``"id"`` field or the worker's own count.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import importlib
import inspect
import itertools
import logging
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from kiwipy.aio import current_incoming_task
from kiwipy.aio._incoming import IncomingTask
from kiwipy.sync import Communicator

__all__ = ("Worker", "load_function")

_LOGGER = logging.getLogger(__name__)
_STOP = object()

TaskFunction = Callable[..., Any]


def load_function(spec: str) -> TaskFunction:
    """Import ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted); the current directory is on
    the path, as for ``python -m``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"Expected MODULE:FUNCTION, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
        raise ValueError(
            f"Cannot import module {module_name!r}: {where}: {type(exc).__name__}: {exc.msg}"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"Cannot import module {module_name!r}: {_where(exc)}{type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"Module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return adapt(target)


def _where(exc: BaseException) -> str:
    """``file:line: `` of the innermost frame outside importlib that raised ``exc``."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
        and frame.filename != __file__
        and "importlib" not in frame.filename
    ]
    if not frames:
        return ""
    return f"{frames[-1].filename}:{frames[-1].lineno}: "


def adapt(function: TaskFunction) -> TaskFunction:
    """``function(communicator, task)``, the task subscriber signature; a function taking one
    positional argument is called with the task alone."""
    try:
        parameters = [
            p
            for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):  # builtins without a signature: assume the full one
        return function
    if len(parameters) == 1 and parameters[0].kind != parameters[0].VAR_POSITIONAL:
        return lambda _communicator, task: function(task)
    return function


class _Job:
    __slots__ = ("body", "context", "incoming", "outcome")

    def __init__(self, body: Any, incoming: IncomingTask | None) -> None:
        self.body = body
        self.incoming = incoming
        self.context = contextvars.copy_context()  # current_incoming_task() goes along
        self.outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()


async def _outcome_of(job: _Job) -> Any:
    return await asyncio.wrap_future(job.outcome)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class Worker:
    """Runs ``function`` on the tasks of one queue with ``concurrency`` threads."""

    def __init__(
        self,
        communicator: Communicator,
        function: TaskFunction,
        *,
        queue_name: str,
        prefetch: int,
        concurrency: int = 1,
        name: str | None = None,
        events: bool = False,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.communicator = communicator
        self.function = adapt(function)
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.rpc_name = name
        self.events = events
        self._on_event = on_event or (lambda _line: None)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = 0
        self._done = 0
        self._failed = 0
        self._requeued = 0
        self._draining = False
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._idle = threading.Condition(self._lock)
        self._numbers = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._task_queue = communicator.task_queue(queue_name, prefetch_count=prefetch)
        self._subscriber_id: Any = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self.concurrency):
            thread = threading.Thread(
                target=self._run_jobs, name=f"kiwipy-worker-{number + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        if self.rpc_name is not None:
            self.communicator.add_rpc_subscriber(self._on_rpc, self.rpc_name)
        self._subscriber_id = self._task_queue.add_task_subscriber(self._on_task)

    def drain(self, timeout: float | None = None) -> bool:
        """Stop taking tasks, requeue those not started, wait for those running (at most
        ``timeout`` s); ``True`` when nothing runs any more."""
        with self._lock:
            self._draining = True
        self._unpaused.set()  # paused jobs wake up to be requeued
        if self._subscriber_id is not None:
            subscriber, self._subscriber_id = self._subscriber_id, None
            self._task_queue.remove_task_subscriber(subscriber)
        if self.rpc_name is not None:
            try:
                self.communicator.remove_rpc_subscriber(self.rpc_name)
            except Exception as exc:  # the connection may be gone: nothing to remove then
                _LOGGER.debug("Could not remove the RPC subscriber: %s", exc)
        for _ in self._threads:
            self._jobs.put(_STOP)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        # Whatever the threads did not reach (a timeout) is requeued now.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                self._requeue(job)
        return not any(thread.is_alive() for thread in self._threads)

    # -- control ---------------------------------------------------------------------------------

    def pause(self) -> None:
        """Start no new task until :meth:`play` (tasks held meanwhile wait, up to prefetch)."""
        self._unpaused.clear()

    def play(self) -> None:
        self._unpaused.set()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "queue": self.queue_name,
                "paused": not self._unpaused.is_set(),
                "draining": self._draining,
                "running": self._running,
                "done": self._done,
                "failed": self._failed,
                "requeued": self._requeued,
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

    def _on_task(self, _communicator: Any, body: Any) -> Coroutine[Any, Any, Any]:
        # Runs on the communicator's callback lane: return at once, the threads do the work.
        # A coroutine (not a future) is awaited on the loop: the outcome is the task's result,
        # with no "pending" answer to the sender as a returned future would cause.
        job = _Job(body, current_incoming_task())
        self._jobs.put(job)
        return _outcome_of(job)

    def _run_jobs(self) -> None:
        # An ``async def`` task function runs to completion on this thread's own event loop
        # (never the communicator's: a slow coroutine must not stall heartbeats and acks).
        loop = asyncio.new_event_loop()
        try:
            self._run_jobs_with(loop)
        finally:
            loop.close()

    def _run_jobs_with(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            self._unpaused.wait()
            with self._lock:
                draining = self._draining
                if not draining:
                    self._running += 1
            if draining:
                self._requeue(job)
                continue
            try:
                self._run(job, loop)
            finally:
                with self._lock:
                    self._running -= 1

    def _call(self, job: _Job, loop: asyncio.AbstractEventLoop) -> Any:
        result = job.context.run(self.function, self.communicator, job.body)
        if inspect.isawaitable(result):
            # The task runs in the job's context: current_incoming_task() works inside it.
            result = job.context.run(loop.run_until_complete, _awaited(result))
        return result

    def _run(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        task_id = job.body.get("id") if isinstance(job.body, dict) else None
        if task_id is None:
            task_id = next(self._numbers)
        self._event(f"task.{task_id}.started", {"id": task_id})
        started = time.monotonic()
        try:
            result = self._call(job, loop)
        except Exception as exc:
            with self._lock:
                self._failed += 1
            self._on_event(f"task {task_id} failed: {type(exc).__name__}: {exc}")
            self._event(f"task.{task_id}.failed", {"id": task_id, "error": repr(exc)})
            job.outcome.set_exception(exc)
            return
        seconds = time.monotonic() - started
        with self._lock:
            self._done += 1
        self._on_event(f"task {task_id} done in {seconds:.2f} s")
        self._event(f"task.{task_id}.finished", {"id": task_id, "seconds": round(seconds, 3)})
        job.outcome.set_result(result)

    def _requeue(self, job: _Job) -> None:
        """Give an unstarted task back to the queue; its outcome then settles nothing."""
        incoming = job.incoming
        if incoming is not None:
            try:
                asyncio.run_coroutine_threadsafe(
                    incoming.requeue(), self.communicator.loop()
                ).result(timeout=10)
            except Exception as exc:  # lost already: the broker has it back anyway
                _LOGGER.debug("Could not requeue a task: %s", exc)
        with self._lock:
            self._requeued += 1
        job.outcome.set_result(None)  # the task is requeued: finishing it is a no-op

    def _event(self, subject: str, body: dict[str, Any]) -> None:
        if not self.events:
            return
        try:
            self.communicator.broadcast_send(body, sender=self.name, subject=subject)
        except Exception as exc:
            _LOGGER.warning("Could not broadcast %s: %s", subject, exc)
