"""kiwipy.Worker and kiwipy.aio.Worker: concurrency, async functions, draining, control by RPC."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kiwipy
import kiwipy.aio
import kiwipy.sync

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def comms() -> Iterator[tuple[kiwipy.sync.Communicator, kiwipy.sync.Communicator]]:
    """(worker side, client side) on one fresh in-memory broker."""
    url = f"memory://worker-{uuid.uuid4().hex[:8]}"
    with kiwipy.sync.connect(url) as worker_side, kiwipy.sync.connect(url) as client_side:
        yield worker_side, client_side


class Overlap:
    """Counts how many calls run at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def test_worker_with_concurrency_4_runs_4_tasks_at_once(comms: Any) -> None:
    worker_side, client = comms
    overlap = Overlap()
    all_in = threading.Barrier(4)

    def work(task: int) -> int:
        with overlap:
            all_in.wait(timeout=10)  # only passes when 4 tasks run at the same time
            return task * 2

    with kiwipy.Worker(worker_side, work, queue="sims", concurrency=4):
        futures = client.task_queue("sims").task_send_many(range(8))
        assert [f.result(timeout=15) for f in futures] == [n * 2 for n in range(8)]
    assert overlap.most == 4


def test_plain_task_subscriber_runs_one_task_at_a_time_despite_prefetch(comms: Any) -> None:
    # What docs/worker.md says: prefetch_count=10 holds 10 tasks but runs them one by one.
    worker_side, client = comms
    overlap = Overlap()

    def work(_comm: Any, task: int) -> int:
        with overlap:
            time.sleep(0.05)
            return task

    worker_side.task_queue("one", prefetch_count=10).add_task_subscriber(work)
    futures = client.task_queue("one").task_send_many(range(6))
    assert [f.result(timeout=15) for f in futures] == list(range(6))
    assert overlap.most == 1


def test_worker_runs_async_functions_concurrently(comms: Any) -> None:
    worker_side, client = comms
    seen: list[Any] = []

    async def work(comm: Any, task: int) -> dict[str, Any]:
        incoming = kiwipy.aio.current_incoming_task()
        seen.append((comm, incoming is not None and not incoming.lost))
        await asyncio.sleep(0.3)
        return {"task": task}

    with kiwipy.Worker(worker_side, work, queue="async", concurrency=5):
        started = time.monotonic()
        futures = client.task_queue("async").task_send_many(range(5))
        assert [f.result(timeout=15) for f in futures] == [{"task": n} for n in range(5)]
        assert time.monotonic() - started < 1.4  # five 0.3 s sleeps overlapped
    assert seen == [(worker_side, True)] * 5


def test_one_argument_async_function(comms: Any) -> None:
    worker_side, client = comms

    async def square(task: int) -> int:
        return task * task

    with kiwipy.Worker(worker_side, square, queue="sq"):
        assert client.task_queue("sq").task_send(7).result(timeout=10) == 49


def test_async_task_subscriber_of_a_blocking_communicator_sends_its_result(comms: Any) -> None:
    worker_side, client = comms

    async def subscriber(_comm: Any, task: int) -> int:
        await asyncio.sleep(0.01)
        return task + 1

    worker_side.task_queue("sub").add_task_subscriber(subscriber)
    assert client.task_queue("sub").task_send(41).result(timeout=10) == 42


def test_drain_finishes_running_requeues_held_and_answers_draining_until_gone(
    comms: Any,
) -> None:
    worker_side, client = comms
    started = threading.Event()
    release = threading.Event()

    def work(task: str) -> str:
        started.set()
        release.wait(10)
        return task.upper()

    worker = kiwipy.Worker(worker_side, work, queue="drain", prefetch=3, name="drainer")
    worker.start()
    queue = client.task_queue("drain")
    first = queue.task_send("a")
    assert first is not None
    assert started.wait(10)
    queue.task_send("b", no_reply=True)
    queue.task_send("c", no_reply=True)
    time.sleep(0.2)

    draining = threading.Thread(target=worker.drain)
    draining.start()
    deadline = time.monotonic() + 10
    while True:  # the RPC endpoint stays while the worker drains
        answer = client.rpc_send("drainer", "status").result(timeout=5)
        if answer["draining"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert answer["running"] == 1
    release.set()
    draining.join(10)
    assert first.result(timeout=10) == "A"
    status = worker.status()
    assert (status["done"], status["requeued"]) == (1, 2)
    with pytest.raises(kiwipy.UnroutableError):
        client.rpc_send("drainer", "status")
    with queue.next_task(timeout=5) as task:  # the held tasks are back in the queue
        assert task is not None
        assert task.body in ("b", "c")


def test_pause_and_play_by_rpc(comms: Any) -> None:
    worker_side, client = comms
    with kiwipy.Worker(worker_side, lambda task: task, queue="pp", name="pp-worker"):
        assert client.rpc_send("pp-worker", "pause").result(timeout=5)["paused"] is True
        future = client.task_queue("pp").task_send(1)
        time.sleep(0.3)
        assert not future.done()
        assert client.rpc_send("pp-worker", "play").result(timeout=5)["paused"] is False
        assert future.result(timeout=5) == 1


def test_events_are_broadcast(comms: Any) -> None:
    worker_side, client = comms
    heard: list[str] = []
    got = threading.Event()

    def on_event(_comm: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
        heard.append(f"{sender} {subject}")
        if subject.endswith("finished"):
            got.set()

    client.add_broadcast_subscriber(on_event)
    with kiwipy.Worker(worker_side, lambda task: 1, queue="ev", name="ev-w", events=True):
        client.task_queue("ev").task_send({"id": 9}).result(timeout=5)
        assert got.wait(5)
    assert heard == ["ev-w task.9.started", "ev-w task.9.finished"]


def test_stop_now_gives_back_the_running_task(comms: Any) -> None:
    worker_side, client = comms

    async def forever(task: Any) -> None:
        await asyncio.sleep(60)

    worker = kiwipy.Worker(worker_side, forever, queue="now")
    worker.start()
    client.task_queue("now").task_send("x", no_reply=True)
    deadline = time.monotonic() + 10
    while worker.status()["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.stop_now()
    assert worker.status()["requeued"] == 1
    with client.task_queue("now").next_task(timeout=5) as task:
        assert task is not None and task.body == "x"


async def test_asyncio_worker() -> None:
    url = f"memory://aio-worker-{uuid.uuid4().hex[:8]}"
    async with (
        await kiwipy.aio.connect(url) as worker_side,
        await kiwipy.aio.connect(url) as client,
    ):
        all_in = asyncio.Barrier(3) if hasattr(asyncio, "Barrier") else None

        async def work(task: int) -> int:
            if all_in is not None:
                await asyncio.wait_for(all_in.wait(), 10)
            return -task

        async with kiwipy.aio.Worker(worker_side, work, queue="aq", concurrency=3):
            queue = await client.task_queue("aq")
            futures = await queue.task_send_many(range(3))
            assert [await f for f in futures if f is not None] == [0, -1, -2]
