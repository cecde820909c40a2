"""R2: the broker SIGKILLed (and restarted) while workers process persistent tasks.

Four worker processes consume one durable queue while a sender publishes persistent tasks in
batches with ``task_send_many`` (it returns once the broker confirmed the whole batch). The
broker's VM is SIGKILLed three times at random moments and restarted at once; the queue's
definition was flushed to disk once after it was declared, the kills themselves do not sync.

Every confirmed task must complete (``lost`` 0); a batch whose send raised was reported to its
caller (``unconfirmed_reported``; ``recovered`` of those still arrived). ``duplicated`` counts
tasks completed twice (``duplicated_reported``: their later deliveries carried
``redelivered``; ``duplicated_at_fault``: a kill fell between the two deliveries).
``recovery_s`` is the longest time from the broker accepting connections again until every
worker's consumer was back on the queue.
"""

from __future__ import annotations

import functools
import random
import threading
import time

import kiwipy.sync
from kiwipy_reliability.base import Scale, ScenarioResult, unique_name
from kiwipy_reliability.faults import RabbitNode, WorkerProcess
from kiwipy_reliability.ledger import Ledger, PacedSender, send_paced, wait_until
from kiwipy_reliability.workers import WorkerSpec, queue_counts, start_worker

__all__ = ["NAME", "run"]

NAME = "broker_kill"

WORKERS = 4
PREFETCH = 50
KILLS = 3
_TASK_SECONDS = 0.002
_START_TIMEOUT = 120.0
_RECOVERY_TIMEOUT = 60.0
_SEND_TIMEOUT = 60.0
#: The drain ends when no confirmed task completed for this long.
_DRAIN_IDLE = 30.0
_RESTART_ESTIMATE = 8.0


def run(node: RabbitNode, scale: Scale) -> ScenarioResult:
    total = scale.pick(300, 3000, 20000)
    batch = scale.pick(10, 50, 100)
    low, high = {"test": (2.0, 4.0), "default": (5.0, 12.0), "full": (10.0, 40.0)}[scale.name]
    rng = random.Random(2)
    queue = unique_name("reliability-broker-kill")
    spec = WorkerSpec(node.url, queue, queue, prefetch=PREFETCH)
    ledger = Ledger()
    notes: list[str] = []
    workers: list[WorkerProcess] = []
    kill_times: list[float] = []
    outages: list[tuple[float, float]] = []  # (killed, accepting connections again)
    recoveries: list[float] = []
    kills_done = threading.Event()
    began = time.monotonic()

    restart_estimate = node.last_startup_time or _RESTART_ESTIMATE
    rate = total / (KILLS * ((low + high) / 2 + restart_estimate))

    comm = kiwipy.sync.connect(node.url, task_queue=queue, task_exchange=queue)
    sender = _kill_sender(
        "broker-kill-sender", comm, ledger, total=total, batch=batch, rate=rate, unpaced=kills_done
    )
    try:
        for index in range(WORKERS):
            worker = start_worker(spec, f"w{index}")
            ledger.watch(worker)
            workers.append(worker)
        node.sync_to_disk()  # the queue's definition survives the crashes below
        sender.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(low, high))
            kill_times.append(time.time())
            node.kill()
            node.start(timeout=_START_TIMEOUT)
            up = time.monotonic()
            outages.append((kill_times[-1], time.time()))
            if wait_until(lambda: _consumers(node, queue) >= WORKERS, _RECOVERY_TIMEOUT, 0.2):
                recoveries.append(time.monotonic() - up)
            else:
                notes.append(f"consumers not all back {_RECOVERY_TIMEOUT} s after a restart")
                recoveries.append(_RECOVERY_TIMEOUT)
        kills_done.set()
        notes.extend(sender.finish(2 * _SEND_TIMEOUT + total / 100))
        _drain(ledger)
        time.sleep(1.0)  # late duplicates
        counts = queue_counts(node, queue)
        alive = sum(worker.is_running() for worker in workers)
    finally:
        kills_done.set()
        comm.close()
        for worker in workers:
            worker.close()
        if node.is_running() and not node.is_frozen:
            node.ctl("delete_queue", queue, check=False)
    figures = ledger.figures()
    if figures["lost"]:
        missing = sorted(ledger.outstanding())[:20]
        notes.append(f"confirmed but never completed (first 20): {missing}")
    figures.update(
        kills=len(kill_times),
        duplicated_at_fault=_duplicated_at_fault(ledger, outages),
        recovery_s=round(max(recoveries, default=0.0), 2),
        workers_alive=alive,
        left_in_queue=-1 if counts is None else counts[1] + counts[2],
        total_s=round(time.monotonic() - began, 1),
    )
    return ScenarioResult(NAME, figures, notes)


def _consumers(node: RabbitNode, queue: str) -> int:
    counts = queue_counts(node, queue)
    return 0 if counts is None else counts[0]


def _kill_sender(
    name: str,
    comm: kiwipy.sync.Communicator,
    ledger: Ledger,
    *,
    total: int,
    batch: int,
    rate: float,
    unpaced: threading.Event,
) -> PacedSender:
    """The sender of a broker-kill scenario (this one and ``local_broker_kill``): ``total``
    tasks in batches at ``rate`` per second until ``unpaced`` is set, then as fast as they go."""
    send = functools.partial(
        send_paced,
        comm,
        ledger,
        total=total,
        batch=batch,
        rate=rate,
        unpaced=unpaced,
        task_seconds=_TASK_SECONDS,
        timeout=_SEND_TIMEOUT,
    )
    return PacedSender(name, send)


def _drain(ledger: Ledger) -> None:
    """Wait until every confirmed task completed, or none completed for a while."""
    last_progress = time.monotonic()
    remaining = len(ledger.outstanding())
    while remaining and time.monotonic() - last_progress < _DRAIN_IDLE:
        time.sleep(0.2)
        now_remaining = len(ledger.outstanding())
        if now_remaining < remaining:
            last_progress = time.monotonic()
        remaining = now_remaining


def _duplicated_at_fault(ledger: Ledger, outages: list[tuple[float, float]]) -> int:
    """Tasks completed twice that were in flight at a broker kill: published before the broker
    was back, started (again) after it was killed.

    Published, not first started: a publish whose commit reached the disk but whose confirm
    died with the broker is sent again by its publisher, and the restarted broker holds it
    too, so both copies may start only after the broker is back (seen in CI on local://, a
    kill during the commit's fsync: 3 of 20 duplicates had no start before the broker was up).
    """
    count = 0
    for task_id, done in ledger.completions.items():
        if len(done) < 2:
            continue
        starts = sorted(d.time for d in ledger.deliveries.get(task_id, ()))
        published = ledger.published.get(task_id, starts[0])
        if any(published < up and killed < starts[-1] for killed, up in outages):
            count += 1
    return count
