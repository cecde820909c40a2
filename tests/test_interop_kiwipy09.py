"""Side by side with kiwipy 0.9 on one broker.

kiwipy 0.9.0 from PyPI runs in its own virtual environment, as a subprocess
(``tests/interop/peer09.py``), against the same RabbitMQ, exchanges and queues as our blocking
communicator: tasks, RPC and broadcasts in both directions, replies (pending ones included) and
remote exceptions, and a task queue first declared by kiwipy 0.9 reused by us.

Both sides run with ``testing_mode=False``: kiwipy 0.9's testing mode declares the task queue
non-durable (ours is always durable), which RabbitMQ would refuse as a redeclaration. Each test
uses its own names and deletes the queues and exchanges it made.

The kiwipy 0.9 environment is ``$KIWIPY09_VENV`` or ``<repo>/.venv-kiwipy09``, made on first use
(a stamp file records a finished install). Failing to make it fails the tests under ``CI=true``
and skips them otherwise. The per-test timeout covers the test body only (``func_only``), so
the one-off install does not count against the first test; the install has its own timeouts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiormq
import pytest

import kiwipy
from kiwipy import sync
from kiwipy.filters import BroadcastFilter

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(60, func_only=True)]

ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPT = Path(__file__).resolve().parent / "interop" / "peer09.py"
KIWIPY09_REQUIREMENT = "kiwipy[rmq]==0.9.0"
VENV_CREATE_TIMEOUT = 120.0
PIP_INSTALL_TIMEOUT = 300.0
TIMEOUT = 15.0  # bound on any one wait in these tests
PEER_LIFETIME = 40.0  # a peer exits on its own after this, whatever happens
KIWIPY09_TASK_QUEUE_ARGS = {"x-message-ttl": 604_800_000}


# -- the kiwipy 0.9 environment ----------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _make_kiwipy09_venv(venv: Path) -> Path:
    """Create ``venv`` with kiwipy 0.9.0 installed (once: a stamp marks a finished install)."""
    python = _venv_python(venv)
    stamp = venv / ".kiwipy09-stamp"
    wanted = f"{KIWIPY09_REQUIREMENT} python{sys.version_info[0]}.{sys.version_info[1]}"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
        raise OSError(f"{venv} exists and is not a virtual environment; not overwriting it")
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        check=True,
        capture_output=True,
        text=True,
        timeout=VENV_CREATE_TIMEOUT,
    )
    subprocess.run(
        [
            str(python),
            *("-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check"),
            KIWIPY09_REQUIREMENT,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=PIP_INSTALL_TIMEOUT,
    )
    check = "import aio_pika, kiwipy, kiwipy.rmq; assert kiwipy.__version__ == '0.9.0'"
    subprocess.run([str(python), "-c", check], check=True, capture_output=True, timeout=60)
    stamp.write_text(wanted)
    return python


@pytest.fixture(scope="session")
def kiwipy09_python() -> Path:
    """The python of a virtual environment holding kiwipy 0.9.0 from PyPI."""
    venv = Path(os.environ.get("KIWIPY09_VENV") or ROOT / ".venv-kiwipy09")
    try:
        return _make_kiwipy09_venv(venv)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        message = f"cannot make the kiwipy 0.9 environment in {venv}: {exc}\n{detail[-2000:]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


# -- names and cleanup -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Names:
    url: str
    message_exchange: str
    task_exchange: str
    task_queue: str
    extra_queue: str

    def options(self) -> dict[str, Any]:
        return {
            "message_exchange": self.message_exchange,
            "task_exchange": self.task_exchange,
            "task_queue": self.task_queue,
        }


async def _on_fresh_channel(url: str, action: Any) -> Any:
    connection = await asyncio.wait_for(aiormq.connect(url), TIMEOUT)
    try:
        channel = await connection.channel()
        return await asyncio.wait_for(action(channel), TIMEOUT)
    finally:
        await connection.close()


async def _delete_all(names: Names) -> None:
    """Delete what the test made; each on its own channel (a failure closes a channel)."""
    deletions = [
        lambda ch: ch.queue_delete(names.task_queue),
        lambda ch: ch.queue_delete(names.extra_queue),
        lambda ch: ch.exchange_delete(names.task_exchange),
        lambda ch: ch.exchange_delete(names.message_exchange),
    ]
    for delete in deletions:
        with contextlib.suppress(Exception):
            await _on_fresh_channel(names.url, delete)


@pytest.fixture
def names(amqp_url: str, unique_name: str) -> Iterator[Names]:
    prefix = f"{unique_name}-interop09"
    made = Names(
        url=amqp_url,
        message_exchange=f"{prefix}.messages",
        task_exchange=f"{prefix}.tasks",
        task_queue=f"{prefix}.queue",
        extra_queue=f"{prefix}.extra",
    )
    yield made
    asyncio.run(_delete_all(made))


@contextlib.contextmanager
def our_communicator(names: Names) -> Iterator[sync.Communicator]:
    with sync.connect(names.url, testing_mode=False, **names.options()) as comm:
        yield comm


# -- the kiwipy 0.9 peer -----------------------------------------------------------------------


class Peer:
    """A kiwipy 0.9 process playing one role; its stdout is read line by line with deadlines."""

    def __init__(self, python: Path, names: Names, role: str, **config: Any) -> None:
        full = {"url": names.url, "role": role, "lifetime": PEER_LIFETIME}
        full.update(names.options())
        full.update(config)
        self.role = role
        self.seen: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        self._process = subprocess.Popen(
            # -I: isolated, so no PYTHONPATH can slip our kiwipy in instead of 0.9's.
            [str(python), "-I", str(PEER_SCRIPT), json.dumps(full)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=PEER_SCRIPT.parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]

    def _failure(self, why: str) -> AssertionError:
        return AssertionError(
            f"kiwipy 0.9 peer ({self.role}): {why}\nevents: {self.seen}\n"
            f"stderr:\n{self._stderr_tail()}"
        )

    def next_event(self, *kinds: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event of one of ``kinds``; fails on a deadline, an exit or a peer failure."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(f"no {kinds} event within {timeout:g} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise self._failure(f"exited (code {self._process.poll()}) before {kinds}")
            event: dict[str, Any] = json.loads(line)
            self.seen.append(event)
            if event["event"] in kinds:
                return event
            if event["event"] in ("failed", "exit"):
                raise self._failure(f"ended before {kinds}")

    def events(self, kind: str, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [
            self.next_event(kind, timeout=max(deadline - time.monotonic(), 0.01))
            for _ in range(count)
        ]

    def wait_ready(self) -> None:
        connected = self.next_event("connected")
        assert connected["kiwipy_version"] == "0.9.0"
        self.next_event("ready")

    def finish(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait for a one-shot role to exit; return its ``exit`` event (status 0 asserted)."""
        event = self.next_event("exit", timeout=timeout)
        if event["status"] != 0:
            raise self._failure("exited with an error")
        return event

    def stop(self) -> None:
        """Ask the peer to stop, then make sure it is gone (kill after a grace period)."""
        try:
            if self._process.stdin is not None:
                with contextlib.suppress(OSError):
                    self._process.stdin.write("stop\n")
                    self._process.stdin.close()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
            self._reader.join(5)  # EOF reached: the reader is done with stdout
        finally:
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._stderr.close()


