"""The local:// reliability scenarios at their test scale: no RabbitMQ needed.

Each runs on a local broker of its own (:mod:`kiwipy_reliability.local`); the figures they
report are what ``python -m kiwipy_reliability --local`` prints. No timing is asserted here
beyond generous bounds that only a hang would break.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiwipy_reliability.base import Scale
from kiwipy_reliability.scenarios import (
    LOCAL,
    local_broker_kill,
    local_malformed,
    local_spawn_race,
    local_worker_kill,
    local_worker_stop,
)

TEST = Scale("test")


@pytest.mark.timeout(180)
def test_twenty_clients_racing_to_spawn_start_exactly_one_broker() -> None:
    figures = local_spawn_race.run(None, TEST).figures
    assert figures["brokers_per_race_max"] == 1, figures
    assert figures["brokers_running_max"] == 1, figures
    assert figures["client_failures"] == 0, figures


@pytest.mark.timeout(180)
def test_broker_killed_three_times_loses_no_confirmed_task() -> None:
    result = local_broker_kill.run(None, TEST)
    figures = result.figures
    assert figures["kills"] == local_broker_kill.KILLS, result
    assert figures["lost"] == 0, result
    assert figures["unexpected"] == 0, result
    assert figures["confirmed"] + figures["unconfirmed_reported"] == 300, result
    # duplicates only where a kill made them unavoidable, each flagged redelivered
    assert figures["duplicated_at_fault"] == figures["duplicated"], result
    assert figures["duplicated_reported"] == figures["duplicated"], result
    assert figures["workers_alive"] == local_broker_kill.WORKERS, result
    assert figures["brokers_running"] == 1, result
    assert 0 < figures["service_back_s"] < 10.0, result
    assert figures["left_in_queue"] == 0, result


@pytest.mark.timeout(180)
def test_a_killed_workers_task_goes_to_another_flagged() -> None:
    result = local_worker_kill.run(None, TEST)
    figures = result.figures
    assert figures["lost"] == 0, result
    assert figures["completed"] == figures["kills"] == 5, result
    assert figures["redelivered_to_other"] == 5, result
    assert figures["redelivered_flag"] == 5, result
    assert figures["duplicated"] == 0, result
    assert figures["left_in_queue"] == 0, result
    assert not result.notes, result


@pytest.mark.timeout(180)
def test_a_worker_stopped_by_sigterm_drains_and_nothing_is_lost() -> None:
    figures = local_worker_stop.run(None, TEST).figures
    assert figures["drained_ok"] == figures["rounds"] == 1, figures
    assert figures["lost"] == 0, figures
    assert figures["duplicated"] == 0, figures
    assert figures["hung_futures"] == 0, figures
    assert figures["wrong_results"] == 0, figures
    assert figures["completed"] == figures["tasks"] == local_worker_stop.TASKS, figures


@pytest.mark.timeout(180)
def test_malformed_input_is_dead_lettered_once_and_the_broker_serves_on() -> None:
    result = local_malformed.run(None, TEST)
    figures = result.figures
    assert figures["malformed_crashes"] == 0, result
    assert figures["publish_failures"] == 0, result
    assert figures["valid_processed"] == 200 and figures["valid_duplicated"] == 0, result
    assert figures["dead_lettered"] == 200 and figures["dead_lettered_twice"] == 0, result
    assert figures["dead_lettered_valid"] == 0, result
    assert figures["queue_left"] == 0, result
    assert figures["broker_refusals_ok"] == 1, result
    assert figures["marker_created"] == 0, result


@pytest.mark.timeout(120)
def test_the_command_line_runs_local_scenarios_without_rabbitmq() -> None:
    command = [sys.executable, "-m", "kiwipy_reliability", "--quick", "--only", "local_malformed"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RabbitMQ node" not in done.stdout
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["scenarios"]) == {"local_malformed"}
    assert summary["malformed_crashes"] == 0
    assert "local_malformed" in LOCAL
