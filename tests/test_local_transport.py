"""The local broker's transport: replies that nobody waits for an answer to."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kiwipy.settings import Settings
from kiwipy.transports.base import Delivery, Message
from kiwipy.transports.local import LocalTransport

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0


@pytest.fixture
async def pair(local_url: str) -> AsyncIterator[tuple[LocalTransport, LocalTransport]]:
    settings = Settings.from_url(local_url, task_queue=f"q-{uuid.uuid4().hex}")
    requester, worker = LocalTransport(settings), LocalTransport(settings)
    await requester.connect()
    await worker.connect()
    yield requester, worker
    await requester.close()
    await worker.close()


def answers_to(transport: LocalTransport) -> list[dict[str, Any]]:
    """Record the answers (``ok``/``err`` frames) that reach ``transport`` from now on."""
    answers: list[dict[str, Any]] = []
    link = transport._link
    received: Callable[..., None] = link._received

    def recorded(header: dict[str, Any], body: bytes, generation: int) -> None:
        if header.get("op") in ("ok", "err"):
            answers.append(header)
        received(header, body, generation)

    link._received = recorded  # type: ignore[method-assign]
    return answers


async def test_a_task_reply_and_its_ack_go_together_unanswered(
    pair: tuple[LocalTransport, LocalTransport],
) -> None:
    requester, worker = pair
    replies: asyncio.Queue[Message] = asyncio.Queue()
    deliveries: asyncio.Queue[Delivery] = asyncio.Queue()

    async def on_reply(message: Message) -> None:
        replies.put_nowait(message)

    async def on_task(delivery: Delivery) -> None:
        deliveries.put_nowait(delivery)

    address = await requester.open_reply_queue(on_reply)
    queue = requester._settings.task_queue
    await requester.declare_task_queue(queue)
    await worker.consume_tasks(queue, on_task, prefetch_count=10)
    await requester.publish_task(queue, Message(body=b"task", reply_to=address))
    delivery = await asyncio.wait_for(deliveries.get(), TIMEOUT)

    answers = answers_to(worker)
    await worker.reply_and_ack(delivery, address, Message(body=b"done", correlation_id="c1"))
    await worker.publish_final_reply(address, Message(body=b"rpc", correlation_id="c2"))
    bodies = [(await asyncio.wait_for(replies.get(), TIMEOUT)).body for _ in range(2)]
    assert bodies == [b"done", b"rpc"]
    assert delivery.settled
    await worker.declare_task_queue(f"{queue}-2")  # answered after anything sent before it
    assert [answer.get("id") for answer in answers] == [answers[-1]["id"]]  # the declare's only
    assert await requester.get_task(queue) is None  # acked
