"""The demo: worker processes, a pause by RPC, a SIGKILL in the middle of a task, nothing lost.

Run it with ``kiwipy demo`` (or ``python -m kiwipy.cli demo``, the same command). It starts worker
processes (``kiwipy worker kiwipy.cli._demo:work``), sends tasks with a progress bar, pauses and
resumes one worker by RPC, follows the workers' ``task.<id>.started`` / ``finished`` broadcasts
through a :class:`~kiwipy.filters.BroadcastFilter`, SIGKILLs one worker while it runs a task,
and ends with a summary the numbers prove: every task confirmed by the broker completed, the
killed worker's task among them, redelivered to another worker.

With no URL it runs on the local broker (``local://``: durable, nothing to install); when a
RabbitMQ URL is given and nothing answers there, it says so and runs on the local broker too.
``--url memory://NAME`` runs it in one process instead (threads, no kill step).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from kiwipy.aio import current_incoming_task
from kiwipy.exceptions import ConnectionLost, UnroutableError
from kiwipy.filters import BroadcastFilter
from kiwipy.settings import LOCAL_URL, mask_url

if TYPE_CHECKING:
    from rich.console import Console

    from kiwipy.cli._common import ConnectionOptions
    from kiwipy.sync import Communicator
    from kiwipy.worker import Worker

__all__ = ("run_demo", "work")

START_BROKER = (
    "sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached "
    "(or: docker run -d -p 5672:5672 rabbitmq:3)"
)
_READY_TIMEOUT = 30.0


def work(communicator: Any, task: Any) -> dict[str, Any]:
    """The demo's task: work ``task["seconds"]``, return the square of ``task["id"]`` and
    whether this delivery is a redelivery (the broker gave the task out before)."""
    del communicator
    time.sleep(float(task.get("seconds", 0.1)))
    incoming = current_incoming_task()
    return {
        "id": task["id"],
        "result": task["id"] ** 2,
        "redelivered": bool(incoming is not None and incoming.redelivered),
    }


class _Events:
    """What the workers' broadcasts told us."""

    def __init__(self, victim: str | None) -> None:
        self.lock = threading.Lock()
        self.started: dict[Any, list[str]] = {}
        self.finished: dict[str, int] = {}
        self.heard = 0
        self.victim = victim
        self.victim_running: Any = None
        self.victim_started = threading.Event()

    def __call__(
        self, _comm: Any, body: Any, sender: Any, subject: Any, _correlation_id: Any
    ) -> None:
        task_id = body.get("id") if isinstance(body, dict) else None
        with self.lock:
            self.heard += 1
            if str(subject).endswith(".started"):
                self.started.setdefault(task_id, []).append(str(sender))
                if sender == self.victim:
                    self.victim_running = task_id
                    self.victim_started.set()
            elif str(subject).endswith(".finished"):
                self.finished[str(sender)] = self.finished.get(str(sender), 0) + 1
                if sender == self.victim and self.victim_running == task_id:
                    self.victim_running = None


