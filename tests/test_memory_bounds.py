"""Memory that must not grow with the number of messages handled (long-lived workers)."""

from __future__ import annotations

import asyncio
import gc

import pytest

import kiwipy.aio
from kiwipy.aio._incoming import IncomingTask

pytestmark = pytest.mark.amqp

TASKS = 300


def _live_incoming_tasks() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, IncomingTask))


async def test_finished_tasks_leave_nothing_behind_in_the_worker(
    amqp_url: str, unique_name: str
) -> None:
    # A consumer timeout arms a timer per task; a finished task must not be kept by it.
    options = {
        "message_exchange": f"{unique_name}.messages",
        "task_exchange": f"{unique_name}.tasks",
        "task_queue": f"{unique_name}.queue",
        "testing_mode": True,
        "consumer_timeout": 600,
    }
    worker = await kiwipy.aio.connect(amqp_url, **options)
    sender = await kiwipy.aio.connect(amqp_url, **options)
    try:
        assert worker._core.transport.consumer_timeout is not None
        await worker.add_task_subscriber(lambda _comm, task: task * 2)
        before = _live_incoming_tasks()
        futures = await asyncio.gather(*(sender.task_send(i) for i in range(TASKS)))
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert results == [i * 2 for i in range(TASKS)]
        await asyncio.sleep(0.2)  # the last acks
        assert _live_incoming_tasks() - before < 5
    finally:
        await sender.close()
        await worker.close()
