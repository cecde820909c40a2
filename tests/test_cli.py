"""The ``kiwipy`` console script, run for real as a subprocess (against RabbitMQ where marked)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

KIWIPY = shutil.which("kiwipy", path=os.path.dirname(sys.executable))
DOWN_URL = "amqp://guest:secret-pw@127.0.0.1:1/"

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(KIWIPY is None, reason="the kiwipy console script is not installed"),
]

TASKS_MODULE = textwrap.dedent(
    """
    import pathlib
    import time


    def square(task):
        return task["x"] ** 2


    async def async_square(task):
        import asyncio

        from kiwipy.aio import current_incoming_task

        await asyncio.sleep(0.01)
        assert current_incoming_task() is not None
        return task["x"] ** 2


    async def async_fails(communicator, task):
        raise RuntimeError(f"async failure {task['x']}")


    def fails(task):
        raise ValueError(f"bad task {task['x']}")


    def slow(communicator, task):
        pathlib.Path(task["flag"]).write_text("started")
        time.sleep(task["seconds"])
        return {"slept": task["seconds"]}
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("KIWIPY_URL", "KIWIPY_PREFIX", "KIWIPY_TESTING_MODE"):
        env.pop(name, None)
    # Wide enough that no table cell wraps: bodies hold tmp paths of varying length.
    env["COLUMNS"] = "200"
    return env


def run(*args: str, input: str | None = None, cwd: Path | None = None, timeout: float = 30):
    assert KIWIPY is not None
    return subprocess.run(
        [KIWIPY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        cwd=cwd,
        env=_env(),
        check=False,
    )


class Running:
    """A ``kiwipy`` subprocess whose output lines are collected as they come."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        assert KIWIPY is not None
        self.proc = subprocess.Popen(
            [KIWIPY, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for pump in self.pumps:
            pump.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never printed; saw {self.seen}")

    def _close(self) -> None:
        for pump in self.pumps:
            pump.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self._close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "\n".join(self.seen)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()


@pytest.fixture
def names(amqp_url: str, unique_name: str) -> list[str]:
    """Options putting a command on the test broker in the test's own namespace."""
    return ["--url", amqp_url, "--exchange-prefix", unique_name, "--testing-mode"]


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    (tmp_path / "cli_test_tasks.py").write_text(TASKS_MODULE)
    return tmp_path


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for proc in started:
        proc.stop()


def assert_one_line_error(completed: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr + completed.stdout
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# -- without a broker ---------------------------------------------------------------------------

SUBCOMMANDS = [
    [],
    ["worker"],
    ["send"],
    ["call"],
    ["broadcast"],
    ["watch"],
    ["status"],
    ["tasks"],
    ["tasks", "list"],
    ["tasks", "purge"],
    ["demo"],
]


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c) or "kiwipy")
def test_help(command: list[str]) -> None:
    completed = run(*command, "--help")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"Usage: kiwipy {' '.join(command)}".rstrip())
    if command and command != ["tasks"]:
        assert "--url" in completed.stdout


BROKER_DOWN = [
    ["send", "1"],
    ["call", "someone", "1"],
    ["broadcast", "1"],
    ["watch"],
    ["status"],
    ["tasks", "list"],
    ["tasks", "purge", "--queue", "q", "--yes"],
    ["worker", "cli_test_tasks:square"],
]


@pytest.mark.parametrize("command", BROKER_DOWN, ids=lambda c: " ".join(c))
def test_broker_down_is_one_line_without_password(command: list[str], tasks_dir: Path) -> None:
    completed = run(*command, "--url", DOWN_URL, cwd=tasks_dir)
    line = assert_one_line_error(completed, "Cannot connect to amqp://guest:****@127.0.0.1:1/")
    assert "secret-pw" not in completed.stdout + completed.stderr
    assert line.startswith("kiwipy: error:")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("amqp:alice:s3cretPW@host/v", "'//' missing after 'amqp:'"),
        ("amqp://alice:s3cretPW@host:99999/v", "Port out of range"),
        ("amqq://alice:s3cretPW@host/v", "Unknown communicator URL scheme 'amqq'"),
        ("amqp://alice:s3cretPW@host/v ", "space"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["send", "1"]], ids=lambda c: c[0])
