"""R8: a task outlives the broker's ``consumer_timeout``.

The node's consumer timeout is lowered; one worker process (prefetch high enough to hold
everything) gets short tasks, then a task that would run 2.5 times the timeout, then more short
tasks that wait unacknowledged behind it. RabbitMQ closes the worker's channel; the worker must
survive, tell the long task's handler it lost the task, process the redelivered tasks, and
restore its consumer (new tasks sent afterwards are processed by the same worker process).

The node's runtime settings are restored afterwards (:meth:`RabbitNode.reset_env`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kiwipy_reliability.scenario_workers import WorkerLog, queue_table, start_worker

if TYPE_CHECKING:
    from kiwipy_reliability.base import Scale, ScenarioResult
    from kiwipy_reliability.faults import RabbitNode

__all__ = ["NAME", "run"]

NAME = "consumer_timeout"

_READY_TIMEOUT = 30.0
_DRAIN_TIMEOUT = 30.0
_SHORT_BEFORE = 10
_SHORT_BEHIND = 20
_SHORT_AFTER = 10


def run(node: RabbitNode, scale: Scale) -> ScenarioResult:
    from kiwipy import sync
    from kiwipy_reliability.base import ScenarioResult, unique_name

    timeout_ms = scale.pick(5_000, 20_000, 60_000)
    long_s = 2.5 * timeout_ms / 1000.0
    prefix = unique_name("ct")
    queue = f"{prefix}.queue"
    settings: dict[str, object] = {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": queue,
        "task_prefetch_count": 100,
        "testing_mode": True,
    }
    notes: list[str] = [f"consumer_timeout {timeout_ms} ms, long task {long_s:g} s"]
    figures: dict[str, float | int] = {}
    node.set_consumer_timeout(timeout_ms)  # before the worker opens its channels
    try:
        worker = start_worker("timeout", node.url, settings)
        try:
            log = WorkerLog(worker)
            if not log.wait(lambda log: bool(log.of("READY")), _READY_TIMEOUT):
                raise RuntimeError(f"worker did not start:\n{worker.output()}")
            pid = worker.pid
            with sync.connect(node.url, **settings) as sender:

                def send(ids: list[str], kind: str = "short") -> None:
                    bodies = [{"id": ident, "kind": kind, "duration": long_s} for ident in ids]
                    sender.task_send_many(bodies, no_reply=True)

                before = [f"s{n}" for n in range(_SHORT_BEFORE)]
                behind = [f"b{n}" for n in range(_SHORT_BEHIND)]
                after = [f"a{n}" for n in range(_SHORT_AFTER)]
                send(before)
                sent_long = time.monotonic()
                send(["long"], "long")
                send(behind)
                confirmed = set(before) | set(behind) | {"long"}

                def acked(log: WorkerLog) -> set[str]:
                    return {event[1] for event in log.of("DONE") if event[3] == "0"}

                told = log.wait(lambda log: bool(log.of("LOST")), 2 * timeout_ms / 1000 + 15)
                figures["long_task_told_lost"] = int(told)
                if told:
                    figures["lost_notice_s"] = round(time.monotonic() - sent_long, 2)
                log.wait(lambda log: confirmed <= acked(log), _DRAIN_TIMEOUT)
                redelivered = {
                    event[1] for event in log.of("DONE") if event[2] == "1" and event[3] == "0"
                }
                figures["redelivered"] = len(redelivered - {"long"})
                figures["long_redelivered"] = int("long" in redelivered)
                figures["stale_processed"] = sum(1 for e in log.of("DONE") if e[3] == "1")

                send(after)
                confirmed |= set(after)
                restored = log.wait(lambda log: set(after) <= acked(log), _DRAIN_TIMEOUT)
                figures["consumer_restored"] = int(restored and worker.pid == pid)
                figures["lost"] = len(confirmed - acked(log))
                done_ids = [event[1] for event in log.of("DONE") if event[3] == "0"]
                figures["duplicated"] = len(done_ids) - len(set(done_ids))
                figures["channel_closes_seen"] = len(log.of("CONN"))
                consumers = queue_table(node, "consumers").get(queue, ["0"])
                figures["consumers_after"] = int(consumers[0])
            figures["worker_survived"] = int(worker.is_running() and worker.pid == pid)
            if not figures["worker_survived"]:
                notes.append(f"worker exited with {worker.returncode}:\n{worker.output()[-3000:]}")
        finally:
            worker.close()
    finally:
        node.reset_env()
    return ScenarioResult(NAME, figures, notes)
