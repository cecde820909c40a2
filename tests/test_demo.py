"""The README's main job: `kiwipy demo` proves nothing is lost: on the local broker (the default),
on RabbitMQ and in memory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import stop_local_broker

KIWIPY = shutil.which("kiwipy", path=os.path.dirname(sys.executable))

pytestmark = pytest.mark.timeout(80)


@pytest.fixture(autouse=True)
def kiwipy_home(tmp_path: Path) -> Iterator[Path]:
    """The local broker's default state directory, private to the test and stopped after it."""
    home = tmp_path / "kiwipy-home"
    os.environ["KIWIPY_TEST_HOME"] = str(home)
    yield home
    del os.environ["KIWIPY_TEST_HOME"]
    stop_local_broker(home)


def run_demo(*args: str, console_script: bool = True, within: float = 70) -> str:
    if console_script:
        assert KIWIPY is not None, "the kiwipy console script is not installed"
        command = [KIWIPY, "demo", *args]
    else:
        command = [sys.executable, "-m", "kiwipy.cli", "demo", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIWIPY_")}
    env["KIWIPY_HOME"] = os.environ["KIWIPY_TEST_HOME"]
    env["COLUMNS"] = "200"  # the summary table on one line per row
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=within, check=False, env=env
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Traceback" not in output
    return output


def summary(output: str) -> dict[str, int]:
    match = re.search(
        r"Summary: sent (\d+), completed (\d+), redelivered after the kill (\d+), lost (\d+)",
        output,
    )
    assert match, output
    sent, completed, redelivered, lost = map(int, match.groups())
    return {"sent": sent, "completed": completed, "redelivered": redelivered, "lost": lost}


@pytest.mark.amqp
def test_demo_against_rabbitmq_loses_nothing_and_shows_the_redelivery(amqp_url: str) -> None:
    output = run_demo("--url", amqp_url, "--tasks", "12", "--workers", "3", "--task-seconds", "0.3")
    assert "in-memory" not in output
    numbers = summary(output)
    assert numbers == {
        "sent": 12,
        "completed": 12,
        "redelivered": numbers["redelivered"],
        "lost": 0,
    }
    assert numbers["redelivered"] >= 1
    assert "RPC 'pause' to demo-worker-1: paused=True" in output
    assert "RPC 'play' to demo-worker-1: paused=False" in output
    assert re.search(r"SIGKILL to demo-worker-3 \(pid \d+\) while it ran task (\d+)", output)
    kill = re.search(r"while it ran task (\d+)", output)
    assert kill is not None
    assert re.search(
        rf"Task {kill.group(1)} was started by demo-worker-3 then demo-worker-\d", output
    )
    assert "Started demo-worker-4 in its place" in output
    assert (
        "each drained and exited (exit codes: demo-worker-1 0, demo-worker-2 0, demo-worker-4 0)"
        in output
    )


def test_demo_without_a_url_runs_durably_on_the_local_broker() -> None:
    output = run_demo("--tasks", "8")
    assert "Connected to local://" in output
    counts = summary(output)
    # The SIGKILL lands on a running task when one is running then (almost always).
    assert counts["redelivered"] <= 1
    assert counts == {"sent": 8, "completed": 8, "redelivered": counts["redelivered"], "lost": 0}
    assert "confirmed by the broker (on disk)" in output


def test_demo_without_rabbitmq_says_so_and_runs_on_the_local_broker() -> None:
    # python -m kiwipy.cli demo is the same command as kiwipy demo.
    output = run_demo(
        "--url", "amqp://guest:secret-word@127.0.0.1:1/", "--tasks", "8", console_script=False
    )
    first = output.splitlines()[0]
    assert first.startswith("No RabbitMQ answered at amqp://guest:****@127.0.0.1:1/")
    assert "rabbitmq-server" in first
    assert "local broker" in output
    assert "secret-word" not in output
    counts = summary(output)
    assert counts == {"sent": 8, "completed": 8, "redelivered": counts["redelivered"], "lost": 0}


def test_demo_in_memory_runs_in_one_process() -> None:
    output = run_demo("--url", "memory://demo-test", "--tasks", "8")
    assert "no kill step" in output
    assert summary(output) == {"sent": 8, "completed": 8, "redelivered": 0, "lost": 0}
    assert "(in-memory transport)" in output


def test_demo_with_one_worker_starts_a_replacement_after_the_kill() -> None:
    output = run_demo("--workers", "1", "--tasks", "3", "--task-seconds", "0.2")
    assert "starting 1 worker process (demo-worker-1)" in output
    assert re.search(r"SIGKILL to demo-worker-1 \(pid \d+\) while it ran task \d", output)
    assert "Started demo-worker-2 in its place" in output
    assert "the only worker" in output
    assert summary(output) == {"sent": 3, "completed": 3, "redelivered": 1, "lost": 0}
    assert "exit codes: demo-worker-2 0)" in output


@pytest.mark.parametrize("url", [None, "memory://demo-one-task"], ids=["local", "memory"])
def test_demo_with_one_task_finishes_promptly_and_truthfully(url: str | None) -> None:
    # Before: it waited 15 s for the victim to start a task that had finished already.
    args = ["--tasks", "1"] + (["--url", url] if url else [])
    output = run_demo(*args, within=12)
    assert summary(output) == {
        "sent": 1,
        "completed": 1,
        "redelivered": summary(output)["redelivered"],
        "lost": 0,
    }
    assert "took its share" not in output
    if "SIGKILL to" in output:  # the victim happened to take the only task
        assert "Started demo-worker-4 in its place" in output
    elif url is None:
        assert "demo-worker-3 started no task to interrupt: no kill step" in output
