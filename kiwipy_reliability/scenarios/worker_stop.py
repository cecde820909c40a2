"""R3b: a worker frozen (SIGSTOP) past the heartbeat timeout while it holds a task.

The broker stops hearing the worker's heartbeats, closes its connection and gives the task to
another worker. When the frozen worker resumes (SIGCONT) it must learn that it lost the task
(its lost-task callback runs, ``task.lost`` is true) and its ack must be dropped, never sent on a
new channel; the task completes exactly once, on the other worker.

Figures: ``stale_worker_told`` (1/0), ``completed_once`` (1/0), ``redelivery_s`` (freeze to
the restart elsewhere), ``lost``.
"""

from __future__ import annotations

import time
from functools import partial

import kiwipy.sync
from kiwipy_reliability.base import Scale, ScenarioResult, unique_name
from kiwipy_reliability.faults import RabbitNode, WorkerProcess
from kiwipy_reliability.ledger import Ledger, wait_until
from kiwipy_reliability.workers import WorkerSpec, queue_counts, start_worker

__all__ = ["NAME", "run"]

NAME = "worker_stop"

HEARTBEAT = 2
#: The broker closes a connection after two missed heartbeats; allow generously more.
_DETECT_TIMEOUT = 10 * HEARTBEAT + 10
_STEP_TIMEOUT = 30.0
#: How long the task "works": it must outlast the freeze, so the resumed worker is still
#: busy with it when it learns that the connection is gone.
_TASK_SECONDS = 4 * HEARTBEAT + 4


def run(node: RabbitNode, scale: Scale) -> ScenarioResult:
    rounds = scale.pick(1, 2, 5)
    queue = unique_name("reliability-worker-stop")
    spec = WorkerSpec(node.url, queue, queue, prefetch=1, heartbeat=HEARTBEAT)
    ledger = Ledger()
    notes: list[str] = []
    everyone: list[WorkerProcess] = []
    told = 0
    once = 0
    redelivery: list[float] = []
    stray_acks = 0
    began = time.monotonic()

    comm = kiwipy.sync.connect(node.url, task_queue=queue, task_exchange=queue)
    try:
        for task_id in range(rounds):
            pair = {}
            for side in ("a", "b"):
                name = f"r{task_id}{side}"
                worker = start_worker(spec, name)
                ledger.watch(worker)
                everyone.append(worker)
                pair[name] = worker
            ledger.record_published([task_id])
            comm.task_send_many([{"id": task_id, "sleep": _TASK_SECONDS}], no_reply=True)
            ledger.record_confirmed([task_id])
            if not wait_until(partial(ledger.delivered_at_least, task_id, 1), _STEP_TIMEOUT):
                notes.append(f"task {task_id}: never started")
                continue
            stale_name = ledger.deliveries[task_id][0].worker
            stale = pair[stale_name]
            stale.stop_signal()
            frozen_at = time.time()
            redelivered = wait_until(
                partial(ledger.delivered_at_least, task_id, 2), _DETECT_TIMEOUT
            )
            if redelivered:
                second = ledger.deliveries[task_id][1]
                redelivery.append(second.time - frozen_at)
                if second.worker == stale_name:
                    notes.append(f"task {task_id}: redelivered to the stale worker itself")
            else:
                notes.append(f"task {task_id}: not redelivered within {_DETECT_TIMEOUT} s")
            time.sleep(1.0)
            stale.resume()
            # Both copies finish: the stale one (told it is lost) and the live one.
            wait_until(partial(_both_finished, ledger, task_id), _TASK_SECONDS + _STEP_TIMEOUT)
            wait_until(partial(ledger.is_completed, task_id), _TASK_SECONDS + _STEP_TIMEOUT)
            time.sleep(1.0)  # room for a stray (wrong) ack or completion to show
            ledger.refresh()
            stale_told = stale_name in ledger.lost_events.get(task_id, ()) and any(
                c.worker == stale_name for c in ledger.stale_completions.get(task_id, ())
            )
            completions = ledger.completions.get(task_id, [])
            completed_once = len(completions) == 1 and completions[0].worker != stale_name
            told += stale_told
            once += completed_once
            if not stale_told:
                notes.append(f"task {task_id}: the stale worker {stale_name} was not told")
            if not completed_once:
                notes.append(f"task {task_id}: completions {completions}")
            stray_acks += sum(
                "unknown delivery tag" in line.lower() or "precondition_failed" in line.lower()
                for line in stale.lines
            )
            for worker in pair.values():
                worker.close()
        counts = queue_counts(node, queue)
    finally:
        comm.close()
        for worker in everyone:
            worker.close()
        if node.is_running() and not node.is_frozen:
            node.ctl("delete_queue", queue, check=False)
    figures = ledger.figures()
    figures.update(
        rounds=rounds,
        stale_worker_told=int(told == rounds),
        completed_once=int(once == rounds),
        stray_ack_errors=stray_acks,
        redelivery_s=round(max(redelivery, default=0.0), 3),
        left_in_queue=-1 if counts is None else counts[1] + counts[2],
        total_s=round(time.monotonic() - began, 1),
    )
    return ScenarioResult(NAME, figures, notes)


def _both_finished(ledger: Ledger, task_id: int) -> bool:
    return ledger.finished_copies(task_id) >= 2