class _Processes:
    """Worker processes running ``kiwipy worker kiwipy.cli._demo:work``."""

    def __init__(self, url: str, prefix: str) -> None:
        self._env = {
            **os.environ,
            "KIWIPY_URL": url,  # not on the command line: ps would show the password
            "KIWIPY_PREFIX": prefix,
            "KIWIPY_TESTING_MODE": "1",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(self, name: str) -> None:
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop_all
        command = [sys.executable, "-m", "kiwipy.cli", "worker", "kiwipy.cli._demo:work"]
        command += ["--name", name, "--events", "--prefetch", "1", "--quiet"]
        self.procs[name] = subprocess.Popen(  # noqa: S603
            command, env=self._env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        self._logs[name] = log

    def last_words(self, name: str) -> str:
        log = self._logs[name]
        log.seek(0)
        lines = [line for line in log.read().decode(errors="replace").splitlines() if line]
        return lines[-1] if lines else "(no output)"

    def kill(self, name: str) -> int:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return proc.pid

    def alive(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is None]

    def stop_all(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every live worker (they drain) and wait; their exit codes."""
        for name in self.alive():
            self.procs[name].send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        for log in self._logs.values():
            log.close()
        return codes


def _connect_or_fall_back(
    connection: ConnectionOptions, console: Console, prefix: str
) -> tuple[Communicator, bool]:
    """The client communicator, and whether it is on a durable broker with worker processes
    (else in memory, in one process)."""
    import kiwipy.sync
    from kiwipy.cli._common import CliError, scrub

    options = connection.options(
        message_exchange=f"{prefix}.messages",
        task_exchange=f"{prefix}.tasks",
        task_queue=f"{prefix}.tasks",
        testing_mode=True,  # everything the demo declares goes away after it
    )
    if connection.url.startswith("memory:"):
        return kiwipy.sync.connect(connection.url, **options), False
    try:
        return kiwipy.sync.connect(connection.url, **options), True
    except ConnectionLost as exc:
        reason = scrub(str(exc), connection.url)
        if "ACCESS_REFUSED" in reason or "Connection.OpenOk" in reason:
            raise CliError(f"RabbitMQ refused the demo: {reason}") from exc
        if connection.url.startswith("local:"):
            raise CliError(f"The local broker did not start: {reason}") from exc
        console.print(
            f"No RabbitMQ answered at {mask_url(connection.url)} (to start one: "
            f"{START_BROKER}); running the same demo on the local broker ({LOCAL_URL}), "
            "durable too, which needs nothing installed.",
            soft_wrap=True,
        )
    connection.url = LOCAL_URL
    return kiwipy.sync.connect(LOCAL_URL, **options), True


def _rpc(client: Communicator, name: str, request: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.rpc_send(name, request).result(timeout=15)
    return answer


def _wait_ready(client: Communicator, names: list[str], procs: _Processes | None) -> None:
    from kiwipy.cli._common import CliError

    deadline = time.monotonic() + _READY_TIMEOUT
    for name in names:
        while True:
            try:
                _rpc(client, name, "status")
                break
            except UnroutableError:
                if procs is not None and procs.procs[name].poll() is not None:
                    raise CliError(
                        f"Worker {name} exited at start: {procs.last_words(name)}"
                    ) from None
                if time.monotonic() > deadline:
                    raise CliError(
                        f"Worker {name} did not start within {_READY_TIMEOUT:g} s"
                    ) from None
                time.sleep(0.1)


@contextlib.contextmanager
def _memory_workers(
    connection: ConnectionOptions, names: list[str], prefix: str
) -> Iterator[list[Worker]]:
    import kiwipy.sync
    from kiwipy.worker import Worker

    options = connection.options(
        message_exchange=f"{prefix}.messages",
        task_exchange=f"{prefix}.tasks",
        task_queue=f"{prefix}.tasks",
        testing_mode=True,
        task_prefetch_count=1,
    )
    workers: list[Worker] = []
    try:
        for name in names:
            communicator = kiwipy.sync.connect(connection.url, **options)
            worker = Worker(
                communicator,
                work,
                queue=f"{prefix}.tasks",
                prefetch=1,
                name=name,
                events=True,
            )
            worker.start()
            workers.append(worker)
        yield workers
    finally:
        for worker in workers:
            worker.drain(timeout=10)
            worker.communicator.close()


def run_demo(
    connection: ConnectionOptions, *, tasks: int, workers: int, task_seconds: float
) -> int:
    """The demo; returns 0 when no task was lost."""
    from rich.console import Console

    console = Console(highlight=False)
    started = time.monotonic()
    prefix = connection.exchange_prefix or f"kiwipy-demo-{uuid.uuid4().hex[:8]}"
    client, durable = _connect_or_fall_back(connection, console, prefix)
    names = [f"demo-worker-{n}" for n in range(1, workers + 1)]
    with client:
        where = "worker process" if durable else "worker thread"
        where += "" if workers == 1 else "es" if durable else "s"
        console.print(
            f"Connected to {mask_url(connection.url)}; starting {workers} {where} "
            f"({', '.join(names)})",
            soft_wrap=True,
        )
        if durable:
            procs = _Processes(connection.url, prefix)
            try:
                for name in names:
                    procs.start(name)
                _wait_ready(client, names, procs)
                outcome = _scenario(client, console, names, tasks, task_seconds, procs)
            finally:
                codes = procs.stop_all()
            killed = outcome.get("killed")
            drained = [f"{name} {code}" for name, code in codes.items() if name != killed]
            console.print(
                f"SIGTERM to the workers: each drained and exited (exit codes: "
                f"{', '.join(drained)})",
                soft_wrap=True,
            )
        else:
            with _memory_workers(connection, names, prefix):
                _wait_ready(client, names, None)
                outcome = _scenario(client, console, names, tasks, task_seconds, None)
    outcome["seconds"] = time.monotonic() - started
    _summary(console, outcome, durable)
    return 0 if outcome["lost"] == 0 else 1


def _scenario(
    client: Communicator,
    console: Console,
    names: list[str],
    n_tasks: int,
    task_seconds: float,
    procs: _Processes | None,
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    paused, victim = names[0], names[-1]
    events = _Events(victim if procs is not None else None)
    client.add_broadcast_subscriber(
        BroadcastFilter(events, subject="task.*", sender="demo-worker-*")
    )
    console.print(
        "Listening to the workers' broadcasts through BroadcastFilter(subject='task.*', "
        "sender='demo-worker-*')",
        soft_wrap=True,
    )
    futures: list[concurrent.futures.Future[Any]] = []
    killed: str | None = None
    killed_task: Any = None
    columns = (
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        log = progress.console.print
        answer = _rpc(client, paused, "pause")
        log(f"RPC 'pause' to {paused}: paused={answer['paused']} (done {answer['done']})")
        sending = progress.add_task("sent (broker confirmed)", total=n_tasks)
        completing = progress.add_task("completed (result back)", total=n_tasks)
        for number in range(1, n_tasks + 1):
            future = client.task_send({"id": number, "seconds": task_seconds})
            assert future is not None
            future.add_done_callback(lambda _f: progress.advance(completing))
            futures.append(future)
            progress.advance(sending)
        paused_until = time.monotonic() + max(1.0, 3 * task_seconds)

        def kill_step(wait: float) -> None:
            nonlocal killed, killed_task, names
            if procs is None:
                log("In memory there are no processes to kill: skipping the SIGKILL step")
                return
            running = _victim_task(events, futures, wait)
            if running is None:
                log(f"{victim} started no task to interrupt: no kill step", soft_wrap=True)
                return
            pid = procs.kill(victim)
            killed, killed_task = victim, running
            log(
                f"SIGKILL to {victim} (pid {pid}) while it ran task {running}: the broker "
                "gives that task to another worker",
                soft_wrap=True,
            )
            # As a supervisor would: a new worker takes the killed one's place (with one
            # worker, nobody else could run the killed task or those still queued).
            replacement = f"demo-worker-{len(names) + 1}"
            procs.start(replacement)
            names = [*names, replacement]
            _wait_ready(client, [replacement], procs)
            log(f"Started {replacement} in its place, as a supervisor would")

        if victim != paused:
            # While tasks are queued: the victim surely runs one (unless there are too few).
            kill_step(max(0.0, paused_until - time.monotonic()))
        time.sleep(max(0.0, paused_until - time.monotonic()))
        answer = _rpc(client, paused, "status")
        if victim != paused:
            with events.lock:
                others = sum(n for name, n in events.finished.items() if name != paused)
            share = f"(the other workers finished {others} tasks meanwhile)"
        else:
            share = "(the only worker: the tasks wait in the queue until it plays again)"
        log(
            f"RPC 'status' to {paused}: paused={answer['paused']}, done {answer['done']} {share}",
            soft_wrap=True,
        )
        answer = _rpc(client, paused, "play")
        log(f"RPC 'play' to {paused}: paused={answer['paused']}: it works again")
        if victim == paused:
            kill_step(15.0)
        deadline = time.monotonic() + 30 + n_tasks * task_seconds * 2
        concurrent.futures.wait(futures, timeout=max(1.0, deadline - time.monotonic()))
    results = [f.result() for f in futures if f.done() and f.exception() is None]
    errors = [f.exception() for f in futures if f.done() and f.exception() is not None]
    for error in errors[:3]:
        console.print(f"A task failed: {error}", soft_wrap=True)
    redelivered = [r["id"] for r in results if r.get("redelivered")]
    with events.lock:
        finished_by = dict(events.finished)
        heard = events.heard
    console.print(
        f"Heard {heard} broadcasts; tasks finished per worker: "
        + ", ".join(f"{name} {finished_by.get(name, 0)}" for name in names),
        soft_wrap=True,
    )
    if killed_task is not None:
        ran_by = events.started.get(killed_task, [])
        console.print(
            f"Task {killed_task} was started by {' then '.join(ran_by)}",
            soft_wrap=True,
        )
    return {
        "sent": len(futures),
        "completed": len(results),
        "failed": len(errors),
        "redelivered": len(redelivered),
        "redelivered_ids": redelivered,
        "lost": len(futures) - len(results) - len(errors),
        "killed": killed,
        "correct": all(r["result"] == r["id"] ** 2 for r in results),
    }


def _victim_task(
    events: _Events, futures: list[concurrent.futures.Future[Any]], wait: float
) -> Any:
    """The task the victim runs now, waiting (at most ``wait`` s) for it to start one while
    tasks are left; ``None`` when every task finished first."""
    events.victim_started.clear()
    deadline = time.monotonic() + wait
    while True:
        with events.lock:
            if events.victim_running is not None:
                return events.victim_running
        if all(future.done() for future in futures) or time.monotonic() > deadline:
            return None
        events.victim_started.wait(0.05)


def _summary(console: Console, outcome: dict[str, Any], durable: bool) -> None:
    from rich.table import Table

    table = Table(title="Summary", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_column("")
    confirmed = "confirmed by the broker (on disk)" if durable else "taken by the memory broker"
    table.add_row("sent", str(outcome["sent"]), f"every one {confirmed}")
    checked = "all correct" if outcome["correct"] else "SOME WRONG"
    table.add_row("completed", str(outcome["completed"]), f"results received, {checked}")
    if outcome["failed"]:
        table.add_row("failed", str(outcome["failed"]), "the task raised")
    ids = ", ".join(map(str, outcome["redelivered_ids"]))
    note = f"task {ids} ran again on another worker" if ids else "no task needed a second run"
    if outcome["killed"] is None:
        note = "no kill step: no task was interrupted"
    if not durable:
        note = "no kill step in memory"
    table.add_row("redelivered after the kill", str(outcome["redelivered"]), note)
    table.add_row("lost", str(outcome["lost"]), "sent and confirmed, but no result")
    table.add_row("time", f"{outcome['seconds']:.1f} s", "")
    console.print(table)
    console.print(
        f"Summary: sent {outcome['sent']}, completed {outcome['completed']}, "
        f"redelivered after the kill {outcome['redelivered']}, lost {outcome['lost']}, "
        f"time {outcome['seconds']:.1f} s" + ("" if durable else " (in-memory transport)"),
        soft_wrap=True,
    )
