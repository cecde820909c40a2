"""The documentation's code: every snippet equals its file, and every example file runs.

A ```python block whose first line is ``# docs/examples/<file>.py`` must equal that file. Each
example runs as a subprocess on ``memory://`` (where it fits in one process) and against the
real broker, with unique exchange and queue names (``KIWIPY_PREFIX``) that are deleted after.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiormq
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
BLOCK = re.compile(r"^```python\n(# (docs/examples/[\w/]+\.py)\n.*?)^```", re.M | re.S)

pytestmark = pytest.mark.timeout(30)


def snippets() -> list[tuple[str, str, str]]:
    """(page, example path, snippet text) for every quoted example in the docs."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for match in BLOCK.finditer(page.read_text()):
            found.append((page.name, match.group(2), match.group(1)))
    return found


def example_env(url: str, prefix: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIWIPY_")}
    env["KIWIPY_URL"] = url
    if prefix is not None:
        env["KIWIPY_PREFIX"] = prefix
    return env


def run_example(name: str, env: dict[str, str], timeout: float = 25) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def _delete(url: str, queues: list[str], exchanges: list[str]) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture
def broker(amqp_url: str, unique_name: str) -> Iterator[tuple[str, str]]:
    """(url, prefix) on the real broker; the prefix's task queues and exchanges go after."""
    yield amqp_url, unique_name
    queues = [
        f"{unique_name}.{suffix}"
        for suffix in ("tasks", "dead", "simulations", "failing", "refused")
    ]
    exchanges = [f"{unique_name}.messages", f"{unique_name}.tasks"]
    asyncio.run(_delete(amqp_url, queues, exchanges))


# -- the pages quote the files exactly ----------------------------------------------------------


def test_docs_quote_examples() -> None:
    found = snippets()
    assert found, "no ```python block quotes a docs/examples file"
    for page, path, text in found:
        assert (ROOT / path).read_text() == text, f"{page}: the snippet differs from {path}"


def test_every_example_is_quoted() -> None:
    quoted = {path for _, path, _ in snippets()}
    for example in EXAMPLES.glob("*.py"):
        assert f"docs/examples/{example.name}" in quoted, f"{example.name} is quoted nowhere"


# -- the examples run ---------------------------------------------------------------------------

QUICKSTART = [
    "task result: 42",
    "rpc answer: pong ping",
    "event: state.running.done {'pk': 42}",
    "event: state.finished.done {'pk': 44}",
]
ASYNCIO_QUICKSTART = [
    "task result: 42",
    "rpc answer: pong ping",
    "task_call: 10 rpc_call: pong 1",
    "event: state.done {'pk': 42}",
]


def test_quickstart_memory() -> None:
    assert run_example("quickstart.py", example_env("memory://docs")).splitlines() == QUICKSTART


@pytest.mark.amqp
def test_quickstart_amqp(broker: tuple[str, str]) -> None:
    assert run_example("quickstart.py", example_env(*broker)).splitlines() == QUICKSTART


def test_asyncio_quickstart_memory() -> None:
    out = run_example("asyncio_quickstart.py", example_env("memory://docs"))
    assert out.splitlines() == ASYNCIO_QUICKSTART


@pytest.mark.amqp
def test_asyncio_quickstart_amqp(broker: tuple[str, str]) -> None:
    out = run_example("asyncio_quickstart.py", example_env(*broker))
    assert out.splitlines() == ASYNCIO_QUICKSTART


PENDING = ["pending", "result: {'energy': -1.5, 'steps': 10}"]


def test_pending_rpc_memory() -> None:
    assert run_example("pending_rpc.py", example_env("memory://docs")).splitlines() == PENDING


@pytest.mark.amqp
def test_pending_rpc_amqp(broker: tuple[str, str]) -> None:
    assert run_example("pending_rpc.py", example_env(*broker)).splitlines() == PENDING


def test_unit_test_memory_passes() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "unit_test_memory.py"),
        ],
        capture_output=True,
        text=True,
        timeout=25,
        env=example_env("memory://docs"),
        cwd=EXAMPLES,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# -- the tutorial -------------------------------------------------------------------------------

TUTORIAL_RESULTS = [f"simulation {pk}: energy {-float(pk)}" for pk in (1, 2, 3)]


