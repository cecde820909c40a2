"""Where the blocking API and large batches spend their time, taken apart.

    .venv/bin/python bench/thread_costs.py matrix [--rounds 3 --calls 300]
    .venv/bin/python bench/thread_costs.py gc [--rounds 2]

``matrix``: tasks with replies one at a time (``task_send(x)`` then its result), with the caller
asyncio or blocking and the worker, in a process of its own, asyncio or blocking: the four ways
in interleaved rounds, p50 of every round trip. Then, for the blocking caller with an asyncio
worker, where the time after the confirm goes: from the loop's write that wakes the caller to the
caller running again.

``gc``: the asyncio caller gathers N ``task_send`` and then every result (N = 500 and 8,000),
with the collector on and with ``gc.disable()`` around the timed part: rate and the caller's CPU
per message. Shows how much of the difference between 500 and 8,000 is the collector's.

Both use the broker of ``--url`` (default the local RabbitMQ) and queues of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from common import DEFAULT_URL

import kiwipy
import kiwipy.aio

now = time.perf_counter  # CLOCK_MONOTONIC: comparable between threads

WORKER = """
import asyncio, sys
import kiwipy, kiwipy.aio
url, queue, kind = sys.argv[1:4]

def names(queue):
    return dict(task_queue=queue, task_exchange=queue + ".tasks",
                message_exchange=queue + ".messages", testing_mode=True)

if kind == "blocking":
    comm = kiwipy.connect(url, **names(queue))
    comm.add_task_subscriber(lambda _comm, task: task)
    print("ready", flush=True)
    sys.stdin.read()
    comm.close()
else:
    async def main():
        comm = await kiwipy.aio.connect(url, **names(queue))
        await comm.add_task_subscriber(lambda _comm, task: task)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await comm.close()
    asyncio.run(main())
"""


def names(queue: str) -> dict[str, Any]:
    """Settings of a run of its own: exchanges and queue auto-deleted after (testing mode)."""
    return {
        "task_queue": queue,
        "task_exchange": f"{queue}.tasks",
        "message_exchange": f"{queue}.messages",
        "testing_mode": True,
    }


class Worker:
    """A worker process of ``kind`` ("asyncio" or "blocking") on a queue of its own."""

    def __init__(self, url: str, kind: str) -> None:
        self.queue = f"thread-costs-{uuid.uuid4().hex[:8]}"
        command = [sys.executable, "-c", WORKER, url, self.queue, kind]
        self._process = subprocess.Popen(  # noqa: S603 (our own worker script)
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the worker did not start")

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=30)


def blocking_round_trips(url: str, queue: str, calls: int) -> list[float]:
    comm = kiwipy.connect(url, **names(queue))
    try:
        times = []
        for i in range(-50, calls):
            start = now()
            future = comm.task_send(i)
            assert future is not None
            future.result(timeout=30)
            if i >= 0:
                times.append(now() - start)
        return times
    finally:
        comm.close()


def asyncio_round_trips(url: str, queue: str, calls: int) -> list[float]:
    async def run() -> list[float]:
        comm = await kiwipy.aio.connect(url, **names(queue))
        try:
            times = []
            for i in range(-50, calls):
                start = now()
                future = await comm.task_send(i)
                assert future is not None
                await asyncio.wait_for(future, 30)
                if i >= 0:
                    times.append(now() - start)
            return times
        finally:
            await comm.close()

    return asyncio.run(run())


CALLERS: dict[str, Callable[[str, str, int], list[float]]] = {
    "asyncio": asyncio_round_trips,
    "blocking": blocking_round_trips,
}


def matrix(url: str, rounds: int, calls: int) -> None:
    ways = [(caller, worker) for caller in CALLERS for worker in ("asyncio", "blocking")]
    samples: dict[tuple[str, str], list[float]] = {way: [] for way in ways}
    for r in range(rounds):
        for caller, worker in ways[r:] + ways[:r]:
            with Worker(url, worker) as process:
                samples[caller, worker] += CALLERS[caller](url, process.queue, calls)
    print("| caller, worker | task with reply one at a time, p50 µs |\n|---|---|")
    for (caller, worker), times in samples.items():
        print(f"| {caller}, {worker} | {statistics.median(times) * 1e6:.0f} |")
    caller_wake(url, calls * rounds)


def caller_wake(url: str, calls: int) -> None:
    """Blocking caller, asyncio worker: from the loop's wake-up write to the caller running."""
    from kiwipy.sync import _portal

    writes: list[float] = []
    resumed: list[float] = []
    wake, sleep = _portal._Waker.wake, _portal._Waker._sleep

    def timed_wake(self: Any) -> None:
        writes.append(now())
        wake(self)

    def timed_sleep(self: Any, seconds: float) -> None:
        sleep(self, seconds)
        resumed.append(now())

    _portal._Waker.wake = timed_wake  # type: ignore[method-assign]
    _portal._Waker._sleep = timed_sleep  # type: ignore[method-assign]
    try:
        with Worker(url, "asyncio") as process:
            comm = kiwipy.connect(url, **names(process.queue))
            sends: list[float] = []
            for i in range(-50, calls):
                future = comm.task_send(i)
                sends.append(now())
                assert future is not None
                future.result(timeout=30)
            comm.close()
    finally:
        _portal._Waker.wake, _portal._Waker._sleep = wake, sleep  # type: ignore[method-assign]
    latencies = []
    for returned in sends[50:]:
        write = writes[bisect.bisect_right(writes, returned) - 1]
        latencies.append(resumed[bisect.bisect_left(resumed, write)] - write)
    latencies.sort()
    p50, p90 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.9)]
    print(
        f"\nblocking task_send, the confirm's wake-up: from the loop's write to the caller "
        f"running again p50 {p50 * 1e6:.0f} µs, p90 {p90 * 1e6:.0f} µs ({len(latencies)} sends)"
    )


def gc_scaling(url: str, rounds: int) -> None:
    async def gathered(queue: str, n: int, collector: bool) -> tuple[float, float]:
        comm = await kiwipy.aio.connect(url, **names(queue))
        try:
            warm = await asyncio.gather(*(comm.task_send(i) for i in range(200)))
            await asyncio.gather(*(f for f in warm if f is not None))
            if not collector:
                gc.disable()
            cpu, start = time.process_time(), now()
            futures = await asyncio.gather(*(comm.task_send(i) for i in range(n)))
            await asyncio.gather(*(f for f in futures if f is not None))
            elapsed, cpu = now() - start, time.process_time() - cpu
        finally:
            gc.enable()
            await comm.close()
        return n / elapsed, cpu / n

    rows: dict[tuple[bool, int], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for collector in (True, False):
            for n in (500, 8000):
                with Worker(url, "asyncio") as process:
                    rate_cpu = asyncio.run(gathered(process.queue, n, collector))
                rows.setdefault((collector, n), []).append(rate_cpu)
    print("| collector | N | rate /s | caller CPU µs per message |\n|---|---|---|---|")
    for (collector, n), runs in rows.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {'on' if collector else 'off'} | {n} | {rate:.0f} | {cpu * 1e6:.0f} |")
    for collector in (True, False):
        ratio = statistics.median(r for r, _ in rows[collector, 8000]) / statistics.median(
            r for r, _ in rows[collector, 500]
        )
        print(f"collector {'on' if collector else 'off'}: rate at 8000 / at 500 = {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["matrix", "gc"])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    if args.what == "matrix":
        matrix(args.url, args.rounds or 3, args.calls)
    else:
        gc_scaling(args.url, args.rounds or 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
