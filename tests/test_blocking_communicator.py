"""What only the blocking facade promises: threads, timeouts, and matching the asyncio API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kiwipy.exceptions
import kiwipy.sync
from kiwipy.aio import AsyncCommunicator, AsyncTaskQueue
from kiwipy.exceptions import DeadlineExceeded, InvalidStateError
from kiwipy.sync import Communicator, TaskQueue
from kiwipy.sync._portal import Portal

# -- the two facades match --------------------------------------------------------------------

#: Facade-specific members that are not messaging operations.
_ONLY_ASYNC = {"connect", "transport", "default_task_queue"}
_ONLY_SYNC = {"loop", "asyncio_communicator"}


def _operations(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _parameters(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [
        (p.name, p.kind, p.default)
        for p in signature.parameters.values()
        if p.name not in ("self", "timeout")
    ]


@pytest.mark.parametrize(
    ("async_cls", "sync_cls"), [(AsyncCommunicator, Communicator), (AsyncTaskQueue, TaskQueue)]
)
def test_async_and_blocking_facades_offer_the_same_operations(
    async_cls: type, sync_cls: type
) -> None:
    async_ops = {k: v for k, v in _operations(async_cls).items() if k not in _ONLY_ASYNC}
    sync_ops = {k: v for k, v in _operations(sync_cls).items() if k not in _ONLY_SYNC}
    shared = {"task_send", "task_send_many", "add_task_subscriber", "remove_task_subscriber"}
    assert shared <= set(async_ops)
    assert set(async_ops) - {"close", "fetch"} <= set(sync_ops) | {"fetch"}
    for name, signature in async_ops.items():
        if name in sync_ops:
            assert _parameters(sync_ops[name]) == _parameters(signature), name


def test_every_blocking_operation_takes_a_timeout() -> None:
    for name, signature in _operations(Communicator).items():
        blocking = name.startswith(("add_", "remove_")) or name.endswith("_send")
        # Callbacks and listeners are local bookkeeping: nothing to wait for.
        if (blocking or name == "task_queue") and not name.endswith(("_callback", "_listener")):
            assert "timeout" in signature.parameters, name


# -- threads ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    amqp_url: str = request.getfixturevalue("amqp_url")
    return amqp_url


@pytest.fixture
def comm(url: str, unique_name: str) -> Iterator[Communicator]:
    communicator = kiwipy.sync.connect(url, **_names(unique_name))
    yield communicator
    communicator.close()


def _names(prefix: str) -> dict[str, Any]:
    return {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.tasks",
        "testing_mode": True,
    }


def test_blocking_call_from_the_loop_thread_fails_at_once(comm: Communicator) -> None:
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def on_loop() -> None:
        try:
            comm.broadcast_send("from the loop")
        except BaseException as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    comm.loop().call_soon_threadsafe(on_loop)
    error = outcome.result(timeout=5)
    assert isinstance(error, InvalidStateError)
    assert "event loop thread" in str(error)


def test_subscribers_run_off_the_loop_and_may_call_the_communicator(comm: Communicator) -> None:
    threads: list[str] = []

    def double(communicator: Communicator, task: int) -> int:
        threads.append(threading.current_thread().name)
        return task * 2

    def ask_a_worker(communicator: Communicator, msg: int) -> int:
        threads.append(threading.current_thread().name)
        future = communicator.task_send(msg)
        assert future is not None
        result: int = future.result(timeout=10)
        communicator.broadcast_send(result, subject="answered")
        return result

    comm.add_task_subscriber(double)
    comm.add_rpc_subscriber(ask_a_worker, "asker")
    assert comm.rpc_send("asker", 21).result(timeout=10) == 42
    assert len(threads) == 2
    assert all(name.startswith("kiwipy-callbacks") for name in threads)


def test_async_subscribers_run_on_the_loop_without_a_callback_thread(comm: Communicator) -> None:
    threads: list[str] = []

    async def double(communicator: Communicator, task: int) -> int:
        threads.append(threading.current_thread().name)
        await asyncio.sleep(0)
        return task * 2

    async def echo(communicator: Communicator, msg: int) -> int:
        threads.append(threading.current_thread().name)
        return msg

    comm.add_task_subscriber(double)
    comm.add_rpc_subscriber(echo, "echo")
    future = comm.task_send(21)
    assert future is not None
    assert future.result(timeout=10) == 42
    assert comm.rpc_send("echo", 7).result(timeout=10) == 7
    assert len(threads) == 2
    assert all(name.startswith("kiwipy-loop") for name in threads), threads


def test_task_send_many_returns_once_every_task_is_confirmed(comm: Communicator) -> None:
    comm.add_task_subscriber(lambda communicator, task: task + 1)
    futures = comm.task_send_many(range(50))
    assert [f.result(timeout=10) for f in futures if f is not None] == list(range(1, 51))
    assert comm.task_send_many(range(3), no_reply=True) == [None, None, None]


def test_task_call_and_rpc_call_return_the_result(comm: Communicator, unique_name: str) -> None:
    """The blocking twins of ``kiwipy.aio``'s one-await forms (issue 14)."""

    def work(_communicator: Any, task: int) -> int:
        if task < 0:
            raise ValueError(f"negative: {task}")
        return task * 2

    comm.add_task_subscriber(work)
    assert comm.task_call(21) == 42
    queue = comm.task_queue(f"{unique_name}.other")
    queue.add_task_subscriber(work)
    assert queue.task_call(5) == 10
    with pytest.raises(kiwipy.RemoteException, match="negative: -1"):
        comm.task_call(-1)
    later: concurrent.futures.Future[str] = concurrent.futures.Future()
    comm.add_rpc_subscriber(lambda _comm, msg: later, f"{unique_name}.later")
    threading.Timer(0.2, later.set_result, ("answered later",)).start()
    assert comm.rpc_call(f"{unique_name}.later", None) == "answered later"  # through the nest
    with pytest.raises(kiwipy.UnroutableError):
        comm.rpc_call(f"{unique_name}.nobody", 1)
    never: concurrent.futures.Future[str] = concurrent.futures.Future()
    comm.add_rpc_subscriber(lambda _comm, msg: never, f"{unique_name}.never")
    with pytest.raises(kiwipy.DeadlineExceeded):
        comm.rpc_call(f"{unique_name}.never", 1, deadline=0.3)


