"""A task worker for blocking code: ``concurrency`` tasks at once, drained on SIGINT / SIGTERM.

A plain task subscriber runs ONE task at a time, whatever its ``prefetch_count``: the others
wait, held, for its turn (100 tasks of 2 s take 200 s). :class:`Worker` runs up to
``concurrency`` at once::

    import kiwipy

    def simulate(task):
        return {"energy": -0.5 * task["atoms"]}

    with kiwipy.connect() as comm:
        kiwipy.Worker(comm, simulate, queue="simulations", concurrency=4).run()

:meth:`Worker.run` blocks until SIGINT or SIGTERM, then drains: it takes no new task, finishes
the running ones (their senders get the results) and gives the held, unstarted ones back to the
queue. A second signal gives back everything, the running tasks included. It is a thin facade
over :class:`kiwipy.aio.Worker`, on the communicator's event loop.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar

from kiwipy.aio._worker import TaskFunction
from kiwipy.aio._worker import Worker as AsyncWorker
from kiwipy.exceptions import ConnectionLost
from kiwipy.sync import Communicator

__all__ = ("Worker",)

T = TypeVar("T")


class Worker:
    """Runs ``function`` on the tasks of ``queue`` (default: the communicator's default queue),
    up to ``concurrency`` at a time, holding up to ``prefetch`` (default: ``concurrency``).

    ``function(communicator, task)`` or ``function(task)``: a plain function runs on one of the
    worker's ``concurrency`` threads; an ``async def`` one on the communicator's event loop (keep
    it from blocking: heartbeats run there too). Its return value is the task's result, an
    exception its error. Inside it, :func:`kiwipy.sync.current_incoming_task` is the task; its
    ``lost`` turns true if the broker took the task back (the connection died).

    With ``name`` it answers the RPCs ``"pause"``, ``"play"`` and ``"status"`` at that
    identifier until it is gone (``"draining": true`` while it drains); with ``events`` it
    broadcasts ``task.<id>.started`` / ``.finished`` / ``.failed`` (sender: its name).
    ``on_event(line)`` gets one line per task (the ``kiwipy worker`` command prints them).
    """

    def __init__(
        self,
        communicator: Communicator,
        function: TaskFunction,
        *,
        queue: str | None = None,
        concurrency: int = 1,
        prefetch: int | None = None,
        name: str | None = None,
        events: bool = False,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.communicator = communicator
        self._stop: threading.Event | None = None
        self._forced = False

        async def create() -> AsyncWorker:
            return AsyncWorker(
                communicator.asyncio_communicator,
                function,
                queue=queue,
                concurrency=concurrency,
                prefetch=prefetch,
                name=name,
                events=events,
                on_event=on_event,
                target=communicator,
            )

        self._worker = self._call(create, None)

    def __repr__(self) -> str:
        return repr(self._worker)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.drain()

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(make(), self.communicator.loop())
        return future.result(timeout)

    @property
    def name(self) -> str:
        return self._worker.name

    @property
    def queue_name(self) -> str:
        return self._worker.queue_name

    @property
    def concurrency(self) -> int:
        return self._worker.concurrency

    @property
    def prefetch(self) -> int:
        return self._worker.prefetch

    def start(self, timeout: float | None = None) -> None:
        """Start taking tasks (and answering RPCs at ``name``)."""
        self._call(self._worker.start, timeout or self.communicator.settings.operation_timeout)

    def drain(self, timeout: float | None = None) -> bool:
        """Take no new task, give back the held ones not started, finish the running ones (at
        most ``timeout`` s, then they are given back too); ``True`` when all finished in time."""
        return self._call(lambda: self._worker.drain(timeout), None)

    def stop_now(self) -> None:
        """Give every held task back to the queue, the running ones included, and stop. A plain
        function still running goes on in its thread, but its result is dropped."""
        self._call(self._worker.stop_now, None)

    def pause(self) -> None:
        """Start no new task until :meth:`play`."""
        self.communicator.loop().call_soon_threadsafe(self._worker.pause)

    def play(self) -> None:
        self.communicator.loop().call_soon_threadsafe(self._worker.play)

    def status(self) -> dict[str, Any]:
        """What the RPC ``"status"`` answers: counts, ``paused``, ``draining``..."""

        async def status() -> dict[str, Any]:
            return self._worker.status()

        return self._call(status, None)

    def run(self, *, handle_signals: bool = True, drain_timeout: float | None = None) -> bool:
        """Start, then block until SIGINT or SIGTERM (or :meth:`request_stop`), then drain.

        A second signal while draining gives everything back (:meth:`stop_now`). Returns
        ``True`` after a complete drain, ``False`` after a second signal. Raises
        :class:`~kiwipy.exceptions.ConnectionLost` if the connection is lost for good.
        ``handle_signals=False`` (or a thread other than the main one) leaves the signal
        handlers alone.
        """
        stop = self._stop = threading.Event()
        self._forced = False
        lost: list[BaseException] = []

        def on_close(_communicator: Any, exc: BaseException | None) -> None:
            if exc is not None:
                lost.append(exc)
                stop.set()

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            self.request_stop()

        previous: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            previous = {
                sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
            }
        try:
            self.communicator.add_close_callback(on_close)
            self.start()
            while not stop.wait(0.25):
                pass
            if lost:
                raise ConnectionLost(f"Connection lost for good: {lost[0]}")
            running = self.status()["running"]
            self._worker._on_event(
                f"draining: taking no new task, finishing {running} running, requeuing the rest"
            )
            finished = self.drain(drain_timeout)
            return finished and not self._forced
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def request_stop(self) -> None:
        """What a signal does to :meth:`run`: the first drains, the second gives all back."""
        stop = self._stop
        if stop is None:
            return
        if stop.is_set():
            self._forced = True
            self._worker._on_event("second signal: giving every task back to the queue")
            asyncio.run_coroutine_threadsafe(self._worker.stop_now(), self.communicator.loop())
        stop.set()
