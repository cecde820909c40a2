"""kiwipy.observe: the core reports what it sends and receives to listeners, on every transport."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

import pytest

import kiwipy
from kiwipy import observe
from kiwipy.aio import AsyncCommunicator
from kiwipy.observe import Incoming, Listener, Outgoing


class Recorder(Listener):
    """Records (event, kind, destination[, error type]) for every event."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def sending(self, message: Outgoing) -> None:
        message.headers["x-test"] = "hello"
        self.events.append(("sending", message.kind, message.destination))

    def confirmed(self, message: Outgoing) -> None:
        self.events.append(("confirmed", message.kind, message.destination))

    def send_failed(self, message: Outgoing, error: BaseException) -> None:
        self.events.append(("send_failed", message.kind, type(error).__name__))

    def answered(self, message: Outgoing, error: BaseException | None) -> None:
        self.events.append(("answered", message.kind, type(error).__name__ if error else None))

    def delivered(self, message: Incoming) -> None:
        self.events.append(("delivered", message.kind, message.headers.get("x-test")))

    def started(self, message: Incoming) -> None:
        self.events.append(("started", message.kind, message.destination))

    def finished(self, message: Incoming) -> None:
        self.events.append(("finished", message.kind, message.destination))

    def failed(self, message: Incoming, error: BaseException) -> None:
        self.events.append(("failed", message.kind, type(error).__name__))

    def requeued(self, message: Incoming) -> None:
        self.events.append(("requeued", message.kind, message.destination))

    def of(self, event: str) -> list[tuple[Any, ...]]:
        return [entry for entry in self.events if entry[0] == event]


@pytest.fixture
async def comm() -> Any:
    communicator = await kiwipy.aio.connect(f"memory://observe-{uuid.uuid4().hex[:8]}")
    yield communicator
    await communicator.close()


async def test_a_task_is_seen_from_sending_to_answer(comm: AsyncCommunicator) -> None:
    recorder = Recorder()
    comm.add_listener(recorder)
    await comm.add_task_subscriber(lambda _c, task: task * 2)
    future = await comm.task_send(21)
    assert await future == 42
    await asyncio.sleep(0.01)  # the answered event follows the future's own callbacks
    queue = comm.settings.task_queue
    names = [entry[0] for entry in recorder.events]
    assert sorted(recorder.events, key=str) == sorted(
        [
            ("sending", "task", queue),
            ("confirmed", "task", queue),
            ("delivered", "task", "hello"),  # the header added in sending travelled along
            ("started", "task", queue),
            ("finished", "task", queue),
            ("answered", "task", None),
        ],
        key=str,
    )
    for before, after in [("sending", "delivered"), ("started", "finished")]:
        assert names.index(before) < names.index(after)
    assert names[-1] == "answered"


async def test_failures_and_rpc_errors_are_reported(comm: AsyncCommunicator) -> None:
    recorder = Recorder()
    comm.add_listener(recorder)

    def fail(_c: Any, _msg: Any) -> Any:
        raise ValueError("no")

    await comm.add_task_subscriber(fail)
    await comm.add_rpc_subscriber(fail, "observed-rpc")
    with pytest.raises(kiwipy.RemoteException):
        await (await comm.task_send(1))
    with pytest.raises(kiwipy.RemoteException):
        await (await comm.rpc_send("observed-rpc", 1))
    with pytest.raises(kiwipy.UnroutableError):
        await comm.rpc_send("nobody-here", 1)
    await asyncio.sleep(0.01)
    failed = [("failed", "rpc", "ValueError"), ("failed", "task", "ValueError")]
    assert sorted(recorder.of("failed")) == failed
    assert ("send_failed", "rpc", "UnroutableError") in recorder.events
    assert sorted(recorder.of("answered")) == [
        ("answered", "rpc", "RemoteException"),
        ("answered", "task", "RemoteException"),
    ]


async def test_broadcasts_and_pending_rpc_answers_are_reported(comm: AsyncCommunicator) -> None:
    recorder = Recorder()
    comm.add_listener(recorder)
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await comm.add_broadcast_subscriber(lambda _c, body, *_: got.set_result(body))

    async def later(_c: Any, msg: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, future.set_result, msg)
        return future

    await comm.add_rpc_subscriber(later, "pending-rpc")
    await comm.broadcast_send({"x": 1}, subject="s")
    assert await got == {"x": 1}
    pending = await comm.rpc_send("pending-rpc", 5)
    assert await (await pending) == 5
    await asyncio.sleep(0.01)
    assert ("delivered", "broadcast", "hello") in recorder.events
    assert ("confirmed", "broadcast", None) in recorder.events
    assert ("finished", "rpc", "pending-rpc") in recorder.events
    assert ("answered", "rpc", None) in recorder.events