def test_close_is_idempotent_and_leaves_no_thread(
    url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = set(threading.enumerate())
    with caplog.at_level(logging.WARNING):
        communicator = kiwipy.sync.connect(url, **_names(unique_name))
        communicator.add_rpc_subscriber(lambda c, msg: msg, "echo")
        communicator.add_broadcast_subscriber(lambda c, *args: None)
        assert communicator.rpc_send("echo", 1).result(timeout=10) == 1
        communicator.close()
        communicator.close()
    assert communicator.is_closed()
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == []
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]


# -- the portal -------------------------------------------------------------------------------


def test_a_timed_out_call_is_cancelled_not_left_running() -> None:
    portal = Portal("test-portal")
    finished = threading.Event()

    async def slow() -> None:
        await asyncio.sleep(0.5)
        finished.set()

    try:
        with pytest.raises(DeadlineExceeded):
            portal.call(slow, 0.05, "slow")
        time.sleep(0.8)
        assert not finished.is_set()
    finally:
        portal.stop()


def test_a_late_outcome_does_not_wake_the_next_call_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timed-out call's outcome still reaches the caller's pipe later; the next call on the
    same thread must wait for its own outcome, not return on that byte."""
    monkeypatch.setattr("kiwipy.sync._portal._CANCEL_GRACE_S", 0.1)
    portal = Portal("test-portal")
    release = threading.Event()

    async def stuck() -> str:
        try:
            await asyncio.sleep(10)
        finally:  # unwinding the cancellation takes a while and ends with a wake-up
            await asyncio.to_thread(release.wait, 5)
        return "stuck"  # pragma: no cover

    async def slow(value: str) -> str:
        await asyncio.sleep(0.2)
        return value

    try:
        with pytest.raises(DeadlineExceeded):
            portal.call(stuck, 0.05, "stuck")
    except BaseException:
        release.set()
        portal.stop()
        raise
    try:
        release.set()
        started = time.monotonic()
        assert portal.call(lambda: slow("mine"), 5, "slow") == "mine"
        assert time.monotonic() - started >= 0.15
    finally:
        portal.stop()


def test_portal_errors_and_cancellation_reach_the_caller() -> None:
    portal = Portal("test-portal")

    async def fail() -> None:
        raise ValueError("from the loop")

    async def cancelled() -> None:
        raise asyncio.CancelledError()

    try:
        with pytest.raises(ValueError, match="from the loop"):
            portal.call(fail, 5, "fail")
        with pytest.raises(concurrent.futures.CancelledError):
            portal.call(cancelled, 5, "cancelled")
        assert portal.call(lambda: asyncio.sleep(0, "ok"), 5, "ok") == "ok"
    finally:
        portal.stop()


def test_blocking_futures_wait_time_out_and_cancel_their_source() -> None:
    from kiwipy.sync._futures import to_concurrent

    portal = Portal("test-portal")

    async def make() -> tuple[asyncio.Future[Any], concurrent.futures.Future[Any]]:
        source: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        return source, to_concurrent(source, portal)

    try:
        source, target = portal.call(make, 5, "make")
        assert isinstance(target, concurrent.futures.Future)
        with pytest.raises(concurrent.futures.TimeoutError):
            target.result(timeout=0.05)
        portal.call_soon(lambda: source.set_result(42) if not source.done() else None)
        assert target.result(timeout=5) == 42
        assert target.exception(timeout=0) is None

        source, target = portal.call(make, 5, "make")
        seen: list[str] = []

        def wait() -> None:
            try:
                target.result(5)
            except concurrent.futures.CancelledError:
                seen.append("cancelled")

        waiters = [threading.Thread(target=wait) for _ in range(3)]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.05)  # let them sleep on their pipes (the test holds either way)
        assert target.cancel()
        for waiter in waiters:
            waiter.join(5)
        assert seen == ["cancelled"] * 3
        deadline = time.monotonic() + 5
        while not source.cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.cancelled()
    finally:
        portal.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_does_not_share_its_parents_waker() -> None:
    """The parent's loop wakes its callers through their pipes; a child sharing one would take
    the parent's wake-ups (or give it its own)."""
    from kiwipy.sync import _portal

    parent = _portal.thread_waker()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write, b"1" if _portal.thread_waker() is not parent else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert _portal.thread_waker() is parent
    os.close(read)
    os.close(write)


