"""What the peers' drivers and workers share (standard library only: every venv runs it).

A peer's script is ``bench/common.py``'s driver / worker command line with two patterns,
``tasks`` (workloads (a) with ``--no-reply`` and (b)) and ``task_latency`` (c), and worker
kinds ``tasks`` and ``tasks_noreply`` (a worker knows before it connects whether results are
stored). The worker's side of the READY / DONE / BYE protocol is ``bench/workers.py``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import _bench_path  # noqa: F401 (bench/ on sys.path)
import workers
from common import Names, Result, latency_summary, payload

#: Unacknowledged messages a worker may hold, as raw aiormq's and our workers (prefetch 100).
PREFETCH = 100
#: Where the peers without an AMQP result path keep results (dramatiq, taskiq).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def sequential_summary(seconds: list[float], elapsed: float) -> Result:
    """Workload (c): latency percentiles, and the rate of the calls one after the other."""
    return {**latency_summary(seconds), "rate_per_s": round(len(seconds) / elapsed, 1)}


def payloads(first: int, stop: int) -> list[dict[str, Any]]:
    return [payload(i) for i in range(first, stop)]


def names(args: argparse.Namespace) -> Names:
    return Names.from_json(args.names)


def prefix(args: argparse.Namespace) -> str:
    """The measurement's own prefix (``bench-<hex>``), for names a peer makes itself."""
    return names(args).task_queue.rsplit(".", 1)[0]


def worker_kind(args: argparse.Namespace) -> str:
    return "tasks_noreply" if args.no_reply else "tasks"


def pool(script: str, args: argparse.Namespace, count: int) -> workers.WorkerPool:
    """The one worker process of a peer driver (``count`` tasks expected)."""
    return workers.pool(script, args, worker_kind(args), count)


def serve(counter: workers.Counter, start: Callable[[], Any], stop: Callable[[], Any]) -> None:
    """Blocking worker: start the library's worker, READY, wait for stdin EOF, stop, BYE."""
    start()
    counter.ready()
    try:
        workers.wait_for_stop()
    finally:
        stop()
    workers.say_bye(counter)