def test_malformed_url_is_one_line_without_password(
    command: list[str], url: str, problem: str
) -> None:
    completed = run(*command, "--url", url)
    assert completed.returncode == 2
    assert_one_line_error(completed, "kiwipy: error:", problem)
    assert "s3cretPW" not in completed.stdout + completed.stderr
    # Before the command too: kiwipy --url URL status.
    completed = run("--url", url, *command)
    assert completed.returncode == 2
    assert_one_line_error(completed, "kiwipy: error:", problem)
    assert "s3cretPW" not in completed.stdout + completed.stderr


@pytest.mark.parametrize(
    "command",
    [["send", "{bad"], ["call", "someone", "{bad"], ["broadcast", "{bad"]],
    ids=lambda c: c[0],
)
def test_bad_json_from_stdin_is_one_line(command: list[str]) -> None:
    completed = run(*command[:-1], "-", "--url", DOWN_URL, input="{bad\n")
    assert_one_line_error(completed, "The JSON read from stdin is not valid JSON", "{bad")


@pytest.mark.parametrize(
    "command",
    [["send", "{bad"], ["call", "someone", "{bad"], ["broadcast", "{bad"]],
    ids=lambda c: c[0],
)
def test_bad_json_is_one_line(command: list[str]) -> None:
    completed = run(*command, "--url", DOWN_URL)
    assert_one_line_error(completed, "not valid JSON", "{bad")


def test_usage_error_is_one_line() -> None:
    completed = run("send")
    assert completed.returncode == 2
    assert_one_line_error(completed, "Missing argument 'JSON'", "kiwipy send --help")


def test_bad_worker_function_is_one_line(tasks_dir: Path) -> None:
    completed = run("worker", "cli_test_tasks:nothing_here", "--url", DOWN_URL, cwd=tasks_dir)
    assert_one_line_error(completed, "has no attribute 'nothing_here'")


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        ("x = 1\ndef f(task)\n    return 1\n", ["broken_mod.py:2", "SyntaxError"]),
        ("import os\nimport no_such_module_xyz\n", ["broken_mod.py:2", "No module named"]),
        ("from os import nothing_here\n", ["broken_mod.py:1", "ImportError", "nothing_here"]),
        ("\n\nraise RuntimeError('boom at import')\n", ["broken_mod.py:3", "boom at import"]),
    ],
    ids=["syntax", "missing-import", "bad-name", "raises"],
)
def test_broken_worker_module_is_one_line_with_file_and_line(
    tmp_path: Path, source: str, needles: list[str]
) -> None:
    (tmp_path / "broken_mod.py").write_text(source)
    completed = run("worker", "broken_mod:f", "--url", "memory://x", cwd=tmp_path)
    assert completed.returncode == 2
    assert_one_line_error(completed, "kiwipy: error: Cannot import module 'broken_mod'", *needles)


# -- against RabbitMQ ---------------------------------------------------------------------------


@pytest.mark.amqp
def test_unknown_rpc_recipient_is_one_line(names: list[str], unique_name: str) -> None:
    completed = run("call", f"{unique_name}-nobody", '"hi"', *names)
    assert_one_line_error(completed, f"{unique_name}-nobody")


@pytest.mark.amqp
def test_access_refused_is_one_line(amqp_url: str, unique_name: str) -> None:
    bad = amqp_url.replace("guest:guest@", "guest:wrong-secret@")
    completed = run("status", "--url", bad)
    assert_one_line_error(completed, "ACCESS_REFUSED")
    assert "wrong-secret" not in completed.stdout + completed.stderr


@pytest.mark.amqp
def test_worker_send_and_call(
    names: list[str], unique_name: str, tasks_dir: Path, running: list[Running]
) -> None:
    queue_name = f"{unique_name}.work"
    name = f"{unique_name}-worker"
    worker = Running(
        "worker", "cli_test_tasks:square", "--queue", queue_name, "--name", name, *names,
        cwd=tasks_dir,
    )  # fmt: skip
    running.append(worker)
    worker.wait_for("working on queue")

    completed = run("send", "--queue", queue_name, '{"x": 7}', *names)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == 49

    completed = run("send", "--queue", queue_name, "--no-reply", '{"x": 2}', *names)
    assert completed.returncode == 0, completed.stderr
    assert "confirmed by the broker" in completed.stdout

    completed = run("call", name, '"status"', *names)
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer["name"] == name
    assert answer["paused"] is False
    worker.wait_for("done in")  # the --no-reply task ran too

    completed = run("call", name, '"nonsense"', *names)
    assert_one_line_error(completed, "ValueError", "Unknown request")

    worker.proc.send_signal(signal.SIGINT)
    code, output = worker.finish()
    assert code == 0, output
    assert "stopped: 2 done" in output


