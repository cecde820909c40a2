"""Raw aiormq for the peers run: ``bench/patterns_raw.py``'s drivers, plus ``task_latency``.

``task_latency`` is workload (c): one persistent task to the durable queue at a time, its
reply awaited before the next is sent (the same worker as the other task patterns: prefetch
100, manual ack after the confirmed reply).
"""

from __future__ import annotations

import argparse
import asyncio

import _bench_path  # noqa: F401 (bench/ on sys.path)
import common
import patterns_raw
import peerlib
import workers
from common import WAIT_TIMEOUT_S, Names, Result, check_answers, monotonic, payload


def task_latency(args: argparse.Namespace) -> Result:
    return asyncio.run(_task_latency(args))


async def _task_latency(args: argparse.Namespace) -> Result:
    queue = Names.from_json(args.names).task_queue
    samples: list[float] = []
    with workers.pool(patterns_raw.SCRIPT, args, "tasks", args.warmup + args.calls) as pool:
        async with patterns_raw.confirmed_channel(args.url) as channel:
            requester = await patterns_raw.Requester.open(channel)
            pool.ready()
            start_all = 0.0
            for i in range(-args.warmup, args.calls):
                if i == 0:
                    start_all = monotonic()
                start = monotonic()
                future = await requester.call(queue, payload(i), True)
                result = await asyncio.wait_for(future, WAIT_TIMEOUT_S)
                if i >= 0:
                    samples.append(monotonic() - start)
                check_answers([result], i)
            elapsed = monotonic() - start_all
    return {**peerlib.sequential_summary(samples, elapsed), **pool.summary()}


DRIVERS = {**patterns_raw.DRIVERS, "task_latency": task_latency}

if __name__ == "__main__":
    common.main(DRIVERS, patterns_raw.WORKERS)
