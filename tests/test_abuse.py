"""Abuse: oversized messages, forged and replayed replies, a flood of 100,000 forged replies."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import pytest

import kiwipy.aio
from kiwipy import messages
from kiwipy.aio import _replies as replies
from kiwipy.aio._communicator import AsyncCommunicator
from kiwipy.exceptions import MessageTooLarge

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(180)]

CAP = 4096
FLOOD = 100_000
#: RSS growth allowed across the flood (RELIABILITY.md M5 asks for <= 50 MiB).
RSS_BOUND_MIB = 50


def echo(_communicator: Any, message: Any) -> Any:
    return message


@pytest.fixture
async def communicator(amqp_url: str, unique_name: str) -> AsyncIterator[AsyncCommunicator]:
    comm = await kiwipy.aio.connect(
        amqp_url,
        testing_mode=True,
        max_message_bytes=CAP,
        message_exchange=f"{unique_name}.messages",
        task_exchange=f"{unique_name}.tasks",
        task_queue=f"{unique_name}.queue",
    )
    try:
        yield comm
    finally:
        await comm.close()


async def test_oversized_messages_are_refused_before_sending(
    communicator: AsyncCommunicator, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = communicator.transport
    published: list[str] = []
    for name in ("publish_task", "publish_rpc", "publish_broadcast", "publish_reply"):
        original = getattr(transport, name)

        async def counted(*args: Any, _original: Any = original, _name: str = name) -> Any:
            published.append(_name)
            return await _original(*args)

        monkeypatch.setattr(transport, name, counted)
    await communicator.add_rpc_subscriber(echo, "echo")
    big = "x" * (CAP + 1)
    sends = {
        "task": lambda: communicator.task_send(big),
        "task, no reply": lambda: communicator.task_send(big, no_reply=True),
        "rpc": lambda: communicator.rpc_send("echo", big),
        "broadcast": lambda: communicator.broadcast_send(big),
        "broadcast subject": lambda: communicator.broadcast_send(None, subject=big),
    }
    for kind, send in sends.items():
        with pytest.raises(MessageTooLarge, match="over the cap"):
            await send()
        assert published == [], f"{kind}: published {published}"
    assert communicator.transport.is_connected
    # Just under the cap still goes, and an RPC whose *answer* is too big fails its caller.
    assert await (await communicator.rpc_send("echo", "y" * (CAP // 2))) == "y" * (CAP // 2)
    assert "publish_rpc" in published
    assert communicator._core.replies.outstanding == 0


async def publisher(amqp_url: str) -> tuple[Any, Any]:
    connection = await aiormq.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=False)
    return connection, channel


def forged(correlation_id: str, value: Any = "forged") -> tuple[bytes, Any]:
    body = json.dumps(messages.result_reply(value)).encode()
    properties = aiormq.spec.Basic.Properties(
        content_type="application/json", correlation_id=correlation_id
    )
    return body, properties


async def test_unsolicited_and_replayed_replies_never_resolve_and_are_counted(
    communicator: AsyncCommunicator,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger="kiwipy.aio._replies")
    monkeypatch.setattr(replies, "UNMATCHED_LOG_INTERVAL", 3600.0)
    futures = communicator._core.replies
    await communicator.add_rpc_subscriber(echo, "echo")
    done_ids: list[str] = []
    original_register = futures.register

    def remember(timeout: float | None) -> Any:
        correlation_id, future = original_register(timeout)
        done_ids.append(correlation_id)
        return correlation_id, future

    monkeypatch.setattr(futures, "register", remember)
    assert await (await communicator.rpc_send("echo", "real")) == "real"
    reply_to = await futures.address()

    release = asyncio.Event()

    async def slow(_communicator: Any, message: Any) -> Any:
        await release.wait()
        return message

    await communicator.add_rpc_subscriber(slow, "slow")
    waiting = await communicator.rpc_send("slow", "the answer")
    connection, channel = await publisher(amqp_url)
    try:
        forgeries = [done_ids[0]] * 1000 + [uuid.uuid4().hex for _ in range(1000)] + [""]
        for correlation_id in forgeries:
            body, properties = forged(correlation_id)
            await channel.basic_publish(body, routing_key=reply_to, properties=properties)
        deadline = time.monotonic() + 20
        while futures.unmatched < len(forgeries) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    assert futures.unmatched == len(forgeries)
    assert not waiting.done()  # nothing forged reached the waiting future
    release.set()
    assert await waiting == "the answer"
    warned = [r for r in caplog.records if "matched no waiting request" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]  # rate limited


async def test_the_warning_carries_the_count_since_the_last_one(
    communicator: AsyncCommunicator,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kiwipy.transports.base import Message

    caplog.set_level(logging.WARNING, logger="kiwipy.aio._replies")
    monkeypatch.setattr(replies, "UNMATCHED_LOG_INTERVAL", 0.2)
    futures = communicator._core.replies
    stray = Message(b'{"result": 1}', "application/json", "nobody", None)
    for _ in range(5):
        await futures._on_reply(stray)
    await asyncio.sleep(0.25)
    for _ in range(3):
        await futures._on_reply(stray)
    counts = [r.args[0] for r in caplog.records if isinstance(r.args, tuple)]
    assert counts == [1, 5]  # the first at once; then the 4 held back and the one that spoke
    assert futures.unmatched == 8


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_flood_of_forged_replies_leaves_rpcs_working_and_memory_bounded(
    communicator: AsyncCommunicator, amqp_url: str
) -> None:
    await communicator.add_rpc_subscriber(echo, "echo")
    futures = communicator._core.replies
    reply_to = await futures.address()

    async def rpc_round(count: int) -> list[float]:
        latencies = []
        for number in range(count):
            began = time.monotonic()
            assert await (await communicator.rpc_send("echo", number, deadline=30)) == number
            latencies.append(time.monotonic() - began)
        return latencies

    await rpc_round(20)  # warm up
    baseline = sorted(await rpc_round(50))
    before = rss_mib()

    async def flood() -> None:
        connection, channel = await publisher(amqp_url)
        try:
            body, _ = forged("x")
            for number in range(FLOOD):
                properties = aiormq.spec.Basic.Properties(
                    content_type="application/json", correlation_id=f"forged-{number}"
                )
                await channel.basic_publish(body, routing_key=reply_to, properties=properties)
        finally:
            await connection.close()

    flooding = asyncio.create_task(flood())
    during: list[float] = []
    while not flooding.done():
        during += await rpc_round(10)
    await flooding
    deadline = time.monotonic() + 60
    while futures.unmatched < FLOOD and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    after = rss_mib()

    assert futures.unmatched == FLOOD
    assert futures.outstanding == 0
    assert during, "no RPC ran during the flood"
    assert await (await communicator.rpc_send("echo", "after")) == "after"
    growth = after - before
    assert growth < RSS_BOUND_MIB, f"RSS grew {growth:.1f} MiB over the flood"
    p50 = sorted(during)[len(during) // 2]
    print(
        f"flood of {FLOOD}: {len(during)} RPCs during it, p50 {p50:.4f} s (baseline "
        f"{baseline[len(baseline) // 2]:.4f} s), RSS {before:.1f} -> {after:.1f} MiB"
    )
