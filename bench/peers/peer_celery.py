"""Celery (kombu + py-amqp) on the same workloads; runs under ``bench/.venv-peers/celery``.

Configuration: tasks are persistent (Celery's default delivery mode) to a durable queue of the
measurement's own name; the producer waits for publisher confirms (py-amqp's ``confirm_publish``
transport option), one at a time (``apply_async`` returns once the message is confirmed);
results come back over AMQP (the ``rpc://`` backend: a reply queue per client, no result
store); the worker is one process (``solo`` pool), prefetch 100 (multiplier 100 times
concurrency 1), late acks (``task_acks_late``: ack after the task has run and its result has
been sent). Remote control, mingle, gossip and heartbeats (events) are off: they add broker
objects shared by every Celery worker on the broker, and nothing here needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from typing import Any

import _bench_path  # noqa: F401 (bench/ on sys.path)
import common
import peerlib
import workers
from common import WAIT_TIMEOUT_S, Result, Timer, answer, check_answers, monotonic, payload

SCRIPT = __file__
TASK = "bench.task"
TASK_NOREPLY = "bench.task_noreply"


def make_app(args: argparse.Namespace, counter: workers.Counter | None = None) -> Any:
    from celery import Celery

    names = peerlib.names(args)
    app = Celery("bench", broker=args.url, backend="rpc://")
    app.conf.update(
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        task_default_queue=names.task_queue,
        task_default_exchange=names.task_exchange,
        task_default_routing_key=names.task_queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_persistent=False,
        task_acks_late=True,
        worker_prefetch_multiplier=peerlib.PREFETCH,
        worker_concurrency=1,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )

    def run(task: dict[str, Any]) -> dict[str, Any]:
        if counter is not None:
            counter.bump()
        return answer(task)

    app.task(name=TASK)(run)
    app.task(name=TASK_NOREPLY, ignore_result=True)(run)
    return app


def close(app: Any) -> None:
    """Delete this client's ``rpc://`` reply queue, then close the app.

    The queue is auto-delete, but a client that never consumed it (tasks without results)
    would leave it on the broker.
    """
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(app.backend.oid)
    app.close()


# -- drivers -------------------------------------------------------------------------------------


def tasks(args: argparse.Namespace) -> Result:
    """(a) / (b): every task sent (each waits for its confirm), then every result."""
    bodies = peerlib.payloads(0, args.n)
    with peerlib.pool(SCRIPT, args, args.warmup + args.n) as pool:
        app = make_app(args)
        name = TASK_NOREPLY if args.no_reply else TASK
        with app.connection_for_write() as connection, app.producer_pool.acquire() as producer:
            connection.ensure_connection()
            pool.ready()
            warm = [app.send_task(name, (body,), producer=producer) for body in _warm(args)]
            if not args.no_reply:
                _results_time(warm, -args.warmup)
            timer = Timer()
            sent = [app.send_task(name, (body,), producer=producer) for body in bodies]
            timer.all_sent()
            end = pool.done_time() if args.no_reply else _results_time(sent)
        close(app)
    return {**timer.throughput(args.n, end), **pool.summary()}


def _warm(args: argparse.Namespace) -> list[Any]:
    return peerlib.payloads(-args.warmup, 0)


def _results_time(results: list[Any], first: int = 0) -> float:
    values = [result.get(timeout=WAIT_TIMEOUT_S) for result in results]
    end = monotonic()
    check_answers(values, first)
    return end


def task_latency(args: argparse.Namespace) -> Result:
    """(c): ``send_task(...).get()`` one at a time."""
    samples: list[float] = []
    with peerlib.pool(SCRIPT, args, args.warmup + args.calls) as pool:
        app = make_app(args)
        with app.producer_pool.acquire() as producer:
            pool.ready()
            start_all = 0.0
            for i in range(-args.warmup, args.calls):
                if i == 0:
                    start_all = monotonic()
                start = monotonic()
                result = app.send_task(TASK, (payload(i),), producer=producer)
                value = result.get(timeout=WAIT_TIMEOUT_S)
                if i >= 0:
                    samples.append(monotonic() - start)
                check_answers([value], i)
            elapsed = monotonic() - start_all
        close(app)
    return {**peerlib.sequential_summary(samples, elapsed), **pool.summary()}


# -- the worker ----------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Celery's own worker (``solo`` pool) in this process; stdin EOF asks it for a warm stop."""
    from celery.signals import worker_ready

    counter = workers.Counter(args.count)
    app = make_app(args, counter)
    worker_ready.connect(lambda **_: counter.ready(), weak=False)

    def stop_on_eof() -> None:
        workers.wait_for_stop()
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown, in its main thread

    threading.Thread(target=stop_on_eof, daemon=True).start()
    celery_worker = app.Worker(
        pool="solo",
        concurrency=1,
        loglevel="WARNING",
        quiet=True,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    with contextlib.suppress(SystemExit):  # how Celery's worker ends after a warm shutdown
        celery_worker.start()
    workers.say_bye(counter)


DRIVERS = {"tasks": tasks, "task_latency": task_latency}
WORKERS = {"tasks": worker, "tasks_noreply": worker}

if __name__ == "__main__":
    common.main(DRIVERS, WORKERS)
