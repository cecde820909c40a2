"""L2: :mod:`.broker_kill` on the local broker: its process SIGKILLed three times under load.

Four worker processes consume one queue while a sender publishes tasks in batches with
``task_send_many`` (it returns once the broker confirmed the whole batch, that is after an
fsynced commit). The broker is SIGKILLed three times at random moments and nobody restarts it:
the clients notice, one of them starts a new broker, which reloads the queue from SQLite; the
clients declare, consume and send again what was not confirmed.

Figures as on RabbitMQ (``lost``, ``duplicated``, ``duplicated_at_fault``...), plus
``service_back_s``: the longest time from a kill until a fresh client's send is confirmed by
the new broker (target: within 1 s), and ``recovery_s``: until every worker consumes again.
"""

from __future__ import annotations

import random
import threading
import time

import kiwipy.sync
from kiwipy_reliability.base import Scale, ScenarioResult, unique_name
from kiwipy_reliability.faults import WorkerProcess
from kiwipy_reliability.ledger import Ledger, wait_until
from kiwipy_reliability.local import LocalBroker
from kiwipy_reliability.scenarios.broker_kill import (
    _SEND_TIMEOUT,
    _drain,
    _duplicated_at_fault,
    _kill_sender,
)
from kiwipy_reliability.workers import WorkerSpec, start_worker

__all__ = ["KILLS", "NAME", "NEEDS_RABBITMQ", "WORKERS", "run"]

NAME = "local_broker_kill"
NEEDS_RABBITMQ = False

WORKERS = 4
PREFETCH = 50
KILLS = 3
_RECOVERY_TIMEOUT = 30.0


def run(node: object, scale: Scale) -> ScenarioResult:
    with LocalBroker() as broker:
        return _run(broker, scale)


def _run(broker: LocalBroker, scale: Scale) -> ScenarioResult:
    total = scale.pick(300, 3000, 20000)
    batch = scale.pick(10, 50, 100)
    low, high = {"test": (0.3, 0.8), "default": (0.5, 1.5), "full": (2.0, 6.0)}[scale.name]
    rng = random.Random(2)
    queue = unique_name("reliability-local-broker-kill")
    spec = WorkerSpec(broker.url, queue, queue, prefetch=PREFETCH)
    ledger = Ledger()
    notes: list[str] = []
    workers: list[WorkerProcess] = []
    outages: list[tuple[float, float]] = []  # (killed, a new broker confirmed a send)
    service_back: list[float] = []
    recoveries: list[float] = []
    kills_done = threading.Event()
    began = time.monotonic()
    rate = total / (KILLS * (low + high) / 2 * 1.2)

    comm = kiwipy.sync.connect(broker.url, task_queue=queue, task_exchange=queue)
    probe = kiwipy.sync.connect(broker.url, task_queue=f"{queue}.probe")
    sender = _kill_sender(
        "local-broker-kill-sender",
        comm,
        ledger,
        total=total,
        batch=batch,
        rate=rate,
        unpaced=kills_done,
    )
    try:
        for index in range(WORKERS):
            worker = start_worker(spec, f"w{index}")
            ledger.watch(worker)
            workers.append(worker)
        sender.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(low, high))
            killed_wall, killed = time.time(), time.monotonic()
            old = broker.kill()
            # Service is back when a new broker has stored (fsynced) and confirmed a task.
            probe.task_send_many([{"probe": True}], no_reply=True, timeout=_RECOVERY_TIMEOUT)
            service_back.append(time.monotonic() - killed)
            outages.append((killed_wall, time.time()))
            new = broker.pid()
            if new is None or new == old:
                notes.append(f"no new broker after killing {old} (now {new})")

            def consuming() -> bool:
                row = broker.queue_stats().get(queue, {})
                return row.get("consumers", 0) >= WORKERS

            if wait_until(consuming, _RECOVERY_TIMEOUT, 0.01):
                recoveries.append(time.monotonic() - killed)
            else:
                notes.append(f"consumers not all back {_RECOVERY_TIMEOUT} s after a kill")
                recoveries.append(_RECOVERY_TIMEOUT)
        kills_done.set()
        notes.extend(sender.finish(2 * _SEND_TIMEOUT + total / 100))
        _drain(ledger)
        time.sleep(1.0)  # late duplicates
        counts = broker.as_node().ctl("list_queues", "name", "messages")
        alive = sum(worker.is_running() for worker in workers)
        brokers = len(broker.brokers_serving())
    finally:
        kills_done.set()
        comm.close()
        probe.close()
        for worker in workers:
            worker.close()
    figures = ledger.figures()
    if figures["lost"]:
        missing = sorted(ledger.outstanding())[:20]
        notes.append(f"confirmed but never completed (first 20): {missing}")
    left = {line.split()[0]: int(line.split()[1]) for line in counts.splitlines() if line}
    figures.update(
        kills=len(outages),
        duplicated_at_fault=_duplicated_at_fault(ledger, outages),
        service_back_s=round(max(service_back, default=0.0), 3),
        recovery_s=round(max(recoveries, default=0.0), 3),
        workers_alive=alive,
        brokers_running=brokers,
        left_in_queue=left.get(queue, -1),
        total_s=round(time.monotonic() - began, 1),
    )
    return ScenarioResult(NAME, figures, notes)