@pytest.mark.amqp
@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_worker_runs_async_task_functions(
    names: list[str],
    unique_name: str,
    tasks_dir: Path,
    running: list[Running],
    concurrency: str,
) -> None:
    results = {}
    for function in ("async_square", "async_fails"):
        queue_name = f"{unique_name}.{function}"
        worker = Running(
            "worker", f"cli_test_tasks:{function}", "--queue", queue_name,
            "--concurrency", concurrency, *names, cwd=tasks_dir,
        )  # fmt: skip
        running.append(worker)
        worker.wait_for("working on queue")
        results[function] = run("send", "--queue", queue_name, '{"x": 7}', *names)
        worker.proc.send_signal(signal.SIGINT)
        code, output = worker.finish()
        assert code == 0, output
        if function == "async_square":
            assert "stopped: 1 done, 0 failed" in output
        else:
            assert "stopped: 0 done, 1 failed" in output
    assert results["async_square"].returncode == 0, results["async_square"].stderr
    assert json.loads(results["async_square"].stdout) == 49
    line = assert_one_line_error(results["async_fails"], "RuntimeError", "async failure 7")
    assert "coroutine" not in line


@pytest.mark.amqp
def test_worker_drains_on_sigterm(
    names: list[str], unique_name: str, tasks_dir: Path, running: list[Running]
) -> None:
    queue_name = f"{unique_name}.slow"
    flag = tasks_dir / "started"
    worker_name = f"{unique_name}-worker"
    worker = Running(
        "worker", "cli_test_tasks:slow", "--queue", queue_name, "--prefetch", "2",
        "--name", worker_name, *names, cwd=tasks_dir,
    )  # fmt: skip
    running.append(worker)
    worker.wait_for("working on queue")
    first = Running(
        "send", "--queue", queue_name, json.dumps({"flag": str(flag), "seconds": 6}), *names
    )
    running.append(first)
    deadline = time.monotonic() + 15
    while not flag.exists():
        assert time.monotonic() < deadline, "the worker never started the task"
        time.sleep(0.05)
    # A second task the worker holds (prefetch 2) but cannot start (concurrency 1).
    second = json.dumps({"flag": str(tasks_dir / "second"), "seconds": 0})
    completed = run("send", "--queue", queue_name, "--no-reply", second, *names)
    assert completed.returncode == 0, completed.stderr
    time.sleep(0.3)

    completed = run("status", "--worker", worker_name, *names)
    assert completed.returncode == 0, completed.stderr
    assert f"Worker {worker_name}: working; 1 running" in " ".join(completed.stdout.split())

    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for("draining")
    # Still answering while it finishes its task (issue 14, item 6): status shows it draining.
    completed = run("status", "--worker", worker_name, *names)
    assert completed.returncode == 0, completed.stderr
    assert f"Worker {worker_name}: draining; 1 running" in " ".join(completed.stdout.split())
    code, output = worker.finish()
    assert code == 0, output
    assert "stopped: 1 done, 0 failed, 1 given back to the queue" in output
    completed = run("status", "--worker", worker_name, *names)
    assert f"Worker {worker_name}: not running" in " ".join(completed.stdout.split())

    code, sent_output = first.finish()
    assert code == 0, sent_output
    assert json.loads(sent_output.strip().splitlines()[-1]) == {"slept": 6}

    completed = run("tasks", "list", "--queue", queue_name, *names)
    assert completed.returncode == 0, completed.stderr
    assert '"seconds": 0' in completed.stdout, completed.stdout
    assert not (tasks_dir / "second").exists()


