"""The local broker under faults, with real processes: spawn races, kills, freezes, bad input.

Each test has its own state directory, so its own broker, stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import kiwipy.aio
from kiwipy.broker._wire import PROTOCOL_VERSION, decode_frame, encode_frame
from kiwipy.exceptions import ConnectionLost, DuplicateSubscriberIdentifier, UnroutableError
from kiwipy.transports.base import Message
from kiwipy_reliability.local import LocalBroker, brokers_serving, run_python, stop
from kiwipy_reliability.scenarios.local_spawn_race import race
from tests.conftest import stop_local_broker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "state"
    yield directory
    stop_local_broker(directory)


def url_of(directory: Path, **query: Any) -> str:
    options = {"idle_timeout": 30, **query}
    return f"local://{directory}?" + "&".join(f"{k}={v}" for k, v in options.items())


def broker_pid(directory: Path) -> int:
    return int((directory / "broker.pid").read_text())


@pytest.fixture
async def client(state: Path) -> AsyncIterator[kiwipy.aio.AsyncCommunicator]:
    communicator = await kiwipy.aio.connect(url_of(state), testing_mode=True)
    yield communicator
    await communicator.close()


def test_twenty_clients_racing_to_spawn_give_one_broker(state: Path) -> None:
    pids, errors = race(LocalBroker(state, idle_timeout=30))
    assert not errors
    assert len(pids) == 1
    assert brokers_serving(state) == [pids.pop()]


HOLDING_WORKER = """
    import asyncio, sys, kiwipy.aio
    async def main():
        comm = await kiwipy.aio.connect(sys.argv[1], task_prefetch_count=10)
        async def hold(comm, task):
            print("got", task, flush=True)
            await asyncio.sleep(3600)
        await comm.add_task_subscriber(hold)
        await asyncio.sleep(3600)
    asyncio.run(main())
