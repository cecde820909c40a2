"""Reliability scenarios with process kills: broker SIGKILL, worker SIGKILL, worker SIGSTOP.

Each scenario runs at ``Scale("test")`` against the session's private RabbitMQ node; one test
runs the command-line entry point end to end. Plus quick checks of the ledger and the report.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiwipy_reliability.base import STANDARD_FIGURES, Scale, ScenarioResult
from kiwipy_reliability.faults import RabbitNode
from kiwipy_reliability.ledger import Completion, Delivery, Ledger, percentile
from kiwipy_reliability.report import aggregate, format_table, passed
from kiwipy_reliability.scenarios import broker_kill, worker_kill, worker_stop
from kiwipy_reliability.scenarios.broker_kill import _duplicated_at_fault
from kiwipy_reliability.workers import EVENT_PREFIX

TEST = Scale("test")

# -- the framework -------------------------------------------------------------------------------


class _FakeWorker:
    """Stands in for a WorkerProcess: the ledger only reads its ``lines``."""

    def __init__(self, *events: dict[str, object]) -> None:
        self.lines = [EVENT_PREFIX + json.dumps({"t": 1.0, **e}) for e in events]


def test_the_ledger_counts_lost_duplicated_and_stale_completions() -> None:
    ledger = Ledger()
    ledger.record_published([1, 2, 3, 4])
    ledger.record_confirmed([1, 2, 3])
    ledger.record_failed([4], ConnectionError("gone"))
    worker = _FakeWorker(
        {"ev": "start", "w": "a", "id": 1, "r": False},
        {"ev": "done", "w": "a", "id": 1, "lost": False},
        {"ev": "start", "w": "b", "id": 1, "r": True},
        {"ev": "done", "w": "b", "id": 1, "lost": False},
        {"ev": "start", "w": "a", "id": 2, "r": False},
        {"ev": "lost", "w": "a", "id": 2},
        {"ev": "done", "w": "a", "id": 2, "lost": True},
        {"ev": "start", "w": "a", "id": 4, "r": False},
        {"ev": "done", "w": "a", "id": 4, "lost": False},
    )
    ledger.watch(worker)  # type: ignore[arg-type]
    figures = ledger.figures()
    assert figures["lost"] == 2  # 2 finished only on a lost copy; 3 never arrived
    assert ledger.outstanding() == {2, 3}
    assert figures["duplicated"] == 1
    assert figures["duplicated_reported"] == 1
    assert figures["unconfirmed_reported"] == 1
    assert figures["recovered"] == 1
    assert figures["stale_completions"] == 1
    assert ledger.lost_events == {2: ["a"]}


def test_the_report_sums_counts_and_takes_the_longest_times() -> None:
    one = ScenarioResult("one", {"lost": 0, "duplicated": 2, "recovery_s": 1.5})
    two = ScenarioResult("two", {"lost": 1, "duplicated": 3, "recovery_s": 4.0, "extra": 7})
    summary = aggregate([one, two], unavailable=["three"])
    assert summary["lost"] == 1
    assert summary["duplicated"] == 5
    assert summary["recovery_s"] == 4.0
    assert summary["hung_futures"] is None
    assert summary["scenarios"]["two"]["extra"] == 7
    assert summary["not_available"] == ["three"]
    assert not passed(summary)
    assert passed(aggregate([one]))
    assert not passed(aggregate([one], errors={"x": "RuntimeError: boom"}))
    table = format_table([one, two])
    assert table.splitlines()[0].split() == ["figure", "one", "two"]
    assert "extra" in table


def test_scale_and_percentile() -> None:
    assert Scale("default").pick(1, 2, 3) == 2
    with pytest.raises(ValueError, match="unknown scale"):
        Scale("huge")
    assert percentile([0.1, 0.2, 0.3, 5.0], 0.99) == 5.0
    assert percentile(range(1, 101), 0.5) == 50
    assert percentile([], 0.99) == 0.0


# -- the scenarios -------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_broker_kill_loses_no_confirmed_task(fresh_rabbit_node: RabbitNode) -> None:
    result = broker_kill.run(fresh_rabbit_node, TEST)
    figures = result.figures
    assert figures["kills"] == broker_kill.KILLS, result
    assert figures["lost"] == 0, result
    assert figures["unexpected"] == 0, result
    assert figures["published"] == 300, result
    # every send was either confirmed or reported to its caller
    assert figures["confirmed"] + figures["unconfirmed_reported"] == 300, result
    assert figures["completed"] >= figures["confirmed"], result
    # duplicates only after faults, and each reported (``redelivered``)
    assert figures["duplicated_reported"] == figures["duplicated"], result
    assert figures["duplicated_at_fault"] == figures["duplicated"], result
    assert figures["workers_alive"] == broker_kill.WORKERS, result
    assert 0 < figures["recovery_s"] <= 10.0, result
    assert figures["left_in_queue"] == 0, result


@pytest.mark.timeout(300)
def test_a_killed_workers_task_is_redelivered_to_another(fresh_rabbit_node: RabbitNode) -> None:
    result = worker_kill.run(fresh_rabbit_node, TEST)
    figures = result.figures
    kills = figures["kills"]
    assert kills == TEST.pick(5, 20, 50)
    assert figures["lost"] == 0, result
    assert figures["completed"] == kills, result
    assert figures["redelivered_to_other"] == kills, result
    assert figures["redelivered_flag"] == kills, result
    assert figures["duplicated"] == 0, result
    assert figures["redelivery_p99_s"] <= 2.0, result
    assert figures["left_in_queue"] == 0, result
    assert not result.notes, result


@pytest.mark.timeout(300)
def test_a_frozen_worker_is_told_it_lost_its_task(fresh_rabbit_node: RabbitNode) -> None:
    result = worker_stop.run(fresh_rabbit_node, TEST)
    figures = result.figures
    assert figures["stale_worker_told"] == 1, result
    assert figures["completed_once"] == 1, result
    assert figures["lost"] == 0, result
    assert figures["duplicated"] == 0, result
    assert figures["stale_completions"] == figures["rounds"], result
    assert figures["stray_ack_errors"] == 0, result
    # the broker notices the missing heartbeats: within about 2-3 heartbeat intervals
    assert 0 < figures["redelivery_s"] <= 4 * worker_stop.HEARTBEAT + 2, result
    assert figures["left_in_queue"] == 0, result


@pytest.mark.timeout(300)
def test_the_command_line_runs_a_scenario_and_ends_with_json() -> None:
    command = [sys.executable, "-m", "kiwipy_reliability", "--quick", "--only"]
    done = subprocess.run(
        [*command, "worker_kill"], capture_output=True, text=True, timeout=240, check=False
    )
    if "rabbitmq" in done.stderr.lower() and "not found" in done.stderr.lower():
        pytest.skip("RabbitMQ is not installed")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("figure") for line in lines), done.stdout
    summary = json.loads(lines[-1])
    for key in STANDARD_FIGURES:
        assert key in summary
    assert summary["lost"] == 0
    assert summary["redelivery_p99_s"] is not None
    assert summary["malformed_crashes"] is None
    assert set(summary["scenarios"]) == {"worker_kill"}
    assert summary["scenarios"]["worker_kill"]["kills"] == TEST.pick(5, 20, 50)


def test_a_duplicate_counts_as_at_a_fault_when_its_task_was_in_flight_at_a_kill() -> None:
    """In flight: published before the broker was back, started (again) after it was killed;
    whether its first start came before the broker was back does not matter (a publish whose
    confirm died with the broker is held by the new broker and sent again)."""
    killed, up = 100.0, 100.2
    ledger = Ledger()
    ledger.published.update({1: 99.0, 2: 99.9, 3: 100.5, 4: 50.0})
    copies = {
        1: [(99.5, False), (100.3, True)],  # started before the kill, again after it
        2: [(100.3, False), (100.4, True)],  # published before, both copies after the restart
        3: [(100.6, False), (100.7, True)],  # published after the broker was back: not the kill
        4: [(50.5, False), (60.0, True)],  # done twice long before the kill
    }
    for task_id, starts in copies.items():
        ledger.deliveries[task_id] = [Delivery("w", again, at) for at, again in starts]
        ledger.completions[task_id] = [Completion("w", False, at + 0.01) for at, _ in starts]
    assert _duplicated_at_fault(ledger, [(killed, up)]) == 2