@pytest.mark.amqp
def test_broadcast_and_watch(names: list[str], running: list[Running]) -> None:
    watcher = Running(
        "watch", "--subject", "state.*", "--sender", "proc-*", "--json", "--count", "1", *names
    )
    running.append(watcher)
    watcher.wait_for("watching broadcasts")
    for subject, sender in (
        ("other.x", "proc-1"),
        ("state.done", "someone"),
        ("state.done", "proc-1"),
    ):
        completed = run("broadcast", "--subject", subject, "--sender", sender, '{"pk": 3}', *names)
        assert completed.returncode == 0, completed.stderr
        assert "broadcast sent" in completed.stdout
    line = watcher.wait_for('"subject"')
    record = json.loads(line)
    assert record["subject"] == "state.done"
    assert record["sender"] == "proc-1"
    assert record["body"] == {"pk": 3}
    code, _ = watcher.finish()
    assert code == 0


@pytest.mark.amqp
def test_send_call_and_broadcast_read_the_body_from_stdin(
    names: list[str], unique_name: str, tasks_dir: Path, running: list[Running]
) -> None:
    queue_name = f"{unique_name}.stdin"
    name = f"{unique_name}-stdin-worker"
    worker = Running(
        "worker", "cli_test_tasks:square", "--queue", queue_name, "--name", name, *names,
        cwd=tasks_dir,
    )  # fmt: skip
    running.append(worker)
    watcher = Running("watch", "--json", "--count", "1", *names)
    running.append(watcher)
    worker.wait_for("working on queue")
    watcher.wait_for("watching broadcasts")

    completed = run("send", "--queue", queue_name, "-", *names, input='{"x": 9}\n')
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == 81
    completed = run("call", name, "-", *names, input='"status"')
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["name"] == name
    completed = run("broadcast", "--subject", "s.t", "-", *names, input='{"pk": [1, 2]}')
    assert completed.returncode == 0, completed.stderr
    assert json.loads(watcher.wait_for('"subject"'))["body"] == {"pk": [1, 2]}


@pytest.mark.amqp
def test_send_verbose_shows_the_remote_traceback(
    names: list[str], unique_name: str, tasks_dir: Path, running: list[Running]
) -> None:
    queue_name = f"{unique_name}.fails"
    worker = Running("worker", "cli_test_tasks:fails", "--queue", queue_name, *names, cwd=tasks_dir)
    running.append(worker)
    worker.wait_for("working on queue")

    quiet = run("send", "--queue", queue_name, '{"x": 3}', *names)
    assert_one_line_error(quiet, "ValueError", "bad task 3")

    verbose = run("send", "-v", "--queue", queue_name, '{"x": 4}', *names)
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr
    assert "cli_test_tasks.py" in verbose.stderr
    assert "raise ValueError(f\"bad task {task['x']}\")" in verbose.stderr
    last = verbose.stderr.strip().splitlines()[-1]
    assert last.startswith("kiwipy: error:")
    assert "bad task 4" in last


@pytest.mark.amqp
def test_watch_plain_lines_and_stops_on_sigint(names: list[str], running: list[Running]) -> None:
    watcher = Running("watch", *names)
    running.append(watcher)
    watcher.wait_for("watching broadcasts")
    completed = run("broadcast", "--subject", "hello", "--sender", "me", "[1, 2]", *names)
    assert completed.returncode == 0, completed.stderr
    line = watcher.wait_for("hello")
    assert line.endswith("hello  from me: [1, 2]")
    watcher.proc.send_signal(signal.SIGINT)
    code, _ = watcher.finish()
    assert code == 0


@pytest.mark.amqp
def test_status(names: list[str], unique_name: str, amqp_url: str) -> None:
    queue_name = f"{unique_name}.status"
    completed = run("send", "--queue", queue_name, "--no-reply", "1", *names)
    assert completed.returncode == 0, completed.stderr
    completed = run("status", "--queue", queue_name, *names)
    assert completed.returncode == 0, completed.stderr
    out = " ".join(completed.stdout.split())
    assert "Broker: reachable at amqp://guest:****@" in out
    assert "Server: RabbitMQ" in out
    assert "consumer_timeout:" in out
    assert "guest:guest" not in completed.stdout
    assert unique_name in out  # the queues are listed (with counts, or why there are none)
    # A failover list whose first node is down: connected through the second, counts too.
    parts = urllib.parse.urlsplit(amqp_url)
    listed = f"{parts.scheme}://{parts.netloc.rpartition('@')[0]}@127.0.0.1:1/;{amqp_url}"
    completed = run("status", "--queue", queue_name, *names, "--url", listed)
    assert completed.returncode == 0, completed.stderr
    out_listed = " ".join(completed.stdout.split())
    assert "guest:guest" not in completed.stdout
    assert f"reachable at {parts.scheme}://guest:****@{parts.hostname}:{parts.port}" in out_listed
    assert ("counts from" in out_listed) == ("counts from" in out), out_listed
    completed = run("tasks", "purge", "--queue", queue_name, "--yes", *names)
    assert completed.returncode == 0, completed.stderr


