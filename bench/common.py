"""What every benchmark process shares: names, payload, statistics, the driver/worker CLI.

Standard library only: the drivers and workers of kiwipy 0.9 run this module under the
interpreter of another virtual environment. Times come from ``time.monotonic()`` (Linux
``CLOCK_MONOTONIC``), so a worker's timestamps compare with its driver's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import resource
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
RESULT_PREFIX = "RESULT "
#: Bound on any single wait for results, replies or workers inside one measurement.
WAIT_TIMEOUT_S = 300.0

monotonic = time.monotonic

Result = dict[str, Any]


def payload(i: int) -> dict[str, Any]:
    """The small task / message body used everywhere (the same as the shared baselines)."""
    return {"i": i, "name": "bench-task", "args": [1, 2.5, "x"], "flag": True}


def answer(message: Any) -> dict[str, Any]:
    """What every task and RPC subscriber returns for ``message``."""
    return {"ok": message["i"]}


def check_answers(results: Sequence[Any], first: int = 0) -> None:
    """Raise unless ``results[k]`` is the answer to ``payload(first + k)`` for every ``k``."""
    wrong = sum(1 for k, result in enumerate(results) if result != {"ok": first + k})
    if wrong:
        raise RuntimeError(f"{wrong} of {len(results)} results are wrong")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (``VmHWM``; it restarts at ``exec``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def cpu_s() -> float:
    """User plus system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 3)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, ``p`` in 0..100."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> Result:
    millis = [s * 1000.0 for s in seconds]
    return {
        "calls": len(millis),
        "p50_ms": round(percentile(millis, 50), 3),
        "p99_ms": round(percentile(millis, 99), 3),
        "mean_ms": round(sum(millis) / len(millis), 3),
    }


class GcProbe:
    """This process's garbage collections from creation to :meth:`stop`: how many of each
    generation, the CPU time spent in them (``gc.callbacks``, the collecting thread's CPU
    clock: a collection preempted on a busy machine does not count the wait) and the objects
    they freed."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.collected = 0
        self.seconds = 0.0
        self.longest_full_s = 0.0
        self._started_at = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started_at = time.thread_time()
            return
        took = time.thread_time() - self._started_at
        generation = info["generation"]
        self.collections[generation] += 1
        self.collected += info["collected"]
        self.seconds += took
        if generation == 2:
            self.longest_full_s = max(self.longest_full_s, took)

    def stop(self, n: int) -> Result:
        """Stop counting; the figures, with the time per 1,000 of ``n`` messages."""
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        return {
            "gc_collections_0": self.collections[0],
            "gc_collections_1": self.collections[1],
            "gc_collections_2": self.collections[2],
            "gc_collected": self.collected,
            "gc_ms_per_1k": round(self.seconds * 1e6 / max(n, 1), 3),
            "gc_full_ms_max": round(self.longest_full_s * 1e3, 3),
        }


class Timer:
    """The timed part of a run: from creation, through "every send confirmed", to the end.

    Also counts this process's CPU and garbage collections over the same span.
    """

    def __init__(self) -> None:
        self._gc = GcProbe()
        self.start = monotonic()
        self.sent = self.start
        self._cpu = cpu_s()

    def all_sent(self) -> None:
        self.sent = monotonic()

    def throughput(self, n: int, end: float) -> Result:
        return {
            "rate_per_s": round(n / (end - self.start), 1),
            "send_rate_per_s": round(n / (self.sent - self.start), 1),
            "total_s": round(end - self.start, 4),
            "driver_cpu_busy_s": round(cpu_s() - self._cpu, 3),
            **self._gc.stop(n),
        }


@dataclasses.dataclass(frozen=True)
class Names:
    """Fresh broker object names for one measurement (every run uses its own)."""

    task_queue: str
    task_exchange: str
    message_exchange: str
    rpc_id: str

    @classmethod
    def fresh(cls) -> Names:
        prefix = f"bench-{uuid.uuid4().hex[:12]}"
        return cls(f"{prefix}.tasks", f"{prefix}.task-ex", f"{prefix}.messages", f"{prefix}-rpc")

    @classmethod
    def from_json(cls, text: str) -> Names:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @property
    def raw_rpc_queue(self) -> str:
        return f"{self.task_queue}.rpc"

    def kiwipy_options(self) -> dict[str, str]:
        """The communicator options (the same keywords in kiwipy 0.9 and ours)."""
        return {
            "message_exchange": self.message_exchange,
            "task_exchange": self.task_exchange,
            "task_queue": self.task_queue,
        }

    def queues(self) -> list[str]:
        """Queues that outlive their connection (the rest are exclusive)."""
        return [self.task_queue, self.raw_rpc_queue]

    def exchanges(self) -> list[str]:
        return [self.task_exchange, self.message_exchange]


# -- the command line of a driver or worker process ----------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One benchmark driver or worker process")
    parser.add_argument("role", choices=["driver", "worker"])
    parser.add_argument("--pattern", help="driver: the pattern to measure")
    parser.add_argument("--kind", help="worker: tasks | rpc | broadcast")
    parser.add_argument("--flavour", default="sync", choices=["sync", "async"])
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calls", type=int, default=0, help="sequential RPC calls")
    parser.add_argument("--subs", type=int, default=1, help="broadcast subscriber processes")
    parser.add_argument("--no-reply", action="store_true")
    parser.add_argument("--count", type=int, default=0, help="worker: messages to expect")
    parser.add_argument("--names", required=True, help="JSON of common.Names")
    parser.add_argument("--url", default=DEFAULT_URL)
    return parser.parse_args(argv)


Driver = Callable[[argparse.Namespace], Result]
Worker = Callable[[argparse.Namespace], None]


def main(drivers: Mapping[str, Driver], workers: Mapping[str, Worker]) -> None:
    """Run a driver (prints one ``RESULT {json}`` line) or a worker (READY / DONE / BYE)."""
    args = parse_args()
    if args.role == "worker":
        workers[args.kind](args)
        return
    result = drivers[args.pattern](args)
    result["driver_rss_mb"] = peak_rss_mb()
    result["driver_cpu_s"] = cpu_s()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stdout.flush()
