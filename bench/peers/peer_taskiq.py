"""taskiq (taskiq-aio-pika) on the same workloads; runs under ``bench/.venv-peers/taskiq``.

Configuration: ``AioPikaBroker`` with prefetch 100 (``qos``), aio-pika's publisher confirms (its
channels' default), persistent messages (taskiq-aio-pika always sends them so) to a durable
*classic* queue of the measurement's own name (its default queue type is quorum; classic is what
every other system here uses), with a dead-letter queue of the measurement's own name too. The
worker is taskiq's receiver run in this one process (``taskiq.api.run_receiver_task``, up to 100
tasks at once), acking after the result is saved (``AcknowledgeType.WHEN_SAVED``).

Results: taskiq has no AMQP result backend; they go through Redis (taskiq-redis's
``RedisAsyncResultBackend``, a key prefix per measurement, results deleted once read and
expiring after a minute). Waiting for a result *polls* Redis (``wait_result``'s
``check_interval``): 5 ms here for (b) (results awaited in order, most are in by then), 1 ms for
(c) (the latency floor it adds is at most that interval). Workload (a) uses a broker with no
result backend on both sides (taskiq stores every result when it has one).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import _bench_path  # noqa: F401 (bench/ on sys.path)
import common
import peerlib
import workers
from common import WAIT_TIMEOUT_S, Result, Timer, answer, check_answers, monotonic, payload

SCRIPT = __file__
PIPELINED_POLL_S = 0.005
LATENCY_POLL_S = 0.001
RESULT_TTL_S = 60


def make_broker(args: argparse.Namespace, results: bool) -> Any:
    from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType

    names = peerlib.names(args)
    backend = None
    if results:
        from taskiq_redis import RedisAsyncResultBackend

        backend = RedisAsyncResultBackend(
            peerlib.REDIS_URL,
            keep_results=False,
            result_ex_time=RESULT_TTL_S,
            prefix_str=peerlib.prefix(args),
        )
    broker = AioPikaBroker(
        args.url,
        qos=peerlib.PREFETCH,
        exchange=Exchange(name=names.task_exchange),
        task_queues=[Queue(name=names.task_queue, type=QueueType.CLASSIC)],
        dead_letter_queue=Queue(name=f"{names.task_queue}.dead", type=QueueType.CLASSIC),
    )
    return broker if backend is None else broker.with_result_backend(backend)


def register(broker: Any, counter: workers.Counter | None = None) -> Any:
    async def bench_task(task: dict[str, Any]) -> dict[str, Any]:
        if counter is not None:
            counter.bump()
        return answer(task)

    return broker.register_task(bench_task, task_name="bench_task")


# -- drivers -------------------------------------------------------------------------------------


def tasks(args: argparse.Namespace) -> Result:
    return asyncio.run(_tasks(args))


async def _tasks(args: argparse.Namespace) -> Result:
    """(a) / (b): every ``kiq`` at once (confirms in flight), then every result in turn."""
    bodies = peerlib.payloads(0, args.n)
    with peerlib.pool(SCRIPT, args, args.warmup + args.n) as pool:
        broker = make_broker(args, results=not args.no_reply)
        task = register(broker)
        await broker.startup()
        try:
            pool.ready()

            async def send_all(batch: list[Any]) -> list[Any]:
                return list(await asyncio.gather(*(task.kiq(body) for body in batch)))

            warm = await send_all(peerlib.payloads(-args.warmup, 0))
            if not args.no_reply:
                await _results_time(warm, PIPELINED_POLL_S, -args.warmup)
            timer = Timer()
            sent = await send_all(bodies)
            timer.all_sent()
            if args.no_reply:
                end = await asyncio.to_thread(pool.done_time)
            else:
                end = await _results_time(sent, PIPELINED_POLL_S)
        finally:
            await broker.shutdown()
    return {**timer.throughput(args.n, end), **pool.summary()}


async def _results_time(sent: list[Any], poll_s: float, first: int = 0) -> float:
    values = []
    for task in sent:
        result = await task.wait_result(check_interval=poll_s, timeout=WAIT_TIMEOUT_S)
        values.append(result.return_value)
    end = monotonic()
    check_answers(values, first)
    return end


def task_latency(args: argparse.Namespace) -> Result:
    return asyncio.run(_task_latency(args))


async def _task_latency(args: argparse.Namespace) -> Result:
    """(c): ``await (await task.kiq(...)).wait_result()`` one at a time."""
    samples: list[float] = []
    with peerlib.pool(SCRIPT, args, args.warmup + args.calls) as pool:
        broker = make_broker(args, results=True)
        task = register(broker)
        await broker.startup()
        try:
            pool.ready()
            start_all = 0.0
            for i in range(-args.warmup, args.calls):
                if i == 0:
                    start_all = monotonic()
                start = monotonic()
                await _results_time([await task.kiq(payload(i))], LATENCY_POLL_S, i)
                if i >= 0:
                    samples.append(monotonic() - start)
            elapsed = monotonic() - start_all
        finally:
            await broker.shutdown()
    return {**peerlib.sequential_summary(samples, elapsed), **pool.summary()}


# -- the worker ----------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    asyncio.run(_worker(args))


async def _worker(args: argparse.Namespace) -> None:
    from taskiq.acks import AcknowledgeType
    from taskiq.api import run_receiver_task

    counter = workers.Counter(args.count)
    broker = make_broker(args, results=args.kind == "tasks")
    register(broker, counter)
    broker.is_worker_process = True
    await broker.startup()
    receiver = asyncio.create_task(
        run_receiver_task(
            broker, max_async_tasks=peerlib.PREFETCH, ack_time=AcknowledgeType.WHEN_SAVED
        )
    )
    counter.ready()
    await asyncio.to_thread(workers.wait_for_stop)
    receiver.cancel()
    await asyncio.gather(receiver, return_exceptions=True)
    await broker.shutdown()
    workers.say_bye(counter)


DRIVERS = {"tasks": tasks, "task_latency": task_latency}
WORKERS = {"tasks": worker, "tasks_noreply": worker}

if __name__ == "__main__":
    common.main(DRIVERS, WORKERS)