@pytest.fixture
def start_peer(kiwipy09_python: Path, names: Names) -> Iterator[Any]:
    """``start_peer(role, **config)`` starts a kiwipy 0.9 peer; all are stopped at the end."""
    peers: list[Peer] = []

    def start(role: str, **config: Any) -> Peer:
        peer = Peer(kiwipy09_python, names, role, **config)
        peers.append(peer)
        return peer

    try:
        yield start
    finally:
        for peer in peers:
            peer.stop()


# -- our side ----------------------------------------------------------------------------------


def new_answer(value: Any) -> Any:
    """How our worker and RPC server answer (the mirror of ``peer09.answer``)."""
    if isinstance(value, dict) and "raise" in value:
        raise ValueError(value["raise"])
    if isinstance(value, dict) and "echo" in value:
        return {"echo": value["echo"]}
    if isinstance(value, str) and value.startswith("pending:"):
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        timer = threading.Timer(0.3, future.set_result, (f"new:{value[8:]}",))
        timer.daemon = True
        timer.start()
        return future
    return f"new:{value}"


class Recorder:
    """A subscriber that records what it is given, then answers like ``new_answer``."""

    def __init__(self) -> None:
        self.received: queue.Queue[Any] = queue.Queue()

    def task_or_rpc(self, _comm: Any, msg: Any) -> Any:
        self.received.put(msg)
        return new_answer(msg)

    def broadcast(
        self, _comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any
    ) -> None:
        self.received.put((body, sender, subject, correlation_id))

    def take(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [
            self.received.get(timeout=max(deadline - time.monotonic(), 0.01)) for _ in range(count)
        ]

    def nothing_more(self, wait: float = 0.3) -> bool:
        try:
            self.received.get(timeout=wait)
        except queue.Empty:
            return True
        return False


def unwrap(future: concurrent.futures.Future[Any]) -> tuple[Any, int]:
    """The final result of a chain of futures and the number of pending levels."""
    depth = 0
    result = future.result(TIMEOUT)
    while isinstance(result, concurrent.futures.Future):
        depth += 1
        result = result.result(TIMEOUT)
    return result, depth


def outcomes_by_sent(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {json.dumps(event["sent"], sort_keys=True): event for event in events}


def key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# -- tasks -------------------------------------------------------------------------------------


def test_old_sends_tasks_to_our_worker(names: Names, start_peer: Any) -> None:
    """kiwipy 0.9 sends tasks (YAML tuples, no content type); we run them; it gets our replies,
    a pending one included."""
    recorder = Recorder()
    tasks = ["alpha", 2, {"nested": [1, 2.5, None, True]}, "pending:later"]
    with our_communicator(names) as comm:  # we declare the task queue first here
        comm.add_task_subscriber(recorder.task_or_rpc)
        peer = start_peer("send-tasks", tasks=tasks, no_reply_tasks=["quiet"])

        assert peer.next_event("sent-no-reply")["future_is_none"] is True
        results = outcomes_by_sent(peer.events("result", len(tasks)))
        peer.finish()
        received = recorder.take(len(tasks) + 1)

    assert results[key("alpha")]["result"] == "new:alpha"
    assert results[key(2)]["result"] == "new:2"
    assert results[key({"nested": [1, 2.5, None, True]})]["result"] == (
        "new:{'nested': [1, 2.5, None, True]}"
    )
    later = results[key("pending:later")]
    assert (later["result"], later["depth"]) == ("new:later", 1)
    assert all(results[key(task)]["depth"] == 0 for task in tasks[:3])
    # What our worker got, with Python types intact (an int stays an int).
    assert sorted(map(key, received)) == sorted(map(key, [*tasks, "quiet"]))
    assert 2 in received and "2" not in received


def test_new_sends_tasks_to_old_worker(names: Names, start_peer: Any) -> None:
    """We send JSON tasks; a kiwipy 0.9 worker reads them and its replies (YAML, no content type,
    a pending one included) resolve our futures."""
    worker = start_peer("worker")
    worker.wait_ready()  # kiwipy 0.9 declared the task queue first here
    with our_communicator(names) as comm:
        plain = comm.task_send("alpha")
        number = comm.task_send(7)
        structured = comm.task_send({"k": ["v", 1, None]})
        pending = comm.task_send("pending:later")
        assert plain is not None and number is not None
        assert structured is not None and pending is not None

        assert unwrap(plain) == ("old:alpha", 0)
        assert unwrap(number) == ("old:7", 0)
        assert unwrap(structured) == ("old:{'k': ['v', 1, None]}", 0)
        # The pending protocol: the first future resolves to a second one, then to the result.
        first = pending.result(TIMEOUT)
        assert isinstance(first, concurrent.futures.Future)
        assert first.result(TIMEOUT) == "old:later"

        assert comm.task_send("silent", no_reply=True) is None
        seen = {key(event["task"]): event for event in worker.events("task", 5)}

    assert seen[key(7)]["type"] == "int"
    assert seen[key({"k": ["v", 1, None]})]["type"] == "dict"
    assert set(seen) == {key(t) for t in ["alpha", 7, {"k": ["v", 1, None]}, "pending:later"]} | {
        key("silent")
    }


def test_old_worker_exception_arrives_as_remote_exception(names: Names, start_peer: Any) -> None:
    worker = start_peer("worker")
    server_id = f"old-server-{uuid.uuid4().hex}"
    server = start_peer("rpc-server", identifier=server_id)
    worker.wait_ready()
    server.wait_ready()
    with our_communicator(names) as comm:
        task_future = comm.task_send({"raise": "old task boom"})
        assert task_future is not None
        with pytest.raises(kiwipy.RemoteException) as task_error:
            task_future.result(TIMEOUT)
        assert str(task_error.value) == "old task boom"  # kiwipy 0.9 sends str(exc) only

        rpc_future = comm.rpc_send(server_id, {"raise": "old rpc boom"})
        with pytest.raises(kiwipy.RemoteException) as rpc_error:
            rpc_future.result(TIMEOUT)
        assert str(rpc_error.value) == "old rpc boom"


def test_our_exception_arrives_at_old_side_as_remote_exception(
    names: Names, start_peer: Any
) -> None:
    recorder = Recorder()
    server_id = f"new-server-{uuid.uuid4().hex}"
    with our_communicator(names) as comm:
        comm.add_task_subscriber(recorder.task_or_rpc)
        comm.add_rpc_subscriber(recorder.task_or_rpc, server_id)
        sender = start_peer("send-tasks", tasks=[{"raise": "new task boom"}])
        caller = start_peer("rpc-call", recipient=server_id, messages=[{"raise": "new rpc boom"}])

        task_error = sender.next_event("error")
        rpc_error = caller.next_event("error")
        sender.finish()
        caller.finish()

    # kiwipy 0.9 raises its own RemoteException with our "exception" text: "Type: message".
    assert (task_error["type"], task_error["message"]) == (
        "RemoteException",
        "ValueError: new task boom",
    )
    assert (rpc_error["type"], rpc_error["message"]) == (
        "RemoteException",
        "ValueError: new rpc boom",
    )
    received = sorted(item["raise"] for item in recorder.take(2))
    assert received == ["new rpc boom", "new task boom"]


# -- rpc ---------------------------------------------------------------------------------------


def test_old_rpc_to_our_server(names: Names, start_peer: Any) -> None:
    recorder = Recorder()
    server_id = f"new-server-{uuid.uuid4().hex}"
    messages = ["hello", 3, "pending:later"]
    with our_communicator(names) as comm:
        assert comm.add_rpc_subscriber(recorder.task_or_rpc, server_id) == server_id
        caller = start_peer("rpc-call", recipient=server_id, messages=messages)
        results = outcomes_by_sent(caller.events("result", len(messages)))
        caller.finish()
        received = recorder.take(len(messages))

    assert (results[key("hello")]["result"], results[key("hello")]["depth"]) == ("new:hello", 0)
    assert (results[key(3)]["result"], results[key(3)]["depth"]) == ("new:3", 0)
    later = results[key("pending:later")]
    assert (later["result"], later["depth"]) == ("new:later", 1)
    assert received == messages


def test_new_rpc_to_old_server(names: Names, start_peer: Any) -> None:
    server_id = f"old-server-{uuid.uuid4().hex}"
    server = start_peer("rpc-server", identifier=server_id)
    server.wait_ready()
    with our_communicator(names) as comm:
        assert unwrap(comm.rpc_send(server_id, "hello")) == ("old:hello", 0)
        assert unwrap(comm.rpc_send(server_id, 3)) == ("old:3", 0)
        first = comm.rpc_send(server_id, "pending:later").result(TIMEOUT)
        assert isinstance(first, concurrent.futures.Future)
        assert first.result(TIMEOUT) == "old:later"

        started = time.monotonic()
        with pytest.raises(kiwipy.UnroutableError):
            comm.rpc_send(f"nobody-{uuid.uuid4().hex}", "anyone?")
        assert time.monotonic() - started < 5.0

    seen = server.events("rpc", 3)
    assert [(event["msg"], event["type"]) for event in seen] == [
        ("hello", "str"),
        (3, "int"),
        ("pending:later", "str"),
    ]


def test_old_peers_answer_messages_that_carry_trace_context(names: Names, start_peer: Any) -> None:
    """With OpenTelemetry on, our tasks and RPCs carry traceparent headers; kiwipy 0.9 ignores
    them and answers as usual."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from kiwipy.observe.otel import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = start_peer("worker")
    server_id = f"old-server-{uuid.uuid4().hex}"
    server = start_peer("rpc-server", identifier=server_id)
    worker.wait_ready()
    server.wait_ready()
    with our_communicator(names) as comm:
        comm.add_listener(Tracing(provider))
        task = comm.task_send("traced")
        assert task is not None
        assert unwrap(task) == ("old:traced", 0)
        assert unwrap(comm.rpc_send(server_id, "traced")) == ("old:traced", 0)
    assert worker.events("task", 1)[0]["task"] == "traced"
    produced = [span for span in exporter.get_finished_spans() if span.name.endswith("publish")]
    assert len(produced) == 2  # so the headers were there


# -- broadcasts --------------------------------------------------------------------------------

BROADCASTS = [
    {
        "body": {"state": "finished", "values": [1, 2]},
        "sender": 42,
        "subject": "state_changed.running.finished",
        "correlation_id": "corr-1",
    },
    {"body": "not for the filter", "sender": 43, "subject": "other.topic"},
    {"body": "third", "sender": 42, "subject": "state_changed.waiting.finished"},
    {"body": "anonymous"},
]


def test_old_broadcasts_reach_us(names: Names, start_peer: Any) -> None:
    everything, by_subject, by_sender = Recorder(), Recorder(), Recorder()
    with our_communicator(names) as comm:
        comm.add_broadcast_subscriber(everything.broadcast)
        comm.add_broadcast_subscriber(
            BroadcastFilter(by_subject.broadcast, subject="state_changed.*.finished")
        )
        comm.add_broadcast_subscriber(BroadcastFilter(by_sender.broadcast, sender=42))
        sender = start_peer("broadcast", broadcasts=BROADCASTS)
        assert all(event["ok"] is True for event in sender.events("sent", len(BROADCASTS)))
        sender.finish()

        got = everything.take(len(BROADCASTS))
        subject_matches = by_subject.take(3)  # a None subject always passes a filter
        sender_matches = by_sender.take(3)  # so does a None sender
        assert by_subject.nothing_more() and by_sender.nothing_more()

    assert got == [
        ({"state": "finished", "values": [1, 2]}, 42, "state_changed.running.finished", "corr-1"),
        ("not for the filter", 43, "other.topic", None),
        ("third", 42, "state_changed.waiting.finished", None),
        ("anonymous", None, None, None),
    ]
    assert type(got[0][1]) is int
    assert [item[0] for item in subject_matches] == [got[0][0], "third", "anonymous"]
    assert [item[0] for item in sender_matches] == [got[0][0], "third", "anonymous"]


def test_new_broadcasts_reach_old_listener(names: Names, start_peer: Any) -> None:
    listener = start_peer("listener")
    listener.wait_ready()
    with our_communicator(names) as comm:
        for item in BROADCASTS:
            assert comm.broadcast_send(**item) is True
        got = listener.events("broadcast", len(BROADCASTS))

    assert [
        (event["body"], event["sender"], event["subject"], event["correlation_id"]) for event in got
    ] == [
        (item["body"], item.get("sender"), item.get("subject"), item.get("correlation_id"))
        for item in BROADCASTS
    ]
    assert [event["sender_type"] for event in got] == ["int", "int", "int", "NoneType"]


# -- topology ----------------------------------------------------------------------------------


def _redeclare(names: Names, queue_name: str, arguments: dict[str, Any]) -> Any:
    async def declare(channel: Any) -> Any:
        return await channel.queue_declare(queue_name, durable=True, arguments=arguments)

    return asyncio.run(_on_fresh_channel(names.url, declare))


def test_task_queue_first_declared_by_kiwipy09_is_reused(names: Names, start_peer: Any) -> None:
    """kiwipy 0.9 declares the default task queue and a named one; we then send to and consume
    from both without PRECONDITION_FAILED, and the queues keep kiwipy 0.9's arguments."""
    declarer = start_peer("declare-queue", extra_queues=[names.extra_queue])
    declared = declarer.next_event("declared")
    declarer.finish()
    assert declared["queues"] == [names.task_queue, names.extra_queue]
    for queue_name in (names.task_queue, names.extra_queue):
        # Redeclaring with exactly kiwipy 0.9's flags and arguments succeeds: the queue has them.
        ok = _redeclare(names, queue_name, KIWIPY09_TASK_QUEUE_ARGS)
        assert ok.message_count == 0

    recorder = Recorder()
    with our_communicator(names) as comm:
        waiting = comm.task_send("queued before subscribing")
        assert waiting is not None
        comm.add_task_subscriber(recorder.task_or_rpc)
        assert waiting.result(TIMEOUT) == "new:queued before subscribing"

        extra = comm.task_queue(names.extra_queue)
        extra_future = extra.task_send("on the extra queue")
        assert extra_future is not None
        extra.add_task_subscriber(recorder.task_or_rpc)
        assert extra_future.result(TIMEOUT) == "new:on the extra queue"
        assert recorder.take(2) == ["queued before subscribing", "on the extra queue"]
        # Still kiwipy 0.9's flags and arguments after our use, and nothing left waiting.
        for queue_name in (names.task_queue, names.extra_queue):
            assert _redeclare(names, queue_name, KIWIPY09_TASK_QUEUE_ARGS).message_count == 0

    # kiwipy 0.9 can still use the queue after us.
    worker = start_peer("worker")
    worker.wait_ready()
    with our_communicator(names) as comm:
        future = comm.task_send("after us")
        assert future is not None
        assert future.result(TIMEOUT) == "old:after us"


# -- values across the two codecs (our JSON read by kiwipy 0.9's YAML loader) ------------------

PORTABLE_VALUES = [
    0,
    -17,
    2**63 + 5,
    2.5,
    -0.125,
    1.5e-07,
    True,
    False,
    None,
    "",
    "plain",
    "yes",
    "null",
    "1e5",
    "tab\tnew\nline",
    "caf\u00e9 \u2603",
    [1, [2, [3]], {"a": None}],
    {"key with spaces": {"inner": [True, 1.0]}},
]


def test_values_survive_a_round_trip_through_kiwipy09(names: Names, start_peer: Any) -> None:
    """Each value goes ours -> kiwipy 0.9 (JSON read as YAML) -> ours (YAML) unchanged."""
    worker = start_peer("worker")
    worker.wait_ready()
    with our_communicator(names) as comm:
        futures = [comm.task_send({"echo": value}) for value in PORTABLE_VALUES]
        echoed = [unwrap(future)[0] for future in futures if future is not None]
    assert echoed == [{"echo": value} for value in PORTABLE_VALUES]


def test_values_from_kiwipy09_reach_us_intact(names: Names, start_peer: Any) -> None:
    """Each value goes kiwipy 0.9 (YAML) -> ours unchanged, and the portable ones come back."""
    recorder = Recorder()
    awkward = [1e20, 1e-05, "smile \U0001f600"]  # also checked the other way, below
    tasks = [{"echo": value} for value in [*PORTABLE_VALUES, *awkward]]
    with our_communicator(names) as comm:
        comm.add_task_subscriber(recorder.task_or_rpc)
        sender = start_peer("send-tasks", tasks=tasks)
        results = sender.events("result", len(tasks))
        sender.finish()
        received = recorder.take(len(tasks))

    assert sorted(map(ascii, received)) == sorted(map(ascii, tasks))
    by_sent = {ascii(event["sent"]): event["repr"] for event in results}
    for value in PORTABLE_VALUES:
        assert by_sent[ascii({"echo": value})] == ascii({"echo": value})


def _what_kiwipy09_received(names: Names, start_peer: Any, value: Any) -> str:
    """``ascii()`` of ``value`` as a kiwipy 0.9 worker decoded it from our task."""
    worker = start_peer("worker")
    worker.wait_ready()
    with our_communicator(names) as comm:
        assert comm.task_send(value, no_reply=True) is None
        return str(worker.next_event("task")["repr"])


def test_exponent_floats_reach_kiwipy09_as_floats(names: Names, start_peer: Any) -> None:
    value = [1e20, 1e-05, 2.5e-300]
    assert _what_kiwipy09_received(names, start_peer, value) == ascii(value)


def test_non_bmp_characters_reach_kiwipy09_intact(names: Names, start_peer: Any) -> None:
    value = "smile \U0001f600"
    assert _what_kiwipy09_received(names, start_peer, value) == ascii(value)
