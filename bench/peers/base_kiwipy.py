"""Our kiwipy for the peers run: ``bench/patterns_ours.py``'s drivers, plus ``task_latency``.

The URL is whatever the run gives (``--kiwipy-url``), so another transport of ours is another
system with the same drivers. ``task_latency`` is workload (c) from asyncio (``kiwipy.aio``):
``await (await comm.task_send(task))`` one task at a time, served by an asyncio worker.
"""

from __future__ import annotations

import argparse
import asyncio

import _bench_path  # noqa: F401 (bench/ on sys.path)
import common
import kiwipy_patterns
import patterns_ours
import peerlib
import workers
from common import WAIT_TIMEOUT_S, Result, check_answers, monotonic, payload

PATTERNS = kiwipy_patterns.KiwipyPatterns(patterns_ours.API)


def task_latency(args: argparse.Namespace) -> Result:
    return asyncio.run(_task_latency(args))


async def _task_latency(args: argparse.Namespace) -> Result:
    samples: list[float] = []
    count = args.warmup + args.calls
    api = patterns_ours.API
    with workers.pool(api.script, args, "tasks", count, flavour="async") as pool:
        async with api.connect_async(args.url, kiwipy_patterns.options(args)) as comm:
            pool.ready()
            start_all = 0.0
            for i in range(-args.warmup, args.calls):
                if i == 0:
                    start_all = monotonic()
                start = monotonic()
                future = await comm.task_send(payload(i))
                result = await asyncio.wait_for(future, WAIT_TIMEOUT_S)
                if i >= 0:
                    samples.append(monotonic() - start)
                check_answers([result], i)
            elapsed = monotonic() - start_all
    return {**peerlib.sequential_summary(samples, elapsed), **pool.summary()}


DRIVERS = {**PATTERNS.driver_table(), "task_latency": task_latency}

if __name__ == "__main__":
    common.main(DRIVERS, PATTERNS.worker_table())
