"""Worker processes for the reliability scenarios.

``python -m kiwipy_reliability.workers --url URL --queue Q --exchange X --name W``
subscribes to the task queue and reports, one line each on stdout, what happens to every task::

    EV {"ev": "ready", "w": "W", "t": ...}
    EV {"ev": "start", "w": "W", "id": 7, "r": false, "t": ...}   # r: redelivered
    EV {"ev": "lost", "w": "W", "id": 7, "t": ...}                # the lost-task callback ran
    EV {"ev": "done", "w": "W", "id": 7, "lost": false, "t": ...} # subscriber returned
    EV {"ev": "conn", "w": "W", "up": true, "t": ...}             # link lost / restored

A task body is ``{"id": int, "sleep": float}``: the worker "works" for ``sleep`` seconds. ``t`` is
wall-clock time (``time.time()``), comparable between processes on one machine.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import kiwipy.sync
from kiwipy_reliability.faults import RabbitNode, WorkerProcess

__all__ = [
    "EVENT_PREFIX",
    "WorkerSpec",
    "main",
    "queue_counts",
    "start_worker",
    "worker_command",
]

EVENT_PREFIX = "EV "
_SLICE = 0.05
_print_lock = threading.Lock()


def worker_command(
    url: str,
    queue: str,
    exchange: str,
    name: str,
    *,
    prefetch: int = 50,
    heartbeat: int = 10,
    settings: dict[str, Any] | None = None,
) -> list[str]:
    """The argv that runs one worker (``settings``: more connection options, as JSON)."""
    extra = ["--settings", json.dumps(settings)] if settings else []
    return [
        sys.executable,
        "-u",
        "-m",
        "kiwipy_reliability.workers",
        "--url",
        url,
        "--queue",
        queue,
        "--exchange",
        exchange,
        "--name",
        name,
        "--prefetch",
        str(prefetch),
        "--heartbeat",
        str(heartbeat),
        *extra,
    ]


def emit(event: str, **fields: Any) -> None:
    line = EVENT_PREFIX + json.dumps({"ev": event, **fields, "t": time.time()})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--prefetch", type=int, default=50)
    parser.add_argument("--heartbeat", type=int, default=10)
    parser.add_argument("--settings", default="{}", help="more connection options (JSON)")
    args = parser.parse_args(argv)
    name: str = args.name
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def work(_comm: Any, task: dict[str, Any]) -> None:
        task_id = task["id"]
        incoming = kiwipy.sync.current_incoming_task()
        redelivered = bool(incoming.redelivered) if incoming is not None else False
        emit("start", w=name, id=task_id, r=redelivered)
        if incoming is not None:
            incoming.add_lost_callback(lambda _task: emit("lost", w=name, id=task_id))
        deadline = time.monotonic() + float(task.get("sleep", 0.0))
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(_SLICE, remaining))
        lost = bool(incoming.lost) if incoming is not None else False
        emit("done", w=name, id=task_id, lost=lost)

    comm = kiwipy.sync.connect(
        args.url,
        task_queue=args.queue,
        task_exchange=args.exchange,
        task_prefetch_count=args.prefetch,
        heartbeat=args.heartbeat,
        **json.loads(args.settings),
    )
    comm.add_connection_callback(
        lambda _comm, up, exc: emit("conn", w=name, up=bool(up), error=repr(exc) if exc else None)
    )
    try:
        comm.add_task_subscriber(work)
        emit("ready", w=name)
        while not stop.wait(0.5):
            pass
    finally:
        comm.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# -- driver-side helpers -------------------------------------------------------------------------


class WorkerSpec:
    """Where the workers of one scenario connect and what they consume."""

    def __init__(
        self,
        url: str,
        queue: str,
        exchange: str,
        *,
        prefetch: int = 50,
        heartbeat: int = 10,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.queue = queue
        self.exchange = exchange
        self.prefetch = prefetch
        self.heartbeat = heartbeat
        self.settings = dict(settings or {})

    def command(self, name: str) -> list[str]:
        return worker_command(
            self.url,
            self.queue,
            self.exchange,
            name,
            prefetch=self.prefetch,
            heartbeat=self.heartbeat,
            settings=self.settings,
        )


def start_worker(spec: WorkerSpec, name: str, *, ready_timeout: float = 30.0) -> WorkerProcess:
    """Start a worker process and wait until it has subscribed (its ``ready`` event)."""
    worker = WorkerProcess(spec.command(name)).start()
    try:
        worker.wait_for_line(EVENT_PREFIX + '{"ev": "ready"', timeout=ready_timeout)
    except BaseException:
        worker.close()
        raise
    return worker


def queue_counts(node: RabbitNode, queue: str) -> tuple[int, int, int] | None:
    """``(consumers, messages_ready, messages_unacknowledged)`` of ``queue`` on ``node``."""
    out = node.ctl(
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "consumers",
        "messages_ready",
        "messages_unacknowledged",
        timeout=30.0,
    )
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == queue:
            return int(parts[1]), int(parts[2]), int(parts[3])
    return None
