"""``kiwipy.aio.connect()`` is both awaitable and an async context manager."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import kiwipy.aio

pytestmark = pytest.mark.timeout(20)


def _url() -> str:
    return f"memory://aio-connect-{uuid.uuid4().hex[:8]}"


async def test_async_with_connect_gives_a_connected_communicator_and_closes_it() -> None:
    async with kiwipy.aio.connect(_url(), testing_mode=True) as comm:
        assert isinstance(comm, kiwipy.aio.AsyncCommunicator)
        assert not comm.is_closed()

        async def double(_comm: object, task: int) -> int:
            return task * 2

        await comm.add_task_subscriber(double)
        future = await comm.task_send(21)
        assert await future == 42
    assert comm.is_closed()


async def test_async_with_connect_closes_on_error() -> None:
    with pytest.raises(RuntimeError, match="inside"):
        async with kiwipy.aio.connect(_url()) as comm:
            raise RuntimeError("inside")
    assert comm.is_closed()


async def test_awaiting_connect_still_gives_the_communicator() -> None:
    comm = await kiwipy.aio.connect(_url())
    try:
        assert isinstance(comm, kiwipy.aio.AsyncCommunicator)
        assert not comm.is_closed()
    finally:
        await comm.close()
    # The old spelling with a second await keeps working too.
    async with await kiwipy.aio.connect(_url()) as comm2:
        assert not comm2.is_closed()
    assert comm2.is_closed()


async def test_a_bad_url_fails_when_awaited_or_entered() -> None:
    connecting = kiwipy.aio.connect("amqp:user:pw@host/")  # nothing happens yet
    with pytest.raises(ValueError, match="'//' missing"):
        await connecting
    with pytest.raises(ValueError, match="'//' missing"):
        async with kiwipy.aio.connect("amqp:user:pw@host/"):
            pass


# -- one await where one suffices: task_call and rpc_call (issue 14) ---------------------------


@pytest.fixture(params=["memory", "local"])
def call_url(request: pytest.FixtureRequest) -> str:
    if request.param == "local":
        return str(request.getfixturevalue("local_url"))
    return _url()


async def test_task_call_returns_the_result_and_raises_the_workers_error(call_url: str) -> None:
    prefix = f"call-{uuid.uuid4().hex[:8]}"
    names = {"task_queue": f"{prefix}.tasks", "message_exchange": f"{prefix}.messages"}
    async with kiwipy.aio.connect(call_url, testing_mode=True, **names) as comm:

        def work(_comm: object, task: int) -> int:
            if task < 0:
                raise ValueError(f"negative: {task}")
            return task * 2

        await comm.add_task_subscriber(work)
        assert await comm.task_call(21) == 42
        queue = await comm.task_queue(f"{prefix}.other")
        await queue.add_task_subscriber(work)
        assert await queue.task_call(5) == 10
        with pytest.raises(kiwipy.RemoteException, match="negative: -1"):
            await comm.task_call(-1)


async def test_rpc_call_returns_the_answer_through_nested_futures(call_url: str) -> None:
    prefix = f"call-{uuid.uuid4().hex[:8]}"
    async with kiwipy.aio.connect(
        call_url, testing_mode=True, message_exchange=f"{prefix}.messages"
    ) as comm:
        later: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await comm.add_rpc_subscriber(lambda _comm, msg: f"status of {msg}", f"{prefix}.now")
        await comm.add_rpc_subscriber(lambda _comm, msg: later, f"{prefix}.later")
        assert await comm.rpc_call(f"{prefix}.now", 42) == "status of 42"
        call = asyncio.ensure_future(comm.rpc_call(f"{prefix}.later", None))
        await asyncio.sleep(0.1)
        assert not call.done()  # the answer is a future still pending
        later.set_result("done at last")
        assert await asyncio.wait_for(call, 10) == "done at last"
        with pytest.raises(kiwipy.UnroutableError):
            await comm.rpc_call(f"{prefix}.nobody", 1)
        never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await comm.add_rpc_subscriber(lambda _comm, msg: never, f"{prefix}.never")
        with pytest.raises(kiwipy.DeadlineExceeded):
            await comm.rpc_call(f"{prefix}.never", 1, deadline=0.3)


async def test_a_tasks_deadline_ends_the_wait_but_the_task_still_runs(call_url: str) -> None:
    """What docs/guarantees.md says ``deadline=`` does to a task already queued."""
    prefix = f"call-{uuid.uuid4().hex[:8]}"
    names = {"task_queue": f"{prefix}.tasks", "message_exchange": f"{prefix}.messages"}
    async with kiwipy.aio.connect(call_url, testing_mode=True, **names) as comm:
        with pytest.raises(kiwipy.DeadlineExceeded):
            await comm.task_call("late", deadline=0.2)  # no worker yet
        ran = asyncio.Event()
        await comm.add_task_subscriber(lambda _comm, task: ran.set())
        await asyncio.wait_for(ran.wait(), 10)