def _queue_exists(amqp_url: str, name: str) -> bool:
    """A passive declare on a connection of its own: creates nothing."""
    import asyncio

    import aiormq

    async def check() -> bool:
        connection = await aiormq.connect(amqp_url)
        try:
            channel = await connection.channel()
            try:
                await channel.queue_declare(name, passive=True)
            except aiormq.ChannelNotFoundEntity:
                return False
            return True
        finally:
            await connection.close()

    return asyncio.run(asyncio.wait_for(check(), 15))


@pytest.mark.amqp
@pytest.mark.parametrize(
    "command",
    [["tasks", "list", "--queue"], ["tasks", "purge", "--yes", "--queue"]],
    ids=["list", "purge"],
)
def test_inspecting_an_unknown_queue_fails_and_creates_nothing(
    command: list[str], names: list[str], unique_name: str, amqp_url: str
) -> None:
    typo = f"{unique_name}.typo"
    completed = run(*command, typo, *names)
    assert completed.returncode == 2
    assert_one_line_error(completed, f"No queue '{typo}'", "nothing was created")
    assert not _queue_exists(amqp_url, typo)
    # The default queue of an unused --exchange-prefix does not exist either.
    if command[1] == "list":
        completed = run("tasks", "list", *names)
        assert completed.returncode == 2
        assert_one_line_error(completed, f"No queue '{unique_name}.tasks'")
        assert not _queue_exists(amqp_url, f"{unique_name}.tasks")


@pytest.mark.amqp
def test_tasks_list_and_purge(names: list[str], unique_name: str) -> None:
    queue_name = f"{unique_name}.waiting"
    for number in range(3):
        body = json.dumps({"n": number})
        completed = run("send", "--queue", queue_name, "--no-reply", body, *names)
        assert completed.returncode == 0, completed.stderr

    completed = run("tasks", "list", "--queue", queue_name, "--limit", "2", *names)
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert '{"n": 0}' in out and '{"n": 1}' in out and '{"n": 2}' not in out
    assert "put back unchanged" in " ".join(out.split())
    assert "showing the first 2" in out

    completed = run("tasks", "list", "--queue", queue_name, *names)
    assert completed.returncode == 0, completed.stderr
    assert all(f'{{"n": {n}}}' in completed.stdout for n in range(3))
    assert "yes" in completed.stdout  # now marked redelivered

    completed = run("tasks", "purge", "--queue", queue_name, *names, input="n\n")
    assert completed.returncode == 1
    assert "aborted" in completed.stderr

    completed = run("tasks", "purge", "--queue", queue_name, *names, input="y\n")
    assert completed.returncode == 0, completed.stderr
    assert "Purged 3 task(s)" in completed.stdout

    completed = run("tasks", "list", "--queue", queue_name, *names)
    assert completed.returncode == 0, completed.stderr
    assert "is empty" in completed.stdout


@pytest.mark.amqp
def test_purge_answers_waiting_senders(
    names: list[str], unique_name: str, running: list[Running]
) -> None:
    queue_name = f"{unique_name}.purged"
    sender = Running("send", "--queue", queue_name, '"x"', *names)
    running.append(sender)
    deadline = time.monotonic() + 15
    while True:
        completed = run("tasks", "purge", "--queue", queue_name, "--yes", *names)
        if completed.returncode == 2 and "No queue" in completed.stderr:
            pass  # the sender has not declared its queue yet: purge creates nothing
        else:
            assert completed.returncode == 0, completed.stderr
        if "Purged 1" in completed.stdout:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    code, output = sender.finish()
    assert code == 1
    assert "TaskPurged" in output
