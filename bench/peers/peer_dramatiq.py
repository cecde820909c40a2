"""dramatiq (pika) on the same workloads; runs under ``bench/.venv-peers/dramatiq``.

Configuration: ``RabbitmqBroker(confirm_delivery=True)``: each ``send`` waits for its publisher
confirm (pika's blocking connection, so one at a time); messages are persistent to a durable
queue of the measurement's own name (dramatiq also declares its ``.DQ`` delay and ``.XQ``
dead-letter queues); the worker is dramatiq's ``Worker`` in one process (its default 8 worker
threads), prefetch 100 (``dramatiq_queue_prefetch``), and dramatiq always acks after the actor
has run. Results: dramatiq has no AMQP result backend, so they go through Redis
(``RedisBackend``, a namespace per measurement, keys expire after a minute); the caller's
``get_result(block=True)`` is a blocking pop, not polling. ``max_retries=0``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

os.environ.setdefault("dramatiq_queue_prefetch", "100")  # read when dramatiq.worker is imported

import _bench_path  # noqa: F401 (bench/ on sys.path)
import common
import peerlib
import workers
from common import (
    WAIT_TIMEOUT_S,
    Result,
    Timer,
    answer,
    check_answers,
    monotonic,
    payload,
)

SCRIPT = __file__
RESULT_TTL_MS = 60_000


class Bench:
    """The broker, the result backend and the two actors of one measurement."""

    def __init__(self, args: argparse.Namespace, counter: workers.Counter | None = None) -> None:
        import dramatiq
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        from dramatiq.results import Results
        from dramatiq.results.backends import RedisBackend

        self.broker = RabbitmqBroker(url=args.url, confirm_delivery=True)
        self.backend = RedisBackend(url=peerlib.REDIS_URL, namespace=peerlib.prefix(args))
        self.broker.add_middleware(Results(backend=self.backend, result_ttl=RESULT_TTL_MS))
        dramatiq.set_broker(self.broker)
        queue = peerlib.names(args).task_queue

        def run(task: dict[str, Any]) -> dict[str, Any]:
            if counter is not None:
                counter.bump()
            return answer(task)

        def run_noreply(task: dict[str, Any]) -> None:
            run(task)  # returning a value without a result store makes dramatiq log a warning

        options = {"queue_name": queue, "broker": self.broker, "max_retries": 0}
        self.task = dramatiq.actor(run, actor_name="bench_task", store_results=True, **options)
        self.task_noreply = dramatiq.actor(run_noreply, actor_name="bench_task_noreply", **options)

    def get(self, messages: list[Any], first: int = 0) -> float:
        timeout_ms = int(WAIT_TIMEOUT_S * 1000)
        values = [
            m.get_result(backend=self.backend, block=True, timeout=timeout_ms) for m in messages
        ]
        end = monotonic()
        check_answers(values, first)
        return end


# -- drivers -------------------------------------------------------------------------------------


def tasks(args: argparse.Namespace) -> Result:
    """(a) / (b): every ``send`` (each confirmed before the next), then every result."""
    bodies = peerlib.payloads(0, args.n)
    with peerlib.pool(SCRIPT, args, args.warmup + args.n) as pool:
        bench = Bench(args)
        actor = bench.task_noreply if args.no_reply else bench.task
        pool.ready()
        warm = [actor.send(body) for body in peerlib.payloads(-args.warmup, 0)]
        if not args.no_reply:
            bench.get(warm, -args.warmup)
        timer = Timer()
        sent = [actor.send(body) for body in bodies]
        timer.all_sent()
        end = pool.done_time() if args.no_reply else bench.get(sent)
        bench.broker.close()
    return {**timer.throughput(args.n, end), **pool.summary()}


def task_latency(args: argparse.Namespace) -> Result:
    """(c): ``send`` then ``get_result(block=True)``, one at a time."""
    samples: list[float] = []
    with peerlib.pool(SCRIPT, args, args.warmup + args.calls) as pool:
        bench = Bench(args)
        pool.ready()
        start_all = 0.0
        for i in range(-args.warmup, args.calls):
            if i == 0:
                start_all = monotonic()
            start = monotonic()
            bench.get([bench.task.send(payload(i))], i)
            if i >= 0:
                samples.append(monotonic() - start)
        elapsed = monotonic() - start_all
        bench.broker.close()
    return {**peerlib.sequential_summary(samples, elapsed), **pool.summary()}


# -- the worker ----------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    import dramatiq

    counter = workers.Counter(args.count)
    bench = Bench(args, counter)
    dramatiq_worker = dramatiq.Worker(bench.broker)

    def stop() -> None:
        dramatiq_worker.stop()
        bench.broker.close()

    peerlib.serve(counter, dramatiq_worker.start, stop)


DRIVERS = {"tasks": tasks, "task_latency": task_latency}
WORKERS = {"tasks": worker, "tasks_noreply": worker}

if __name__ == "__main__":
    common.main(DRIVERS, WORKERS)
