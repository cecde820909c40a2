"""L1: twenty clients start at once on a state directory where no broker runs.

Each client finds no broker and tries to start one; the spawn lock and the broker's own lock
must leave exactly one broker, which every client reaches. Repeated on fresh directories.
Figures: ``brokers_per_race_max`` (must be 1), ``brokers_running_max`` (live broker processes
per directory after a race: 1), ``client_failures``, ``race_s_max`` (the slowest race: every
client connected).
"""

from __future__ import annotations

import time

from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.local import CONNECT_AND_PRINT_PID, LocalBroker, run_python

__all__ = ["CLIENTS", "NAME", "NEEDS_RABBITMQ", "race", "run"]

NAME = "local_spawn_race"
NEEDS_RABBITMQ = False

CLIENTS = 20
_CLIENT_TIMEOUT = 60.0


def race(broker: LocalBroker, clients: int = CLIENTS) -> tuple[set[int], list[str]]:
    """Start ``clients`` clients at once; the broker pids they reached, and their errors."""
    processes = [run_python(CONNECT_AND_PRINT_PID, broker.url) for _ in range(clients)]
    pids: set[int] = set()
    errors: list[str] = []
    for process in processes:
        out, err = process.communicate(timeout=_CLIENT_TIMEOUT)
        if process.returncode == 0 and out.strip().isdigit():
            pids.add(int(out.strip()))
        else:
            errors.append(
                err.strip().splitlines()[-1] if err.strip() else f"exit {process.returncode}"
            )
    return pids, errors


def run(node: object, scale: Scale) -> ScenarioResult:
    rounds = scale.pick(2, 5, 20)
    notes: list[str] = []
    brokers: list[int] = []
    running: list[int] = []
    failures = 0
    durations: list[float] = []
    for _ in range(rounds):
        with LocalBroker() as broker:
            started = time.monotonic()
            pids, errors = race(broker)
            durations.append(time.monotonic() - started)
            brokers.append(len(pids))
            running.append(len(broker.brokers_serving()))
            failures += len(errors)
            notes.extend(errors[:3])
    figures: dict[str, float | int] = {
        "rounds": rounds,
        "clients": CLIENTS,
        "brokers_per_race_max": max(brokers),
        "brokers_running_max": max(running),
        "client_failures": failures,
        "race_s_max": round(max(durations), 2),
    }
    return ScenarioResult(NAME, figures, notes)
