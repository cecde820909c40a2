"""Worker processes and the line protocol between a driver and its workers.

A worker connects, subscribes, prints ``READY``; when it has received the ``--count``
messages it expects it prints ``DONE {"t_done", "count", "cpu_s"}``; when its stdin closes it
disconnects, prints ``BYE {"count", "rss_mb", "cpu_s"}`` and exits. Standard library only
(it runs under the kiwipy 0.9 interpreter too).
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
from types import TracebackType
from typing import Any

from common import WAIT_TIMEOUT_S, cpu_s, monotonic, peak_rss_mb

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
#: The words of the protocol; a worker's other stdout lines are ignored.
PROTOCOL = ("READY", "DONE", "BYE")

# -- the worker's side ---------------------------------------------------------------------------


class Counter:
    """Counts received messages; prints ``READY`` and, at the last expected one, ``DONE``.

    ``DONE`` carries the time and the CPU seconds this process used since ``READY``.
    """

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.count = 0
        self._lock = threading.Lock()
        self._cpu_at_ready = 0.0

    def ready(self) -> None:
        """Tell the driver we are subscribed."""
        self._cpu_at_ready = cpu_s()
        _say("READY")

    def bump(self) -> None:
        with self._lock:
            self.count += 1
            if self.count == self.expect:
                busy = round(cpu_s() - self._cpu_at_ready, 3)
                _say("DONE", {"t_done": monotonic(), "count": self.count, "cpu_s": busy})

    def answer(self, value: Any) -> Any:
        """Count one message and pass ``value`` through (for one-line subscribers)."""
        self.bump()
        return value


def _say(word: str, info: dict[str, Any] | None = None) -> None:
    line = word if info is None else f"{word} {json.dumps(info)}"
    print(line, flush=True)


def wait_for_stop() -> None:
    """Block until the driver closes our stdin."""
    while sys.stdin.readline():
        pass


def say_bye(counter: Counter) -> None:
    _say("BYE", {"count": counter.count, "rss_mb": peak_rss_mb(), "cpu_s": cpu_s()})


# -- the driver's side ---------------------------------------------------------------------------


class WorkerProcess:
    """One worker subprocess (same interpreter as the driver) and its stdout lines."""

    def __init__(self, script: str, args: list[str]) -> None:
        self._proc = subprocess.Popen(  # noqa: S603 (our own script, no shell)
            [sys.executable, script, "worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        #: What the worker said so far: ``READY``, ``DONE``, ``BYE`` and their information.
        self.said: dict[str, dict[str, Any]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, word: str, timeout: float) -> dict[str, Any]:
        """Wait for the line starting with ``word``; return its JSON part (``{}`` if none)."""
        deadline = monotonic() + timeout
        while word not in self.said:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - monotonic()))
            except queue.Empty:
                raise TimeoutError(f"worker: no {word} within {timeout:g} s") from None
            if line is None:
                raise RuntimeError(f"worker exited (rc={self._proc.wait()}) before {word}")
            said, _, rest = line.partition(" ")
            if said in PROTOCOL:  # a library may print to stdout too (Celery's worker does)
                self.said[said] = json.loads(rest) if rest else {}
        return self.said[word]

    def tell_to_stop(self) -> None:
        """Close stdin: the worker's signal to disconnect and leave."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()

    def stop(self) -> dict[str, Any]:
        """Tell the worker to stop; return its ``BYE`` information."""
        self.tell_to_stop()
        try:
            return self.expect("BYE", STOP_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:
            return {"error": str(exc)}
        finally:
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class WorkerPool:
    """``with WorkerPool(...) as pool``: start ``size`` workers; stop them on exit.

    The workers start while the driver connects; :meth:`ready` waits for their ``READY``.
    """

    def __init__(self, script: str, args: list[str], size: int = 1) -> None:
        self._script = script
        self._args = args
        self._size = size
        self._workers: list[WorkerProcess] = []
        self._stopped: list[WorkerProcess] = []
        self._ready = False
        self.byes: list[dict[str, Any]] = []

    def __enter__(self) -> WorkerPool:
        self._workers = [WorkerProcess(self._script, self._args) for _ in range(self._size)]
        return self

    def ready(self) -> None:
        """Wait until every worker has subscribed."""
        if not self._ready:
            for worker in self._workers:
                worker.expect("READY", READY_TIMEOUT_S)
            self._ready = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_all()

    def _stop_all(self) -> None:
        for worker in self._workers:
            worker.tell_to_stop()
        self.byes = [worker.stop() for worker in self._workers]
        self._stopped, self._workers = self._workers, []

    def done_time(self, timeout: float = WAIT_TIMEOUT_S) -> float:
        """When the last worker got its last expected message (``monotonic`` seconds)."""
        return max(float(worker.expect("DONE", timeout)["t_done"]) for worker in self._workers)

    def summary(self) -> dict[str, Any]:
        """Peak RSS and CPU of the workers (call after the ``with`` block).

        ``worker_cpu_busy_s``: CPU from ``READY`` to the last expected message, all workers.
        """
        errors = [bye["error"] for bye in self.byes if "error" in bye]
        if errors:
            raise RuntimeError(f"worker failed: {errors[0]}")
        dones = [worker.said.get("DONE", {}) for worker in self._stopped]
        return {
            "workers": len(self.byes),
            "worker_rss_mb": max(bye["rss_mb"] for bye in self.byes),
            "worker_cpu_s": round(sum(bye["cpu_s"] for bye in self.byes), 3),
            "worker_cpu_busy_s": round(sum(done.get("cpu_s", 0.0) for done in dones), 3),
        }


def pool(
    script: str,
    args: argparse.Namespace,
    kind: str,
    count: int,
    *,
    flavour: str = "sync",
    size: int = 1,
) -> WorkerPool:
    """``size`` workers of the implementation in ``script`` for the driver with ``args``."""
    worker_args = [
        "--kind",
        kind,
        "--flavour",
        flavour,
        "--count",
        str(count),
        "--names",
        args.names,
        "--url",
        args.url,
    ]
    return WorkerPool(script, worker_args, size)
