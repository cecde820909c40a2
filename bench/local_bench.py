"""The local broker (local://) beside RabbitMQ (amqp://), same workloads, in one run.

    .venv/bin/python bench/local_bench.py            # N = 2000, 3 repetitions, medians
    .venv/bin/python bench/local_bench.py --n 500 --reps 1

Each repetition measures both transports one after the other (their order alternating), with a
worker communicator in the same process; figures are medians. Printed: a table with the ratio
local / RabbitMQ, then one JSON line. Durability is the default on both: RabbitMQ confirms a
persistent message on a durable queue; the local broker confirms after an fsynced commit
(``awaited_send_process_per_s``: the local broker with ``durability=process``, which survives
the crash of any process but not of the machine, beside the same RabbitMQ figure).
``bench/run.py`` runs this too (its "local:// beside RabbitMQ" table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
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
#: Lower is better for these (ms, s); higher for the rates.
UNITS = {
    "tasks_reply_pipelined_per_s": "/s",
    "awaited_send_per_s": "/s",
    "awaited_send_process_per_s": "/s",
    "rpc_p50_ms": "ms",
    "cold_first_reply_s": "s",
}


def stop_broker(directory: str) -> None:
    """Stop the local broker of ``directory`` if one runs (it would exit when idle anyway)."""
    try:
        with open(os.path.join(directory, "broker.pid")) as pid_file:
            pid = int(pid_file.read())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def measure(n: int, reps: int, amqp_url: str = AMQP_URL) -> dict[str, dict[str, float]]:
    """``{figure: {"local", "rabbitmq", "local/rabbitmq"}}``: medians over ``reps``."""
    root = tempfile.mkdtemp(prefix="kiwipy-bench-")
    state = os.path.join(root, "full")
    urls = {"local": f"local://{state}?idle_timeout=30", "rabbitmq": amqp_url}
    process_url = f"local://{os.path.join(root, 'process')}?idle_timeout=30&durability=process"
    results: dict[str, dict[str, list[float]]] = {name: {} for name in UNITS}
    try:
        for rep in range(reps):
            order = list(urls.items()) if rep % 2 == 0 else list(reversed(urls.items()))
            for transport, url in order:
                for figure, run in FIGURES.items():
                    value = asyncio.run(run(url, n))
                    results[figure].setdefault(transport, []).append(value)
                if transport == "local":
                    rate = asyncio.run(awaited_sends_one_at_a_time(process_url, n))
                    results["awaited_send_process_per_s"].setdefault("local", []).append(rate)
                    cold_state = os.path.join(root, f"cold-{rep}")
                    cold = cold_first_reply_s(f"local://{cold_state}?idle_timeout=5")
                    stop_broker(cold_state)
                else:
                    cold = cold_first_reply_s(url)
                results["cold_first_reply_s"].setdefault(transport, []).append(cold)
    finally:
        for directory in os.listdir(root):
            stop_broker(os.path.join(root, directory))
        shutil.rmtree(root, ignore_errors=True)
    results["awaited_send_process_per_s"]["rabbitmq"] = results["awaited_send_per_s"]["rabbitmq"]
    out: dict[str, dict[str, float]] = {}
    for figure, values in results.items():
        local = statistics.median(values["local"])
        rabbitmq = statistics.median(values["rabbitmq"])
        out[figure] = {"local": local, "rabbitmq": rabbitmq, "local/rabbitmq": local / rabbitmq}
    return out


def table(medians: dict[str, dict[str, float]]) -> str:
    lines = [f"{'figure':<30}{'unit':>5}{'local':>12}{'rabbitmq':>12}{'local/rabbitmq':>16}"]
    for figure, value in medians.items():
        lines.append(
            f"{figure:<30}{UNITS[figure]:>5}{value['local']:>12.3f}{value['rabbitmq']:>12.3f}"
            f"{value['local/rabbitmq']:>16.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--url", default=AMQP_URL, help="the RabbitMQ to compare with")
    options = parser.parse_args()
    medians = measure(options.n, options.reps, options.url)
    print(table(medians))
    print(json.dumps({"n": options.n, "reps": options.reps, "medians": medians}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
