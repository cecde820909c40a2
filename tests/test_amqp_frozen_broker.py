"""A frozen broker must not hang kiwipy: deadlines on channel open, declare and consume, and a
connection dropped for missed heartbeats surfacing as ``ConnectionLost`` (issue 15 item 2).

Two kinds of freeze are played here:

* the whole connection stalls (a ``TcpProxy`` that stops forwarding: a SIGSTOPped node, a
  partition): nothing answers, not even a channel open, so kiwipy drops the connection and
  redials (on the next failover address) without waiting for the heartbeats;
* one answer never comes while the connection lives (an AMQP-aware proxy below swallows the
  broker's ``queue.declare-ok`` or ``basic.consume-ok``: a declare blocked by a frozen member
  of a cluster): ``DeadlineExceeded``, the connection is kept, and a consumer restore tries
  again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import kiwipy.aio
from kiwipy.exceptions import ConnectionLost, DeadlineExceeded
from kiwipy.settings import Settings
from kiwipy.transports.amqp import AmqpTransport
from kiwipy.transports.base import Message
from kiwipy_reliability.faults.proxy import TcpProxy

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(90)]

QUEUE_DECLARE_OK = (50, 11)
BASIC_CONSUME_OK = (60, 21)
_FRAME_END = b"\xce"


class SwallowingProxy:
    """Forwards AMQP between client and broker, but drops the next ``count`` broker frames
    of a method, so that the client waits for an answer that never comes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.swallow: dict[tuple[int, int], int] = {}
        self.swallowed: dict[tuple[int, int], int] = {}
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def cut(self) -> None:
        """Reset every proxied connection."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accepted(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, broker_w}
        for coro in (self._upstream(client_r, broker_w), self._downstream(broker_r, client_w)):
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
        writer.transport.abort()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                header = await reader.readexactly(7)
                kind, _channel, size = struct.unpack(">BHI", header)
                payload = await reader.readexactly(size)
                end = await reader.readexactly(1)
                assert end == _FRAME_END
                if kind == 1 and self._drop(struct.unpack(">HH", payload[:4])):
                    continue
                writer.write(header + payload + end)
        writer.transport.abort()

    def _drop(self, method: tuple[int, int]) -> bool:
        left = self.swallow.get(method, 0)
        if left <= 0:
            return False
        self.swallow[method] = left - 1
        self.swallowed[method] = self.swallowed.get(method, 0) + 1
        return True


@pytest.fixture
async def swallowing(amqp_url: str) -> AsyncIterator[SwallowingProxy]:
    proxy = SwallowingProxy(5672)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def bounded(awaitable: Any, limit: float) -> Any:
    """Await with an outer limit: a hang fails the test instead of blocking it."""
    return await asyncio.wait_for(awaitable, limit)


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async def wait() -> None:
        while not condition():  # noqa: ASYNC110 -- polls a property, no event to wait on
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


# -- the whole connection frozen ---------------------------------------------------------------


async def test_frozen_broker_declare_fails_within_deadline_then_fails_over(
    amqp_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kiwipy")
    with TcpProxy("127.0.0.1", 5672) as frozen:
        # Heartbeats would notice only after minutes: the deadline must do it.
        url = f"{frozen.url_for(amqp_url)};amqp://127.0.0.1:5672"
        settings = Settings.from_url(
            url,
            heartbeat=60,
            declare_timeout=1.0,
            connection_timeout=2.0,
            reconnect_max_delay=0.3,
            testing_mode=True,
            task_exchange=f"{unique_name}.tasks",
        )
        transport = AmqpTransport(settings)
        await transport.connect()
        try:
            assert transport.address.endswith(f":{frozen.port}/")
            await transport.declare_task_queue(f"{unique_name}.warm")  # channels open
            frozen.stall()
            started = time.monotonic()
            with pytest.raises(ConnectionLost) as caught:
                await bounded(transport.declare_task_queue(f"{unique_name}.q"), 20)
            waited = time.monotonic() - started
            assert "no answer" in str(caught.value)
            # The link drops the frozen connection and goes on with the next address.
            await until(lambda: transport.is_connected and transport.address.endswith(":5672/"))
            await bounded(transport.declare_task_queue(f"{unique_name}.q"), 10)
            assert await transport.queue_exists(f"{unique_name}.q")
            messages = [r.getMessage() for r in caplog.records]
            assert any("Dropping the connection" in m for m in messages)
        finally:
            frozen.resume()
            await transport.close()
    print(f"frozen broker: declare failed after {waited:.2f}s (declare_timeout 1.0s)")


async def test_frozen_broker_consume_does_not_hang(amqp_url: str, unique_name: str) -> None:
    with TcpProxy("127.0.0.1", 5672) as frozen:
        settings = Settings.from_url(
            frozen.url_for(amqp_url),
            heartbeat=60,
            declare_timeout=1.0,
            connection_timeout=1.0,
            reconnect_max_delay=0.3,
            testing_mode=True,
            task_exchange=f"{unique_name}.tasks",
        )
        transport = AmqpTransport(settings)
        await transport.connect()
        try:

            async def handler(delivery: Any) -> None:
                await delivery.ack()

            await transport.declare_task_queue(f"{unique_name}.q")  # channels open, queue known
            frozen.stall()
            # The consumer's channel open gets no answer.
            with pytest.raises(ConnectionLost) as caught:
                await bounded(
                    transport.consume_tasks(f"{unique_name}.q", handler, prefetch_count=1), 20
                )
            assert "no answer" in str(caught.value)
            await until(lambda: not transport.is_connected)  # dropped, being redialled
            frozen.resume()
            await until(lambda: transport.is_connected)
            subscription = await bounded(
                transport.consume_tasks(f"{unique_name}.q", handler, prefetch_count=1), 10
            )
            await subscription.cancel()
        finally:
            frozen.resume()
            await transport.close()


# -- one answer missing: a frozen cluster member -----------------------------------------------


async def test_declare_without_answer_is_deadline_exceeded_and_the_connection_stays(
    swallowing: SwallowingProxy, amqp_url: str, unique_name: str
) -> None:
    settings = Settings.from_url(
        swallowing.url(),
        declare_timeout=1.0,
        testing_mode=True,
        task_exchange=f"{unique_name}.tasks",
    )
    transport = AmqpTransport(settings)
    await transport.connect()
    try:
        swallowing.swallow[QUEUE_DECLARE_OK] = 1
        with pytest.raises(DeadlineExceeded) as caught:
            await bounded(transport.declare_task_queue(f"{unique_name}.q"), 15)
        assert "frozen or partitioned cluster member" in str(caught.value)
        assert isinstance(caught.value, TimeoutError)
        assert swallowing.swallowed[QUEUE_DECLARE_OK] == 1
        assert transport.is_connected  # the connection answered the probe: kept
        # The next try works, on a new control channel (the old one may get a late answer).
        await bounded(transport.declare_task_queue(f"{unique_name}.q"), 10)
        assert await transport.queue_exists(f"{unique_name}.q")
    finally:
        await transport.close()


async def test_consumer_restore_retries_after_a_deadline(
    swallowing: SwallowingProxy, amqp_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kiwipy")
    queue = f"{unique_name}.tasks"
    communicator = await kiwipy.aio.connect(
        swallowing.url(),
        declare_timeout=1.0,
        reconnect_max_delay=0.3,
        testing_mode=True,
        task_exchange=f"{unique_name}.tasks",
        message_exchange=f"{unique_name}.messages",
        task_queue=queue,
    )
    try:
        await communicator.add_task_subscriber(lambda _c, task: task + 1)
        assert await bounded(await communicator.task_send(1), 10) == 2
        # After the reconnect, the broker "forgets" to answer the consumer's first restore.
        swallowing.swallow[BASIC_CONSUME_OK] = 1
        swallowing.cut()
        transport: Any = communicator.transport
        await until(lambda: not transport.is_connected)
        await until(lambda: transport.is_connected)

        def said(text: str) -> bool:
            return any(text in record.getMessage() for record in caplog.records)

        # The first restore misses its deadline, the next one works.
        await until(lambda: said("trying again") and said(f"task consumer of '{queue}' restored"))
        assert swallowing.swallowed[BASIC_CONSUME_OK] == 1
        assert await bounded(await communicator.task_send(2), 15) == 3
    finally:
        await communicator.close()


# -- aiormq's CancelledError from a publish ----------------------------------------------------


async def test_publish_on_a_connection_dropped_for_missed_heartbeats_is_connection_lost(
    amqp_url: str, unique_name: str
) -> None:
    """aiormq fails a publish waiting for its confirm with ``CancelledError`` when it drops the
    connection for missed heartbeats; the caller's task must not look cancelled."""
    with TcpProxy("127.0.0.1", 5672) as frozen:
        settings = Settings.from_url(
            frozen.url_for(amqp_url),
            heartbeat=1,  # aiormq gives up after about 6 s of silence
            message_exchange=f"{unique_name}.messages",
            testing_mode=True,
            reconnect_max_delay=0.3,
        )
        transport = AmqpTransport(settings)
        await transport.connect()
        try:
            await transport.publish_broadcast(Message(body=b"before"))
            frozen.stall()
            with pytest.raises(ConnectionLost) as caught:
                await bounded(transport.publish_broadcast(Message(body=b"during")), 30)
            assert "gone" in str(caught.value)
            cancelling = getattr(asyncio.current_task(), "cancelling", lambda: 0)  # 3.11+
            assert not cancelling()  # the task is not being cancelled: it goes on
            frozen.resume()
            await until(lambda: transport.is_connected)
            await bounded(transport.publish_broadcast(Message(body=b"after")), 10)
        finally:
            frozen.resume()
            await transport.close()
