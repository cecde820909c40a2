"""R3: a worker SIGKILLed mid-task; the broker gives the task to another worker at once.

Each round sends one task of a few seconds, waits until a worker starts it, SIGKILLs that
worker (its socket closes, so the broker requeues at once), measures the time until another
worker starts the same task (``redelivered=true``), starts a replacement worker and waits for
the task to complete. Figures: ``redelivery_p99_s`` (kill to restart elsewhere), ``lost``.
"""

from __future__ import annotations

import random
import time
from functools import partial

import kiwipy.sync
from kiwipy_reliability.base import Scale, ScenarioResult, unique_name
from kiwipy_reliability.faults import RabbitNode, WorkerProcess
from kiwipy_reliability.ledger import Ledger, percentile, wait_until
from kiwipy_reliability.workers import WorkerSpec, queue_counts, start_worker

__all__ = ["NAME", "run"]

NAME = "worker_kill"

_WORKERS = 3
_STEP_TIMEOUT = 30.0


def run(node: RabbitNode, scale: Scale) -> ScenarioResult:
    kills = scale.pick(5, 20, 50)
    task_seconds = scale.pick_float(1.5, 2.0, 5.0)
    queue = unique_name("reliability-worker-kill")
    spec = WorkerSpec(node.url, queue, queue, prefetch=1)
    ledger = Ledger()
    notes: list[str] = []
    workers: dict[str, WorkerProcess] = {}
    everyone: list[WorkerProcess] = []
    latencies: list[float] = []
    to_other = 0
    flagged = 0
    began = time.monotonic()
    rng = random.Random(3)

    def spawn(name: str) -> None:
        worker = start_worker(spec, name)
        everyone.append(worker)
        ledger.watch(worker)
        workers[name] = worker

    comm = kiwipy.sync.connect(node.url, task_queue=queue, task_exchange=queue)
    try:
        for index in range(_WORKERS):
            spawn(f"w{index}")
        next_worker = _WORKERS
        for task_id in range(kills):
            ledger.record_published([task_id])
            try:
                comm.task_send_many([{"id": task_id, "sleep": task_seconds}], no_reply=True)
            except Exception as exc:
                ledger.record_failed([task_id], exc)
                notes.append(f"task {task_id}: send failed with {exc!r}")
                continue
            ledger.record_confirmed([task_id])
            if not wait_until(partial(ledger.delivered_at_least, task_id, 1), _STEP_TIMEOUT):
                notes.append(f"task {task_id}: never started")
                continue
            holder = ledger.deliveries[task_id][0].worker
            time.sleep(rng.uniform(0.1, task_seconds / 3))
            killed_at = time.time()
            workers.pop(holder).kill()
            if not wait_until(partial(ledger.delivered_at_least, task_id, 2), _STEP_TIMEOUT):
                notes.append(f"task {task_id}: not redelivered within {_STEP_TIMEOUT} s")
            else:
                second = ledger.deliveries[task_id][1]
                latencies.append(max(0.0, second.time - killed_at))
                to_other += second.worker != holder
                flagged += second.redelivered
            spawn(f"w{next_worker}")
            next_worker += 1
            if not wait_until(partial(ledger.is_completed, task_id), _STEP_TIMEOUT):
                notes.append(f"task {task_id}: not completed within {_STEP_TIMEOUT} s")
        wait_until(lambda: not ledger.outstanding(), _STEP_TIMEOUT)
        counts = queue_counts(node, queue)
    finally:
        comm.close()
        for worker in everyone:
            worker.close()
        _delete_queue(node, queue)
    figures = ledger.figures()
    figures.update(
        kills=kills,
        redelivered_to_other=to_other,
        redelivered_flag=flagged,
        redelivery_p50_s=round(percentile(latencies, 0.5), 3),
        redelivery_p99_s=round(percentile(latencies, 0.99), 3),
        redelivery_max_s=round(max(latencies, default=0.0), 3),
        left_in_queue=-1 if counts is None else counts[1] + counts[2],
        total_s=round(time.monotonic() - began, 1),
    )
    return ScenarioResult(NAME, figures, notes)


def _delete_queue(node: RabbitNode, queue: str) -> None:
    if node.is_running() and not node.is_frozen:
        node.ctl("delete_queue", queue, check=False)