"""


async def test_a_killed_workers_tasks_come_back_at_once_flagged(state: Path) -> None:
    url = url_of(state)
    sender = await kiwipy.aio.connect(url)
    for number in range(10):
        await sender.task_send(number, no_reply=True)
    worker = run_python(HOLDING_WORKER, url)
    try:
        assert worker.stdout is not None
        held = [await asyncio.to_thread(worker.stdout.readline) for _ in range(10)]
        assert all(line.startswith("got") for line in held)
        queue = sender.transport
        worker.kill()
        killed = time.perf_counter()
        got = []
        while len(got) < 10:
            delivery = await queue.get_task(sender.settings.task_queue)
            if delivery is None:
                assert time.perf_counter() - killed < 5, "the tasks did not come back"
                await asyncio.sleep(0.001)
                continue
            got.append(delivery)
        back_after = time.perf_counter() - killed
        print(f"all 10 tasks back {back_after * 1000:.1f} ms after the kill")
        assert all(delivery.message.redelivered for delivery in got)
        assert back_after < 1.0
    finally:
        stop(worker)
        await sender.close()


COUNTING_WORKER = """
    import asyncio, sys, kiwipy.aio
    async def main():
        comm = await kiwipy.aio.connect(sys.argv[1], task_prefetch_count=50)
        async def work(comm, task):
            print("done", task, flush=True)
        await comm.add_task_subscriber(work)
        print("ready", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
"""


async def test_broker_killed_three_times_during_3000_tasks_loses_nothing(state: Path) -> None:
    url = url_of(state)
    sender = await kiwipy.aio.connect(url, operation_timeout=60)
    worker = run_python(COUNTING_WORKER, url)
    assert worker.stdout is not None
    assert (await asyncio.to_thread(worker.stdout.readline)).strip() == "ready"
    done: list[int] = []

    def read_worker() -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            if line.startswith("done"):
                done.append(int(line.split()[1]))

    reader = asyncio.get_running_loop().run_in_executor(None, read_worker)
    confirmed: set[int] = set()
    recoveries = []

    async def send(number: int) -> None:
        await sender.task_send(number, no_reply=True)
        confirmed.add(number)

    try:
        for batch in range(3):
            sends = [
                asyncio.ensure_future(send(n)) for n in range(batch * 1000, batch * 1000 + 1000)
            ]
            await asyncio.sleep(0.05)
            os.kill(broker_pid(state), signal.SIGKILL)
            killed = time.perf_counter()
            await asyncio.gather(*sends)
            probe = 10_000 + batch
            await sender.task_send(probe, no_reply=True)
            confirmed.add(probe)
            recoveries.append(time.perf_counter() - killed)
        deadline = time.monotonic() + 60
        while not confirmed <= set(done) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        lost = confirmed - set(done)
        duplicated = len(done) - len(set(done))
        print(
            f"confirmed {len(confirmed)}, lost {len(lost)}, duplicated {duplicated}, "
            f"service back after {', '.join(f'{r:.3f}' for r in recoveries)} s"
        )
        assert not lost
        assert max(recoveries) < 5.0
    finally:
        worker.kill()
        await asyncio.wait_for(reader, 10)
        stop(worker)
        await sender.close()


async def test_a_frozen_broker_is_reported_never_doubled(state: Path) -> None:
    first = await kiwipy.aio.connect(url_of(state))
    pid = first.server_properties["pid"]
    await first.close()
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ConnectionLost, match=f"pid {pid}"):
            await kiwipy.aio.connect(url_of(state), connection_timeout=1.0)
        assert brokers_serving(state) == [pid]
    finally:
        os.kill(pid, signal.SIGCONT)
    again = await kiwipy.aio.connect(url_of(state))
    assert again.server_properties["pid"] == pid
    await again.close()


RPC_OWNER = """
    import asyncio, sys, kiwipy.aio
    async def main():
        comm = await kiwipy.aio.connect(sys.argv[1])
        await comm.add_rpc_subscriber(lambda comm, msg: msg, "process-42")
        print("bound", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
"""


async def test_rpc_identifiers_are_unique_across_processes(
    state: Path, client: kiwipy.aio.AsyncCommunicator
) -> None:
    owner = run_python(RPC_OWNER, url_of(state))
    assert owner.stdout is not None
    assert (await asyncio.to_thread(owner.stdout.readline)).strip() == "bound"
    with pytest.raises(DuplicateSubscriberIdentifier):
        await client.add_rpc_subscriber(lambda comm, msg: msg, "process-42")
    assert await (await client.rpc_send("process-42", "hi")) == "hi"
    stop(owner)
    killed = time.perf_counter()
    with pytest.raises(UnroutableError):
        while time.perf_counter() - killed < 5:
            await client.rpc_send("process-42", "anyone?")
            await asyncio.sleep(0.001)
    print(f"unroutable {1000 * (time.perf_counter() - killed):.1f} ms after the owner's kill")


async def test_an_ack_from_before_a_broker_restart_is_a_no_op(
    state: Path, client: kiwipy.aio.AsyncCommunicator
) -> None:
    transport = client.transport
    await transport.declare_task_queue("q")
    await transport.publish_task("q", Message(b"[1, false]", persistent=True))
    old = await transport.get_task("q")
    assert old is not None and not old.message.redelivered
    os.kill(broker_pid(state), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not old.stale and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert old.stale
    await old.ack()  # a no-op: the broker has it back
    again = None
    while again is None and time.monotonic() < deadline:
        again = await transport.get_task("q")
    assert again is not None and again.message.redelivered
    await again.ack()
    assert await transport.get_task("q") is None


def test_a_corrupt_state_file_is_refused_and_left_as_it_is(state: Path) -> None:
    state.mkdir(mode=0o700)
    garbage = b"this is not a database" * 100
    (state / "broker.sqlite3").write_bytes(garbage)
    broker = subprocess.run(
        [sys.executable, "-m", "kiwipy.broker", "--dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert broker.returncode == 2
    assert "state file" in broker.stderr
    assert (state / "broker.sqlite3").read_bytes() == garbage


async def test_a_broker_refuses_another_protocol_and_oversized_frames(
    state: Path, client: kiwipy.aio.AsyncCommunicator
) -> None:
    sock_path = str(state / "broker.sock")

    def exchange(frame: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(5)
            raw.connect(sock_path)
            raw.sendall(frame)
            length = struct.unpack(">I", raw.recv(4))[0]
            payload = b""
            while len(payload) < length:
                payload += raw.recv(length - len(payload))
            return decode_frame(payload)[0]

    answer = await asyncio.to_thread(exchange, encode_frame({"op": "hello", "version": 999}))
    assert answer["op"] == "err" and answer["type"] == "version"
    assert str(PROTOCOL_VERSION) in answer["text"]
    answer = await asyncio.to_thread(exchange, struct.pack(">I", 2**31))
    assert answer["op"] == "err" and answer["type"] == "frame"
    # The broker keeps serving its other clients.
    await client.add_rpc_subscriber(lambda comm, msg: msg * 2, "still-here")
    assert await (await client.rpc_send("still-here", 21)) == 42


SLOW_TASKS = textwrap.dedent(
    """
    import time

    def slow(task):
        time.sleep(0.3)
        return task
    """
)


async def test_a_stopped_worker_finishes_or_requeues_and_loses_nothing(
    state: Path, tmp_path: Path
) -> None:
    """kiwipy worker on local://, SIGTERM while it holds tasks: it drains; every task completes."""
    (tmp_path / "slow_tasks.py").write_text(SLOW_TASKS)
    env = {**os.environ, "KIWIPY_URL": url_of(state), "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "kiwipy.cli", "worker", "slow_tasks:slow", "--prefetch", "5"]
    sender = await kiwipy.aio.connect(url_of(state))
    futures = [await sender.task_send(number) for number in range(20)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        await asyncio.wait_for(asyncio.shield(futures[0]), 30)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0  # drained: finished what ran, requeued the rest
        second = subprocess.Popen(  # noqa: ASYNC220
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            results = await asyncio.wait_for(asyncio.gather(*futures), 60)
        finally:
            second.terminate()
            second.communicate(timeout=30)
        assert sorted(results) == list(range(20))
    finally:
        first.kill()
        first.communicate(timeout=10)
        await sender.close()


async def test_malformed_tasks_are_settled_once_and_the_worker_goes_on(
    state: Path, client: kiwipy.aio.AsyncCommunicator
) -> None:
    worker = await kiwipy.aio.connect(url_of(state))
    try:
        await worker.add_task_subscriber(lambda comm, task: task + 1)
        queue = client.settings.task_queue
        await client.transport.declare_task_queue(queue)
        for poison in (b"\xff\xfe not json", b'{"no": "task envelope"}', b"[1, 2, 3, 4]"):
            await client.transport.publish_task(
                queue, Message(poison, "application/json", persistent=True)
            )
        assert await asyncio.wait_for(await client.task_send(41), 10) == 42
        # The worker acks after its reply: the last ack may reach the broker a moment later.
        deadline = time.monotonic() + 5
        while True:
            stats = (await client.transport.queue_stats())[queue]
            if stats == {"ready": 0, "unacked": 0, "consumers": 1} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert stats == {"ready": 0, "unacked": 0, "consumers": 1}
    finally:
        await worker.close()