def test_tutorial_memory() -> None:
    output = run_example("tutorial_memory.py", example_env("memory://docs"))
    # Printed by the worker's thread: its place varies, and print() writes the text and its
    # newline separately, so it may land inside the main thread's first line.
    assert output.count("worker-1 ready") == 1, output
    lines = [line for line in output.replace("worker-1 ready", "").splitlines() if line]
    assert lines[0] == "submitted 3 simulations"
    assert lines[1:4] == TUTORIAL_RESULTS
    assert lines[4] == "{'worker': 'worker-1', 'done': 3, 'running': None}"
    assert lines[5:] == [
        f"event from worker-1: simulation.{pk}.finished {{'pk': {pk}, 'energy': {-float(pk)}}}"
        for pk in (1, 2, 3)
    ]


def start(name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, name, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=EXAMPLES,
    )


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


@pytest.mark.amqp
@pytest.mark.timeout(45)
def test_tutorial_processes_amqp(broker: tuple[str, str]) -> None:
    env = example_env(*broker)
    worker = start("tutorial_worker.py", "worker-1", env=env)
    monitor = start("tutorial_monitor.py", "4", env=env)
    try:
        assert first_line(worker) == "worker-1 ready"
        assert first_line(monitor) == "watching"
        client = run_example("tutorial_client.py", env, timeout=30).splitlines()
        assert client == ["submitted 4 simulations", *TUTORIAL_RESULTS, "simulation 4: energy -4.0"]
        status = run_example("tutorial_status.py", env).strip()
        assert status == "{'worker': 'worker-1', 'done': 4, 'running': None}"
        assert run_example("tutorial_status.py", env).strip() == status
        absent = subprocess.run(
            [sys.executable, "tutorial_status.py", "worker-9"],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
            cwd=EXAMPLES,
        )
        assert absent.stdout.strip() == "worker-9 is not running"
        events, _ = monitor.communicate(timeout=20)
        assert monitor.returncode == 0
        assert events.splitlines() == [
            f"worker-1: simulation.{pk}.finished {{'pk': {pk}, 'energy': {-float(pk)}}}"
            for pk in (1, 2, 3, 4)
        ]
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
        assert worker.returncode == 0, err
        assert out.strip() == "worker stopped"
    finally:
        for process in (worker, monitor):
            if process.poll() is None:
                process.kill()
                process.communicate()


GUARANTEES = [
    "rpc: DeadlineExceeded after 0.5 s",
    "rpc: UnroutableError at once",
    "task: ValueError cannot relax {'pk': 7}",
    "task: TaskRejected after 2 rounds",
    "dead-lettered: {'pk': 8}",
    "after close: CommunicatorClosed",
]


def test_guarantees_errors_memory() -> None:
    out = run_example("guarantees_errors.py", example_env("memory://docs"))
    assert out.splitlines() == GUARANTEES


@pytest.mark.amqp
def test_guarantees_errors_amqp(broker: tuple[str, str]) -> None:
    assert run_example("guarantees_errors.py", example_env(*broker)).splitlines() == GUARANTEES


LONG_TASKS = ["{'steps': 20, 'redelivered': False}"]


def test_long_tasks_memory() -> None:
    assert run_example("long_tasks.py", example_env("memory://docs")).splitlines() == LONG_TASKS


@pytest.mark.amqp
def test_long_tasks_amqp(broker: tuple[str, str]) -> None:
    assert run_example("long_tasks.py", example_env(*broker)).splitlines() == LONG_TASKS


OBSERVE = ["[('task failed: ValueError', 1), ('task finished', 2)]"]


def test_observe_listener_memory() -> None:
    out = run_example("observe_listener.py", example_env("memory://docs"))
    assert out.splitlines() == OBSERVE


@pytest.mark.amqp
def test_observe_listener_amqp(broker: tuple[str, str]) -> None:
    assert run_example("observe_listener.py", example_env(*broker)).splitlines() == OBSERVE


WORKER_POOL = [
    "energies: [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0]",
    "at most running at once: 4",
    "checked: True",
    "status: done 8, running 0",
]


def test_worker_pool_memory() -> None:
    assert run_example("worker_pool.py", example_env("memory://docs")).splitlines() == WORKER_POOL


@pytest.mark.amqp
def test_worker_pool_amqp(broker: tuple[str, str]) -> None:
    assert run_example("worker_pool.py", example_env(*broker)).splitlines() == WORKER_POOL
