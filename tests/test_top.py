"""``kiwipy top``: in a real terminal (tmux) on RabbitMQ, and rendered in process in memory."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import kiwipy
from kiwipy.cli._top import Top, render
from kiwipy.worker import Worker

TIMEOUT = 30.0
TASKS_MODULE = """
def triple(x):
    if x == "fail":
        raise ValueError("asked to fail")
    return 3 * x
"""


def _cells(screen: str, first: str) -> list[str] | None:
    """The cells of the table row whose first cell is ``first``."""
    for line in screen.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells and cells[0] == first:
            return cells
    return None


def _tmux(server: str, *args: str) -> str:
    """Run a tmux command on our own server (``-L``): other sessions' options do not apply."""
    command = ["tmux", "-L", server, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=10)
    return done.stdout


@pytest.mark.amqp
@pytest.mark.timeout(120)
def test_top_shows_queue_workers_and_failures_in_a_terminal(
    amqp_url: str, unique_name: str, tmp_path: Path
) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/test.sh installs it when run as root)")
    kiwipy_cli = shutil.which("kiwipy", path=str(Path(sys.executable).parent))
    assert kiwipy_cli is not None
    (tmp_path / "top_tasks.py").write_text(TASKS_MODULE)
    connection = ["--url", amqp_url, "--exchange-prefix", unique_name, "--testing-mode"]
    worker_name = f"{unique_name}-w"
    queue = f"{unique_name}.tasks"
    # Given a worker with a name and events, and kiwipy top in a 150x50 terminal
    worker = subprocess.Popen(
        [kiwipy_cli, "worker", "top_tasks:triple", "--name", worker_name, "--events", *connection],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    server = session = f"kiwipy-top-{uuid.uuid4().hex[:8]}"
    try:
        assert worker.stdout is not None
        assert "working on queue" in worker.stdout.readline()
        # COLUMNS and LINES set for the test run would override the terminal's size.
        top = [kiwipy_cli, "top", "--worker", worker_name, *connection]
        command = " ".join(["env", "COLUMNS=150", "LINES=50", *top])
        _tmux(server, "new-session", "-d", "-s", session, "-x", "150", "-y", "50", command)
        _wait_for_screen(server, lambda screen: _cells(screen, worker_name) is not None)
        # When 5 tasks are sent, 2 of which fail
        options = {
            "message_exchange": f"{unique_name}.messages",
            "task_exchange": f"{unique_name}.tasks",
            "task_queue": queue,
            "testing_mode": True,
        }
        with kiwipy.connect(amqp_url, **options) as comm:
            futures = [comm.task_send(x) for x in (1, "fail", 2, "fail", 3)]
            for future in futures:
                assert future is not None
                future.exception(TIMEOUT)

        # Then the screen shows the worker's counts, the empty queue and the failures
        def settled(screen: str) -> bool:
            row = _cells(screen, worker_name)
            counts = _cells(screen, queue)
            return (
                row is not None
                and row[3:7] == ["0", "3", "2", "0"]  # running, done, failed, requeued
                and counts is not None
                and counts[1:4] == ["0", "0", "1"]  # ready, unacked, consumers
                and screen.count("asked to fail") == 2
            )

        screen = _wait_for_screen(server, settled)
        assert "kiwipy top" in screen
        row = _cells(screen, worker_name)
        assert row is not None and row[1] == queue and row[2] == "idle"
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, check=False)
        worker.terminate()
        worker.wait(TIMEOUT)
        if worker.stdout is not None:
            worker.stdout.close()


def _wait_for_screen(server: str, ready: Any) -> str:
    deadline = time.monotonic() + TIMEOUT
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux(server, "capture-pane", "-p", "-t", server)
        if ready(screen):
            return screen
        time.sleep(0.5)
    raise AssertionError(f"the screen never showed what was expected:\n{screen}")


def test_top_renders_the_in_memory_broker_of_its_process() -> None:
    url = f"memory://top-{uuid.uuid4().hex[:8]}"

    def work(task: Any) -> Any:
        if task.get("fail"):
            raise ValueError("bad task")
        return task

    with kiwipy.connect(url) as worker_comm, kiwipy.connect(url) as comm:
        worker = Worker(worker_comm, work, queue="jobs", prefetch=2, name="w1", events=True)
        worker.start()
        top = Top(comm, url, ["jobs"])
        try:
            top.sample()
            queue = comm.task_queue("jobs")
            futures = [queue.task_send({"id": n, "fail": n % 3 == 0}) for n in range(6)]
            for future in futures:
                assert future is not None
                future.exception(TIMEOUT)
            time.sleep(0.2)  # the last failed broadcast
            console = Console(file=io.StringIO(), width=120)
            console.print(render(top.sample(), url))
        finally:
            worker.drain(TIMEOUT)
            top.close()
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert _cells(screen, "jobs") == ["jobs", "0", "0", "1", *(_cells(screen, "jobs") or [])[4:]]
    assert (_cells(screen, "w1") or [])[1:7] == ["jobs", "idle", "0", "4", "2", "0"]
    assert screen.count("ValueError('bad task')") == 2


def test_top_takes_the_management_api_rates_when_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from kiwipy.cli import _broker

    class Response(io.BytesIO):
        def __enter__(self) -> Response:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    queue = {
        "messages_ready": 5,
        "messages_unacknowledged": 2,
        "consumers": 3,
        "message_stats": {"publish_details": {"rate": 12.5}, "ack_details": {"rate": 10.0}},
    }
    monkeypatch.setattr(
        _broker.urllib.request, "urlopen", lambda *_a, **_k: Response(json.dumps(queue).encode())
    )
    report = _broker.queue_counts("amqp://guest:guest@127.0.0.1/", ["work"])
    assert report.source == "management API"
    counts = report.queues[0]
    assert (counts.ready, counts.unacknowledged, counts.consumers) == (5, 2, 3)
    assert (counts.rate_in, counts.rate_out) == (12.5, 10.0)
