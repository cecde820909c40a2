"""L4: a ``kiwipy worker`` on the local broker stopped by SIGTERM while it holds tasks.

A sender queues tasks that take a moment each; a ``kiwipy worker`` (prefetch 5) starts on
them and is sent SIGTERM after its first result: it drains (takes no new task, finishes what
runs, gives back what it holds but has not started) and exits 0; a second worker finishes the
rest. Every task must complete exactly once and every result reach its sender.

(On RabbitMQ, :mod:`.worker_stop` freezes a worker past the heartbeat timeout. The local broker
has no heartbeat to miss: a frozen worker keeps its tasks for as long as its connection lives,
as a long task would; its tasks come back the moment its socket closes, see
:mod:`.local_worker_kill`.)

Figures: ``lost``, ``duplicated``, ``hung_futures`` (results not back within the timeout),
``drained_ok`` (rounds whose first worker exited 0), ``drain_s_max`` (SIGTERM to exit),
``finished_by_second`` (tasks the first worker gave back).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kiwipy.sync
from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.local import LocalBroker

__all__ = ["NAME", "NEEDS_RABBITMQ", "run"]

NAME = "local_worker_stop"
NEEDS_RABBITMQ = False

TASKS = 20
_TIMEOUT = 60.0
SLOW_TASKS = """
import time

def slow(task):
    time.sleep(0.3)
    print("done", task, flush=True)
    return task
"""


def _worker(broker: LocalBroker, modules: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KIWIPY_URL": broker.url, "PYTHONPATH": modules}
    command = [sys.executable, "-m", "kiwipy.cli", "worker", "slow_tasks:slow", "--prefetch", "5"]
    return subprocess.Popen(  # noqa: S603 - our own CLI
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _done(output: str) -> list[int]:
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith("done ")]


def _round(broker: LocalBroker, modules: str, figures: Counter[str], notes: list[str]) -> None:
    sender = kiwipy.sync.connect(broker.url)
    first = second = None
    try:
        futures = [sender.task_send(number) for number in range(TASKS)]
        assert all(future is not None for future in futures)  # with replies
        first = _worker(broker, modules)
        futures[0].result(timeout=_TIMEOUT)  # type: ignore[union-attr]
        first.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        first_out, _ = first.communicate(timeout=_TIMEOUT)
        figures["drain_ms_max"] = max(
            figures["drain_ms_max"], round(1000 * (time.monotonic() - stopped))
        )
        figures["drained_ok"] += first.returncode == 0
        if first.returncode != 0:
            notes.append(f"the first worker exited {first.returncode}: {first_out[-500:]}")
        second = _worker(broker, modules)
        results: list[Any] = []
        for future in futures:
            try:
                results.append(future.result(timeout=_TIMEOUT))  # type: ignore[union-attr]
            except concurrent.futures.TimeoutError:
                figures["hung_futures"] += 1
        second.terminate()
        second_out, _ = second.communicate(timeout=_TIMEOUT)
        done = Counter(_done(first_out) + _done(second_out))
        figures["tasks"] += TASKS
        figures["completed"] += len(done)
        figures["lost"] += TASKS - len(set(done) & set(range(TASKS)))
        figures["duplicated"] += sum(count - 1 for count in done.values())
        figures["finished_by_second"] += len(set(_done(second_out)))
        figures["wrong_results"] += sum(1 for got in results if got not in range(TASKS))
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
        sender.close()


def run(node: object, scale: Scale) -> ScenarioResult:
    rounds = scale.pick(1, 3, 10)
    keys = ("tasks", "completed", "lost", "duplicated", "hung_futures", "wrong_results")
    figures: Counter[str] = Counter(dict.fromkeys(keys, 0))
    figures.update(drained_ok=0, finished_by_second=0, drain_ms_max=0)
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as modules, LocalBroker() as broker:
        Path(modules, "slow_tasks.py").write_text(SLOW_TASKS)
        for _ in range(rounds):
            _round(broker, modules, figures, notes)
    out: dict[str, float | int] = {"rounds": rounds, **figures}
    out["drain_s_max"] = round(out.pop("drain_ms_max") / 1000, 3)
    return ScenarioResult(NAME, out, notes)