async def test_a_task_given_back_is_reported_requeued(comm: AsyncCommunicator) -> None:
    recorder = Recorder()
    comm.add_listener(recorder)
    queue = await comm.task_queue(f"pull-{uuid.uuid4().hex[:8]}")
    await queue.task_send(1, no_reply=True)
    async with queue.next_task() as task:
        assert task is not None
    assert recorder.of("requeued") == [("requeued", "task", queue.name)]


async def test_global_listeners_reach_existing_communicators(comm: AsyncCommunicator) -> None:
    recorder = Recorder()
    observe.add_listener(recorder)
    try:
        await comm.broadcast_send("hi")
    finally:
        observe.remove_listener(recorder)
    await comm.broadcast_send("unseen")
    assert recorder.of("sending") == [("sending", "broadcast", None)]


async def test_a_failing_listener_is_logged_and_the_message_still_goes(
    comm: AsyncCommunicator, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Listener):
        def sending(self, message: Outgoing) -> None:
            raise RuntimeError("listener bug")

    comm.add_listener(Broken())
    await comm.add_task_subscriber(lambda _c, task: task)
    assert await (await comm.task_send(3)) == 3
    assert "listener bug" in caplog.text


async def test_without_listeners_the_core_holds_no_hooks(comm: AsyncCommunicator) -> None:
    recorder = Recorder()
    comm.add_listener(recorder)
    assert comm._core.hooks is not None
    comm.remove_listener(recorder)
    assert comm._core.hooks is None


def test_the_blocking_communicator_takes_listeners() -> None:
    recorder = Recorder()
    with kiwipy.connect(f"memory://observe-{uuid.uuid4().hex[:8]}") as comm:
        comm.add_listener(recorder)
        comm.add_task_subscriber(lambda _c, task: task + 1)
        assert comm.task_send(1).result(timeout=5) == 2
        comm.remove_listener(recorder)
    assert ("finished", "task", comm.settings.task_queue) in recorder.events


def test_import_kiwipy_loads_neither_opentelemetry_nor_prometheus() -> None:
    code = (
        "import sys, kiwipy, kiwipy.aio, kiwipy.sync, kiwipy.observe, kiwipy.cli._app\n"
        "import kiwipy.cli._top, kiwipy.transports.amqp\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus'))]\n"
        "print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


class Faults(Recorder):
    def redelivered(self, message: Incoming) -> None:
        self.events.append(("redelivered", message.kind, message.destination))

    def lost(self, message: Incoming) -> None:
        self.events.append(("lost", message.kind, message.destination))

    def connection_lost(self, error: BaseException | None) -> None:
        self.events.append(("connection_lost", None, None))

    def connection_restored(self) -> None:
        self.events.append(("connection_restored", None, None))


@pytest.mark.amqp
@pytest.mark.timeout(60)
async def test_a_cut_link_reports_lost_task_reconnect_and_redelivery(
    amqp_url: str, unique_name: str
) -> None:
    from kiwipy_reliability.faults import TcpProxy

    options = {
        "message_exchange": f"{unique_name}.messages",
        "task_exchange": f"{unique_name}.tasks",
        "task_queue": f"{unique_name}.tasks",
        "testing_mode": True,
        "reconnect_max_delay": 0.5,
    }
    recorder = Faults()
    started = asyncio.Event()
    release = asyncio.Event()

    async def work(_comm: Any, task: Any) -> Any:
        started.set()
        await release.wait()
        return task

    # Given a worker whose link goes through a proxy, working on a task
    with TcpProxy("127.0.0.1", 5672) as proxy:
        worker = await kiwipy.aio.connect(proxy.url_for(amqp_url), **options)
        sender = await kiwipy.aio.connect(amqp_url, **options)
        try:
            worker.add_listener(recorder)
            await worker.add_task_subscriber(work)
            future = await sender.task_send("x")
            await asyncio.wait_for(started.wait(), 10)
            # When the link is cut
            started.clear()
            proxy.cut()
            # Then the task is lost, the link comes back, the task comes again, redelivered
            await asyncio.wait_for(started.wait(), 20)
            release.set()
            assert await asyncio.wait_for(future, 10) == "x"
        finally:
            await sender.close()
            await worker.close()
    names = [event[0] for event in recorder.events]
    assert names.count("lost") == 1
    assert names.count("redelivered") == 1
    assert "connection_lost" in names and "connection_restored" in names
    assert names.index("lost") < names.index("redelivered")
    assert names.index("connection_lost") < names.index("connection_restored")
