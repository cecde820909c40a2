"""FastStream (aio-pika) on the same workloads; runs under ``bench/.venv-peers/faststream``.

Configuration: ``RabbitBroker`` with prefetch 100 (``Channel(prefetch_count=100)``) and aio-pika's
publisher confirms (FastStream's default); messages are persistent (``persist=True``) to a durable
queue of the measurement's own name; the worker's subscriber acks after the handler has returned
and its reply has been published (``AckPolicy.REJECT_ON_ERROR``, the default). FastStream's
per-message logging is off (``logger=None``), as no other system here logs per message.
A subscriber handles its messages one after the other (there is no concurrency option for
RabbitMQ subscribers).

Results: FastStream has no task results, it has replies. (b) uses its documented reply-to
pattern: the caller publishes every task at once (``asyncio.gather``, confirms in flight) with
``reply_to`` its own reply queue, the worker's handler returns the answer, FastStream publishes
it there, and a subscriber on the reply queue resolves a future per correlation id. (c) uses
``broker.request`` (RabbitMQ's direct reply-to), FastStream's RPC call; it lets one request at a
time through (a lock), which is why (b) does not use it.
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


def make_broker(args: argparse.Namespace) -> Any:
    from faststream.rabbit import RabbitBroker
    from faststream.rabbit.schemas import Channel

    return RabbitBroker(
        args.url, default_channel=Channel(prefetch_count=peerlib.PREFETCH), logger=None
    )


def task_queue(args: argparse.Namespace) -> Any:
    from faststream.rabbit import RabbitQueue

    return RabbitQueue(peerlib.names(args).task_queue, durable=True)


# -- drivers -------------------------------------------------------------------------------------


def tasks(args: argparse.Namespace) -> Result:
    return asyncio.run(_tasks(args))


async def _tasks(args: argparse.Namespace) -> Result:
    """(a) / (b): every publish at once (confirms in flight), then every reply."""
    from faststream import AckPolicy
    from faststream.rabbit import RabbitMessage, RabbitQueue

    bodies = peerlib.payloads(0, args.n)
    queue = peerlib.names(args).task_queue
    replies = RabbitQueue(f"{peerlib.prefix(args)}.replies", exclusive=True, auto_delete=True)
    pending: dict[str, asyncio.Future[Any]] = {}
    with peerlib.pool(SCRIPT, args, args.warmup + args.n) as pool:
        broker = make_broker(args)

        @broker.subscriber(replies, ack_policy=AckPolicy.ACK_FIRST, no_reply=True)
        async def on_reply(body: dict[str, Any], message: RabbitMessage) -> None:
            pending.pop(message.correlation_id).set_result(body)

        async def send_all(batch: list[Any], first: int, no_reply: bool) -> list[Any]:
            futures = []
            sends = []
            for i, body in enumerate(batch, first):
                reply_to = None
                if not no_reply:
                    futures.append(asyncio.get_running_loop().create_future())
                    pending[str(i)] = futures[-1]
                    reply_to = replies.name
                sends.append(
                    broker.publish(
                        body, queue=queue, persist=True, reply_to=reply_to, correlation_id=str(i)
                    )
                )
            await asyncio.gather(*sends)
            return futures

        await broker.start()
        try:
            pool.ready()
            warm = await send_all(peerlib.payloads(-args.warmup, 0), -args.warmup, False)
            await _results_time(warm, -args.warmup)
            timer = Timer()
            futures = await send_all(bodies, 0, args.no_reply)
            timer.all_sent()
            if args.no_reply:
                end = await asyncio.to_thread(pool.done_time)
            else:
                end = await _results_time(futures)
        finally:
            await broker.stop()
    return {**timer.throughput(args.n, end), **pool.summary()}


async def _results_time(futures: list[Any], first: int = 0) -> float:
    results = await asyncio.wait_for(asyncio.gather(*futures), WAIT_TIMEOUT_S)
    end = monotonic()
    check_answers(results, first)
    return end


def task_latency(args: argparse.Namespace) -> Result:
    return asyncio.run(_task_latency(args))


async def _task_latency(args: argparse.Namespace) -> Result:
    """(c): ``await broker.request(...)`` one at a time."""
    queue = peerlib.names(args).task_queue
    samples: list[float] = []
    with peerlib.pool(SCRIPT, args, args.warmup + args.calls) as pool:
        broker = make_broker(args)
        await broker.start()
        try:
            pool.ready()
            start_all = 0.0
            for i in range(-args.warmup, args.calls):
                if i == 0:
                    start_all = monotonic()
                start = monotonic()
                reply = await broker.request(
                    payload(i), queue=queue, persist=True, timeout=WAIT_TIMEOUT_S
                )
                result = await reply.decode()
                if i >= 0:
                    samples.append(monotonic() - start)
                check_answers([result], i)
            elapsed = monotonic() - start_all
        finally:
            await broker.stop()
    return {**peerlib.sequential_summary(samples, elapsed), **pool.summary()}


# -- the worker ----------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    asyncio.run(_worker(args))


async def _worker(args: argparse.Namespace) -> None:
    from faststream import AckPolicy

    counter = workers.Counter(args.count)
    broker = make_broker(args)

    @broker.subscriber(task_queue(args), ack_policy=AckPolicy.REJECT_ON_ERROR)
    async def handle(task: dict[str, Any]) -> dict[str, Any]:
        counter.bump()
        return answer(task)

    await broker.start()
    counter.ready()
    await asyncio.to_thread(workers.wait_for_stop)
    await broker.stop()
    workers.say_bye(counter)


DRIVERS = {"tasks": tasks, "task_latency": task_latency}
WORKERS = {"tasks": worker, "tasks_noreply": worker}

if __name__ == "__main__":
    common.main(DRIVERS, WORKERS)
