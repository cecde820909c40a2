"""The local broker (local://) beside RabbitMQ (amqp://), same workloads, in one run.

    .venv/bin/python bench/local_bench.py            # N = 2000, 3 repetitions, medians
    .venv/bin/python bench/local_bench.py --n 500 --reps 1

Each repetition measures both transports one after the other (their order alternating), with a
worker communicator in the same process; figures are medians. Printed: a table with the ratio
local / RabbitMQ, then one JSON line. Durability is the default on both: RabbitMQ confirms a
persistent message on a durable queue; the local broker confirms after an fsynced commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import kiwipy.aio

AMQP_URL = os.environ.get("KIWIPY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
COLD = """
import time, sys
started = time.perf_counter()
import asyncio, kiwipy.aio
async def main():
    name = sys.argv[2]
    comm = await kiwipy.aio.connect(
        sys.argv[1], testing_mode=True, task_queue=name, task_exchange=name + ".tasks",
        message_exchange=name + ".messages",
    )
    await comm.add_task_subscriber(lambda c, x: x + 1)
    assert await (await comm.task_send(1)) == 2
    print(time.perf_counter() - started)
    await comm.close()
asyncio.run(main())
"""


async def pair(url: str, **extra: Any) -> tuple[Any, Any]:
    """A client and a worker communicator on fresh names (``extra``: more settings)."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    options = {
        "testing_mode": True,
        "task_queue": f"{name}.tasks",
        "task_exchange": f"{name}.tasks",
        "message_exchange": f"{name}.messages",
        **extra,
    }
    client = await kiwipy.aio.connect(url, **options)
    worker = await kiwipy.aio.connect(url, **options)
    await worker.add_task_subscriber(lambda comm, task: task)
    await worker.add_rpc_subscriber(lambda comm, msg: msg, "echo")
    return client, worker


async def tasks_with_replies_pipelined(url: str, n: int, **extra: Any) -> float:
    client, worker = await pair(url, **extra)
    try:
        await (await client.task_send(0))
        started = time.perf_counter()
        futures = await asyncio.gather(*(client.task_send(i) for i in range(n)))
        await asyncio.gather(*futures)
        return n / (time.perf_counter() - started)
    finally:
        await client.close()
        await worker.close()


async def awaited_sends_one_at_a_time(url: str, n: int, **extra: Any) -> float:
    client, worker = await pair(url, **extra)
    try:
        await client.task_send(0, no_reply=True)
        started = time.perf_counter()
        for i in range(n):
            await client.task_send(i, no_reply=True)
        return n / (time.perf_counter() - started)
    finally:
        await client.close()
        await worker.close()


async def rpc_p50_ms(url: str, n: int) -> float:
    client, worker = await pair(url)
    try:
        times = []
        for i in range(min(n, 1000)):
            started = time.perf_counter()
            await (await client.rpc_send("echo", i))
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times[10:])
    finally:
        await client.close()
        await worker.close()


def cold_first_reply_s(url: str) -> float:
    queue = f"bench-cold-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", COLD, url, queue], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return float(done.stdout.strip())


FIGURES: dict[str, Callable[[str, int], Awaitable[float]]] = {
    "tasks_reply_pipelined_per_s": tasks_with_replies_pipelined,
    "awaited_send_per_s": awaited_sends_one_at_a_time,
    "rpc_p50_ms": rpc_p50_ms,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args()
    state = tempfile.mkdtemp(prefix="kiwipy-bench-")
    urls = {"local": f"local://{state}?idle_timeout=20", "rabbitmq": AMQP_URL}
    results: dict[str, dict[str, list[float]]] = {name: {} for name in FIGURES}
    results["cold_first_reply_s"] = {}
    for rep in range(options.reps):
        order = list(urls.items()) if rep % 2 == 0 else list(reversed(urls.items()))
        for transport, url in order:
            for figure, measure in FIGURES.items():
                value = asyncio.run(measure(url, options.n))
                results[figure].setdefault(transport, []).append(value)
            cold_url = f"local://{tempfile.mkdtemp(prefix='kiwipy-cold-')}?idle_timeout=2"
            cold = cold_first_reply_s(cold_url if transport == "local" else url)
            results["cold_first_reply_s"].setdefault(transport, []).append(cold)
    medians = {
        figure: {t: statistics.median(v) for t, v in values.items()}
        for figure, values in results.items()
    }
    print(f"{'figure':<30}{'local':>12}{'rabbitmq':>12}{'local/rabbitmq':>16}")
    for figure, value in medians.items():
        ratio = value["local"] / value["rabbitmq"]
        print(f"{figure:<30}{value['local']:>12.3f}{value['rabbitmq']:>12.3f}{ratio:>16.2f}")
    print(json.dumps({"n": options.n, "reps": options.reps, "medians": medians}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