# -- long callbacks and heartbeats ------------------------------------------------------------


@pytest.mark.amqp
def test_a_sleeping_subscriber_does_not_stop_heartbeats_or_other_subscribers(
    amqp_url: str, unique_name: str
) -> None:
    heartbeat = 2
    with kiwipy.sync.connect(amqp_url, heartbeat=heartbeat, **_names(unique_name)) as comm:
        comm.add_task_subscriber(lambda c, task: time.sleep(task) or "slept")
        comm.add_rpc_subscriber(lambda c, msg: f"pong {msg}", "pinger")
        slow = comm.task_send(4 * heartbeat)
        assert slow is not None
        answers = []
        deadline = time.monotonic() + 3 * heartbeat
        while time.monotonic() < deadline:
            answers.append(comm.rpc_send("pinger", len(answers)).result(timeout=5))
            time.sleep(0.2)
        assert answers[:2] == ["pong 0", "pong 1"]
        assert slow.result(timeout=4 * heartbeat) == "slept"
        assert comm.rpc_send("pinger", "after").result(timeout=5) == "pong after"


@pytest.mark.amqp
def test_kiwipy09_style_except_clauses_catch_a_lost_connection(
    amqp_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    aio_pika_exceptions = pytest.importorskip("aio_pika.exceptions")
    import kiwipy.transports.amqp._link as amqp_module

    options = {**_names(unique_name), "operation_timeout": 0.5}
    with kiwipy.sync.connect(amqp_url, **options) as comm:
        assert comm.broadcast_send("before") is True

        async def broker_down(url: str) -> None:
            raise ConnectionRefusedError("the broker is down")

        monkeypatch.setattr(amqp_module, "_dial", broker_down)
        transport: Any = comm.asyncio_communicator.transport
        asyncio.run_coroutine_threadsafe(transport._connection.close(), comm.loop()).result(5)
        # plumpy wraps broadcast_send in exactly this except clause
        with pytest.raises(
            (aio_pika_exceptions.ConnectionClosed, aio_pika_exceptions.ChannelInvalidStateError)
        ) as excinfo:
            comm.broadcast_send("during the outage")
        assert isinstance(excinfo.value, kiwipy.exceptions.ConnectionLost)
