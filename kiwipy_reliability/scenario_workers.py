"""Worker processes for the fault scenarios (``consumer_timeout``, ``malformed``).

Run as ``python -m kiwipy_reliability.scenario_workers <kind> <json options>``. A
worker connects to the broker, subscribes to its task queue and reports on stdout, one event
per line, so the scenario (in another process) can follow it:

* ``READY <pid>`` once subscribed;
* ``CONN <0|1>`` when the link to the broker is lost (0) or restored (1);
* ``DONE <id> <redelivered 0|1> <lost 0|1>`` when a task handler ends (``lost``: the task's
  channel died under it, so its ack is dropped);
* ``LONG <id> <redelivered>`` when a long task starts, ``LOST <id>`` when its handler is told
  the task was lost, ``LONG_END <id> <told 0|1>`` when it ends;
* ``VALID <id> <redelivered>`` for each valid task of the ``malformed`` scenario.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiwipy_reliability.faults import RabbitNode, WorkerProcess

__all__ = ["WorkerLog", "main", "queue_table", "start_worker"]


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _timeout_worker(options: dict[str, Any]) -> Any:
    """Short tasks return at once; a long one waits until it is told it lost the task."""
    from kiwipy import sync

    def subscriber(_comm: Any, body: dict[str, Any]) -> str:
        task = sync.current_incoming_task()
        assert task is not None
        ident = str(body["id"])
        if body.get("kind") == "long" and not task.redelivered:
            told = threading.Event()

            def on_lost(_task: Any) -> None:
                _say(f"LOST {ident}")
                told.set()

            _say(f"LONG {ident} {_flag(task.redelivered)}")
            task.add_lost_callback(on_lost)
            told.wait(float(body["duration"]))  # stop working once told the task is lost
            _say(f"LONG_END {ident} {_flag(told.is_set())}")
        _say(f"DONE {ident} {_flag(task.redelivered)} {_flag(task.lost)}")
        return ident

    comm = sync.connect(options["url"], **options["settings"])
    comm.add_connection_callback(lambda _c, connected, _exc: _say(f"CONN {_flag(connected)}"))
    comm.add_task_subscriber(subscriber)
    return comm


def _malformed_worker(options: dict[str, Any]) -> Any:
    """Counts valid tasks; everything else is the library's business (dead-lettering)."""
    from kiwipy import sync

    def subscriber(_comm: Any, body: Any) -> None:
        task = sync.current_incoming_task()
        redelivered = task is not None and task.redelivered
        ident = body.get("id") if isinstance(body, dict) else None
        _say(f"VALID {ident} {_flag(redelivered)}")

    comm = sync.connect(options["url"], **options["settings"])
    comm.add_connection_callback(lambda _c, connected, _exc: _say(f"CONN {_flag(connected)}"))
    comm.add_task_subscriber(subscriber)
    return comm


# -- used by the scenarios (the parent process) ------------------------------------------------


class WorkerLog:
    """The events a scenario worker printed so far, read with deadlines."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.events: list[list[str]] = []

    def pump(self, timeout: float) -> bool:
        """Read one line (at most ``timeout`` s); ``False`` when the output ended."""
        try:
            line = self.worker.read_line(timeout)
        except TimeoutError:
            return True
        if line is None:
            return False
        parts = line.split()
        if parts and parts[0].isupper():
            self.events.append(parts)
        return True

    def wait(self, done: Callable[[WorkerLog], bool], timeout: float) -> bool:
        """Read lines until ``done(self)`` holds or ``timeout`` s pass; return whether it held."""
        deadline = time.monotonic() + timeout
        while not done(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not self.pump(min(remaining, 0.2)) and not done(self):
                return False
        return True

    def of(self, kind: str) -> list[list[str]]:
        return [event for event in self.events if event[0] == kind]


def start_worker(kind: str, url: str, settings: dict[str, Any]) -> WorkerProcess:
    """Start a scenario worker process (wait for its ``READY`` line yourself)."""
    options = json.dumps({"url": url, "settings": settings})
    argv = [sys.executable, "-u", "-m", __name__, kind, options]
    from kiwipy_reliability.faults import WorkerProcess

    return WorkerProcess(argv).start()


def queue_table(node: RabbitNode, *items: str) -> dict[str, list[str]]:
    """``rabbitmqctl list_queues name <items>`` as ``{name: [values]}``."""
    output = node.ctl("list_queues", "--quiet", "--no-table-headers", "name", *items)
    table: dict[str, list[str]] = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) == len(items) + 1:
            table[fields[0]] = fields[1:]
    return table


_WORKERS = {"timeout": _timeout_worker, "malformed": _malformed_worker}


def main(argv: list[str]) -> int:
    kind, raw = argv[0], argv[1]
    options = json.loads(raw)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    comm = _WORKERS[kind](options)
    _say(f"READY {os.getpid()}")
    try:
        stop.wait()
    finally:
        comm.close()
    _say("BYE")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
