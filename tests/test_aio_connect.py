"""``kiwipy.aio.connect()`` is both awaitable and an async context manager."""

from __future__ import annotations

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
