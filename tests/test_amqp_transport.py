"""The RabbitMQ transport against a real broker: topology, confirms, settling, RPC ownership."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
import pytest

from kiwipy.exceptions import (
    CommunicatorClosed,
    ConnectionLost,
    DeliveryFailed,
    DuplicateSubscriberIdentifier,
    UnroutableError,
)
from kiwipy.settings import Settings
from kiwipy.transports.amqp import AmqpTransport
from kiwipy.transports.base import Delivery, Message

pytestmark = pytest.mark.amqp

TIMEOUT = 10.0
KIWIPY_09_TASK_QUEUE_ARGS = {"x-message-ttl": 604_800_000}

MakeTransport = Callable[..., Awaitable[AmqpTransport]]


@pytest.fixture
def settings(amqp_url: str, unique_name: str) -> Settings:
    return Settings.from_url(
        amqp_url,
        message_exchange=f"{unique_name}.messages",
        task_exchange=f"{unique_name}.tasks",
        task_queue=f"{unique_name}.queue",
        testing_mode=True,
    )


@pytest.fixture
async def make_transport(settings: Settings) -> AsyncIterator[MakeTransport]:
    """Connected transports (each its own connection), closed at the end of the test."""
    made: list[AmqpTransport] = []

    async def make(custom: Settings | None = None) -> AmqpTransport:
        transport = AmqpTransport(custom or settings)
        await transport.connect()
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
async def transport(make_transport: MakeTransport) -> AmqpTransport:
    return await make_transport()


@pytest.fixture
async def raw_channel(amqp_url: str) -> AsyncIterator[Any]:
    """A plain aiormq channel, to play a kiwipy 0.9 peer or look at the broker."""
    connection = await aiormq.connect(amqp_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


def collector() -> tuple[asyncio.Queue[Any], Callable[[Any], Awaitable[None]]]:
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(item: Any) -> None:
        await received.put(item)

    return received, handler


async def next_item(received: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(received.get(), TIMEOUT)


async def nothing_arrives(received: asyncio.Queue[Any], wait: float = 0.3) -> bool:
    await asyncio.sleep(wait)
    return received.empty()


def task_message(text: str = "task") -> Message:
    return Message(body=text.encode(), correlation_id=str(uuid.uuid4()))


# -- connection ----------------------------------------------------------------------------------


async def test_server_properties_are_plain_python(transport: AmqpTransport) -> None:
    properties = transport.server_properties
    assert properties["product"] == "RabbitMQ"
    assert isinstance(properties["version"], str)
    assert isinstance(properties["capabilities"], dict)


async def test_wrong_credentials_raise_connection_lost_without_the_password(
    settings: Settings,
) -> None:
    parts = urllib.parse.urlsplit(settings.url)
    secret = f"not-the-password-{uuid.uuid4().hex}"
    netloc = f"guest:{secret}@{parts.hostname}:{parts.port or 5672}"
    bad = settings.replace(url=urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    transport = AmqpTransport(bad)
    with pytest.raises(ConnectionLost) as caught:
        await transport.connect()
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
    assert "****" in str(caught.value)


async def test_unreachable_broker_raises_connection_lost(settings: Settings) -> None:
    closed_port = settings.replace(url="amqp://guest:guest@127.0.0.1:1/", connection_timeout=5.0)
    with pytest.raises(ConnectionLost, match=r"127\.0\.0\.1"):
        await AmqpTransport(closed_port).connect()


async def test_close_is_idempotent_quick_and_calls_back_once(settings: Settings) -> None:
    transport = AmqpTransport(settings)
    await transport.connect()
    calls: list[BaseException | None] = []
    transport.add_close_callback(calls.append)
    await transport.declare_task_queue(settings.task_queue)
    started = time.monotonic()
    await transport.close()
    await transport.close()
    assert time.monotonic() - started < 1.0
    assert transport.is_closed
    assert calls == [None]
    transport.add_close_callback(calls.append)  # too late to wait: called at once
    assert calls == [None, None]
    with pytest.raises(CommunicatorClosed):
        await transport.publish_task(settings.task_queue, task_message())


async def test_a_dead_connection_is_reported_and_restored(
    transport: AmqpTransport, settings: Settings
) -> None:
    events: list[tuple[bool, BaseException | None]] = []
    closes: list[BaseException | None] = []
    transport.add_link_callback(lambda connected, exc: events.append((connected, exc)))
    transport.add_close_callback(closes.append)
    received: asyncio.Queue[Delivery] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        await received.put(delivery)

    await transport.consume_tasks(settings.task_queue, handler, prefetch_count=5)
    # Kill the connection under the transport, as a broker or network fault would.
    await transport._connection.close(ConnectionResetError("cut"))
    await asyncio.sleep(0)
    assert not transport.is_closed
    assert events[0][0] is False and isinstance(events[0][1], ConnectionLost)
    # A publish during the outage waits for the link, then goes through.
    await asyncio.wait_for(transport.publish_task(settings.task_queue, task_message()), TIMEOUT)
    assert [connected for connected, _ in events] == [False, True]
    # ... and the consumer restored itself on the new connection.
    delivery = await asyncio.wait_for(received.get(), TIMEOUT)
    await delivery.ack()
    assert closes == []


def test_only_the_amqp_transport_imports_aiormq() -> None:
    code = (
        "import kiwipy, kiwipy.aio, kiwipy.sync, kiwipy.rmq, kiwipy.transports, sys\n"
        "amqp = [m for m in sys.modules if m.split('.')[0] in ('aiormq', 'pamqp', 'aio_pika')]\n"
        "assert not amqp, amqp\n"
        "import kiwipy.transports.amqp; assert 'aiormq' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- tasks ---------------------------------------------------------------------------------------


async def test_task_is_published_consumed_and_acked(
    transport: AmqpTransport, settings: Settings
) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    await transport.declare_task_queue(queue)  # idempotent
    received, handler = collector()
    subscription = await transport.consume_tasks(queue, handler, prefetch_count=10)
    sent = Message(
        body=b"payload",
        content_type="application/json",
        correlation_id="corr-1",
        reply_to="somebody",
        headers={"kiwipy-version": "1", "attempt": 2},
    )
    await transport.publish_task(queue, sent)
    delivery: Delivery = await next_item(received)
    message = delivery.message
    assert (message.body, message.content_type) == (b"payload", "application/json")
    assert (message.correlation_id, message.reply_to) == ("corr-1", "somebody")
    assert message.headers == {"kiwipy-version": "1", "attempt": 2}
    assert message.persistent and not message.redelivered
    assert not delivery.settled
    await delivery.ack()
    await delivery.ack()  # settling twice is a no-op
    await delivery.reject(requeue=True)
    assert delivery.settled and not delivery.stale
    await subscription.cancel()
    await subscription.cancel()
    assert await transport.get_task(queue) is None


async def test_task_to_an_undeclared_queue_is_unroutable(
    transport: AmqpTransport, settings: Settings
) -> None:
    with pytest.raises(UnroutableError):
        await transport.publish_task(f"{settings.task_queue}.nobody", task_message())
    # The publisher channel survives.
    await transport.declare_task_queue(settings.task_queue)
    await transport.publish_task(settings.task_queue, task_message())


async def test_many_concurrent_task_publishes_are_all_confirmed(
    transport: AmqpTransport, settings: Settings, raw_channel: Any
) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    count = 200
    await asyncio.gather(
        *(transport.publish_task(queue, task_message(str(i))) for i in range(count))
    )
    declared = await raw_channel.queue_declare(queue, passive=True)
    assert declared.message_count == count


async def test_rejected_task_with_requeue_is_redelivered(
    transport: AmqpTransport, settings: Settings
) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    received, handler = collector()
    await transport.consume_tasks(queue, handler, prefetch_count=1)
    await transport.publish_task(queue, task_message("again"))
    first: Delivery = await next_item(received)
    assert not first.message.redelivered
    await first.reject(requeue=True)
    second: Delivery = await next_item(received)
    assert second.message.body == b"again"
    assert second.message.redelivered
    await second.reject(requeue=False)  # dropped
    assert await nothing_arrives(received)


async def test_unsettled_tasks_go_to_another_worker_when_a_transport_closes(
    make_transport: MakeTransport, settings: Settings
) -> None:
    queue = settings.task_queue
    first = await make_transport()
    await first.declare_task_queue(queue)
    held, holder = collector()
    await first.consume_tasks(queue, holder, prefetch_count=10)
    for i in range(3):
        await first.publish_task(queue, task_message(str(i)))
    deliveries = [await next_item(held) for _ in range(3)]
    await first.close()
    assert all(delivery.stale and delivery.settled for delivery in deliveries)
    await deliveries[0].ack()  # stale: nothing is sent, nothing is raised

    second = await make_transport()
    received, handler = collector()
    await second.consume_tasks(queue, handler, prefetch_count=10)
    again = [await next_item(received) for _ in range(3)]
    assert sorted(d.message.body for d in again) == [b"0", b"1", b"2"]
    assert all(d.message.redelivered for d in again)
    for delivery in again:
        await delivery.ack()


async def test_get_task_returns_a_delivery_or_none(
    transport: AmqpTransport, settings: Settings
) -> None:
    queue = settings.task_queue
    assert await transport.get_task(queue) is None  # declares the queue
    await transport.publish_task(queue, task_message("got"))
    delivery = await transport.get_task(queue)
    assert delivery is not None
    assert delivery.message.body == b"got"
    await delivery.reject(requeue=True)
    again = await transport.get_task(queue)
    assert again is not None and again.message.redelivered
    await again.ack()
    assert await transport.get_task(queue) is None


async def test_stale_delivery_ack_after_close_does_not_raise(
    transport: AmqpTransport, settings: Settings
) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    await transport.publish_task(queue, task_message())
    delivery = await transport.get_task(queue)
    assert delivery is not None
    await transport.close()
    assert delivery.stale
    await delivery.ack()
    await delivery.reject(requeue=False)


async def test_cancelled_task_consumer_still_settles_what_it_got(
    transport: AmqpTransport, settings: Settings
) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    received, handler = collector()
    subscription = await transport.consume_tasks(queue, handler, prefetch_count=10)
    await transport.publish_task(queue, task_message("before"))
    delivery: Delivery = await next_item(received)
    await subscription.cancel()
    await transport.publish_task(queue, task_message("after"))
    assert await nothing_arrives(received)
    await delivery.ack()
    assert not delivery.stale
    left = await transport.get_task(queue)
    assert left is not None and left.message.body == b"after"
    await left.ack()
    assert await transport.get_task(queue) is None  # "before" was acked, not requeued


async def test_failing_handler_is_logged_and_consumer_goes_on(
    transport: AmqpTransport, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    received: asyncio.Queue[Delivery] = asyncio.Queue()

    async def handler(delivery: Delivery) -> None:
        if delivery.message.body == b"boom":
            await delivery.ack()
            raise RuntimeError("handler exploded")
        await received.put(delivery)

    await transport.consume_tasks(queue, handler, prefetch_count=10)
    with caplog.at_level(logging.ERROR, logger="kiwipy"):
        await transport.publish_task(queue, task_message("boom"))
        await transport.publish_task(queue, task_message("fine"))
        delivery = await next_item(received)
    assert delivery.message.body == b"fine"
    await delivery.ack()
    assert "handler exploded" in caplog.text


async def test_kiwipy_09_task_queue_is_accepted(
    amqp_url: str, unique_name: str, raw_channel: Any
) -> None:
    production = Settings.from_url(
        amqp_url,
        message_exchange=f"{unique_name}.messages",
        task_exchange=f"{unique_name}.tasks",
        testing_mode=False,
    )
    queue = f"{unique_name}.process.queue"
    await raw_channel.queue_declare(queue, durable=True, arguments=KIWIPY_09_TASK_QUEUE_ARGS)
    transport = AmqpTransport(production)
    try:
        await transport.connect()
        await transport.declare_task_queue(queue)
        await transport.publish_task(queue, task_message("compatible"))
        delivery = await transport.get_task(queue)
        assert delivery is not None and delivery.message.body == b"compatible"
        await delivery.ack()
    finally:
        await transport.close()
        await raw_channel.queue_delete(queue)
        await raw_channel.exchange_delete(production.task_exchange)
        await raw_channel.exchange_delete(production.message_exchange)


async def test_a_queue_with_other_arguments_is_used_after_one_warning(
    transport: AmqpTransport, settings: Settings, raw_channel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    queue = settings.task_queue
    await raw_channel.queue_declare(
        queue, durable=True, arguments={"x-message-ttl": 1000, "x-expires": 10_000}
    )
    with caplog.at_level(logging.WARNING, logger="kiwipy"):
        await transport.declare_task_queue(queue)  # PRECONDITION_FAILED: checked, then used
        await transport.publish_task(queue, task_message())
    warnings = [r for r in caplog.records if "already exists with other arguments" in r.message]
    assert len(warnings) == 1
    assert "PRECONDITION_FAILED" in warnings[0].getMessage()
    # The control channel is reopened: the transport keeps working.
    await transport.declare_task_queue(f"{queue}.other")
    await transport.publish_task(f"{queue}.other", task_message())


async def test_a_nacked_task_is_sent_again_on_a_new_channel_then_raised(
    transport: AmqpTransport, settings: Settings, raw_channel: Any
) -> None:
    """A nack means "not stored": the task is sent again, each time on a new publisher channel
    (RabbitMQ 3.10 nacks everything on a channel that first published to a quorum queue during
    its leader election), then ``DeliveryFailed``. The channel after that works."""
    queue = settings.task_queue
    await raw_channel.queue_declare(  # a full queue that refuses more: the broker nacks
        queue, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await transport.declare_task_queue(queue)  # other arguments: used after one warning
    await transport.publish_task(queue, task_message("fits"))
    channels = []
    publisher = transport._publisher
    real_get = publisher.slot.get

    async def recording_get() -> Any:
        channel = await real_get()
        channels.append(channel)
        return channel

    publisher.slot.get = recording_get  # type: ignore[method-assign]
    with pytest.raises(DeliveryFailed, match=r"basic\.nack"):
        await transport.publish_task(queue, task_message("refused"))
    assert len(channels) == 6, channels  # the first send and five more
    assert len({id(channel) for channel in channels}) == 6  # each on a new channel
    await transport.declare_task_queue(f"{queue}.other")
    await transport.publish_task(f"{queue}.other", task_message())


async def test_a_publish_cancelled_before_its_confirm_leaves_the_channel(
    transport: AmqpTransport, settings: Settings
) -> None:
    """A send whose deadline passed with no confirm: the next goes on a new channel (RabbitMQ
    3.10 never confirms on a channel that first published to a quorum queue whose leader was
    frozen then). A persistent task's confirm waits for the disk: the cancel comes first."""
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    await transport.publish_task(queue, task_message("first"))
    publisher = transport._publisher  # which channel publishes
    before = await publisher.slot.get()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(transport.publish_task(queue, task_message("late")), 0.0001)
    after = await publisher.slot.get()
    assert after is not before
    await transport.publish_task(queue, task_message("on the new channel"))


@pytest.mark.parametrize(("heartbeat", "grace"), [(5, 9.0), (60, 91.0), (1, 2.0)])
async def test_a_silent_broker_is_taken_for_dead_within_two_heartbeats_and_a_second(
    heartbeat: int, grace: float
) -> None:
    """Issue 15: a frozen node noticed within 2 x heartbeat + 1 s of its last frame, counting
    aiormq's check every heartbeat / 2 (aiormq alone: 3 x (heartbeat + 1) + that).

    The connection is not opened: aiormq fixes its grace when the object is made."""
    from kiwipy.transports.amqp._wire import WideQueueConnection

    connection = WideQueueConnection(f"amqp://guest:guest@127.0.0.1:1/?heartbeat={heartbeat}")
    assert connection._Connection__heartbeat_grace_timeout == grace  # type: ignore[attr-defined]


# -- rpc -----------------------------------------------------------------------------------------


async def test_rpc_request_reaches_the_bound_handler(
    make_transport: MakeTransport,
) -> None:
    server, client = await make_transport(), await make_transport()
    received, handler = collector()
    await server.bind_rpc("worker-1", handler)
    await client.publish_rpc("worker-1", Message(body=b"ping", reply_to="me", correlation_id="c"))
    message: Message = await next_item(received)
    assert (message.body, message.reply_to, message.correlation_id) == (b"ping", "me", "c")
    assert not message.persistent


async def test_rpc_to_an_unknown_identifier_is_unroutable(transport: AmqpTransport) -> None:
    with pytest.raises(UnroutableError):
        await transport.publish_rpc("nobody-home", Message(body=b"?"))


async def test_rpc_identifier_is_owned_by_one_connection_broker_wide(
    make_transport: MakeTransport, settings: Settings
) -> None:
    first, second = await make_transport(), await make_transport()
    _, handler = collector()
    await first.bind_rpc("42", handler)
    with pytest.raises(DuplicateSubscriberIdentifier):
        await second.bind_rpc("42", handler)
    # The second transport still works after the broker closed its control channel.
    received, other = collector()
    await second.bind_rpc("43", other)
    await first.publish_rpc("43", Message(body=b"to 43"))
    assert (await next_item(received)).body == b"to 43"
    await second.declare_task_queue(settings.task_queue)
    await second.publish_task(settings.task_queue, task_message())


async def test_rpc_identifier_is_owned_once_within_a_transport(transport: AmqpTransport) -> None:
    _, handler = collector()
    await transport.bind_rpc("solo", handler)
    with pytest.raises(DuplicateSubscriberIdentifier):
        await transport.bind_rpc("solo", handler)


async def test_rpc_identifier_is_free_again_after_cancel(
    make_transport: MakeTransport,
) -> None:
    first, second = await make_transport(), await make_transport()
    old, old_handler = collector()
    subscription = await first.bind_rpc("7", old_handler)
    await subscription.cancel()
    await subscription.cancel()
    with pytest.raises(UnroutableError):
        await second.publish_rpc("7", Message(body=b"nobody"))
    again, again_handler = collector()
    await first.bind_rpc("7", again_handler)  # same transport
    await second.publish_rpc("7", Message(body=b"hello"))
    assert (await next_item(again)).body == b"hello"
    assert old.empty()
    await first.close()
    await bind_eventually(second, "7", again_handler)  # another transport, once the owner is gone


async def bind_eventually(
    transport: AmqpTransport, identifier: str, handler: Callable[[Message], Awaitable[None]]
) -> None:
    """Bind, retrying while the broker finishes deleting a closed connection's exclusive queue."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            await transport.bind_rpc(identifier, handler)
            return
        except DuplicateSubscriberIdentifier:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("identifier", ["a.*", "#", "x" * 201])
async def test_wildcard_or_long_rpc_identifier_is_refused(
    transport: AmqpTransport, identifier: str
) -> None:
    _, handler = collector()
    with pytest.raises(ValueError):
        await transport.bind_rpc(identifier, handler)


# -- broadcasts and replies ----------------------------------------------------------------------


async def test_broadcast_reaches_every_subscription(make_transport: MakeTransport) -> None:
    sender, listener = await make_transport(), await make_transport()
    first, first_handler = collector()
    second, second_handler = collector()
    one = await listener.subscribe_broadcasts(first_handler)
    await sender.subscribe_broadcasts(second_handler)
    await sender.publish_broadcast(Message(body=b"news", content_type="application/json"))
    for received in (first, second):
        message: Message = await next_item(received)
        assert (message.body, message.content_type, message.persistent) == (
            b"news",
            "application/json",
            False,
        )
    await one.cancel()
    await sender.publish_broadcast(Message(body=b"more"))
    assert (await next_item(second)).body == b"more"
    assert await nothing_arrives(first)


async def test_broadcast_without_subscribers_is_fine(transport: AmqpTransport) -> None:
    await transport.publish_broadcast(Message(body=b"into the void"))


async def test_reply_round_trip(make_transport: MakeTransport, settings: Settings) -> None:
    requester, worker = await make_transport(), await make_transport()
    received, handler = collector()
    address = await requester.open_reply_queue(handler)
    assert address.startswith(f"{settings.message_exchange}-reply-")
    await worker.publish_reply(address, Message(body=b"result", correlation_id="c1"))
    reply: Message = await next_item(received)
    assert (reply.body, reply.correlation_id) == (b"result", "c1")
    await worker.publish_reply(f"{address}-gone", Message(body=b"lost"))  # not an error


def spy_on(channel: Any) -> list[str]:
    """Record the publishes and acks sent on ``channel``, in order."""
    calls: list[str] = []
    for name in ("basic_publish", "basic_ack"):
        method = getattr(channel, name)

        def recorded(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            return _method(*args, **kwargs)

        setattr(channel, name, recorded)
    return calls


async def task_with_reply_address(
    make_transport: MakeTransport, settings: Settings
) -> tuple[AmqpTransport, asyncio.Queue[Any], str, Delivery]:
    """A worker transport holding one task delivery; the requester's reply queue."""
    requester, worker = await make_transport(), await make_transport()
    replies, reply_handler = collector()
    address = await requester.open_reply_queue(reply_handler)
    queue = settings.task_queue
    await worker.declare_task_queue(queue)
    deliveries, handler = collector()
    await worker.consume_tasks(queue, handler, prefetch_count=10)
    await requester.publish_task(queue, task_message())
    return worker, replies, address, await next_item(deliveries)


async def test_a_task_reply_goes_before_the_ack_on_the_tasks_channel(
    make_transport: MakeTransport, settings: Settings
) -> None:
    worker, replies, address, delivery = await task_with_reply_address(make_transport, settings)
    calls = spy_on(delivery._channel)  # type: ignore[attr-defined]
    await worker.reply_and_ack(delivery, address, Message(body=b"done", correlation_id="c1"))
    # One channel, the reply first: RabbitMQ has routed it before it removes the task.
    assert calls == ["basic_publish", "basic_ack"]
    assert delivery.settled
    reply: Message = await next_item(replies)
    assert (reply.body, reply.correlation_id) == (b"done", "c1")
    assert await worker.get_task(settings.task_queue) is None  # acked, not held


async def test_a_large_task_reply_goes_through_the_publisher(
    make_transport: MakeTransport, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kiwipy.transports.amqp.INLINE_REPLY_MAX_BYTES", 4)
    worker, replies, address, delivery = await task_with_reply_address(make_transport, settings)
    calls = spy_on(delivery._channel)  # type: ignore[attr-defined]
    await worker.reply_and_ack(delivery, address, Message(body=b"large", correlation_id="c1"))
    assert calls == ["basic_ack"]  # the reply went on the publisher's channel, confirmed
    assert (await next_item(replies)).body == b"large"


async def test_a_stale_task_reply_goes_through_the_publisher(
    make_transport: MakeTransport, settings: Settings
) -> None:
    worker, replies, address, delivery = await task_with_reply_address(make_transport, settings)
    await delivery._channel.close()  # type: ignore[attr-defined]
    assert delivery.stale
    await worker.reply_and_ack(delivery, address, Message(body=b"stale", correlation_id="c2"))
    assert (await next_item(replies)).body == b"stale"  # its sender still gets the answer


async def test_a_final_reply_goes_on_the_listener_channel_unless_it_is_closed(
    make_transport: MakeTransport,
) -> None:
    requester, worker = await make_transport(), await make_transport()
    replies, handler = collector()
    address = await requester.open_reply_queue(handler)
    listener = await worker._listener.get()
    calls = spy_on(listener)
    await worker.publish_final_reply(address, Message(body=b"answer", correlation_id="c1"))
    assert calls == ["basic_publish"]
    assert (await next_item(replies)).body == b"answer"

    await listener.close()
    assert worker._listener.current() is None
    await worker.publish_final_reply(address, Message(body=b"again", correlation_id="c2"))
    assert calls == ["basic_publish"]  # not on the closed channel
    assert (await next_item(replies)).body == b"again"
    await worker.publish_final_reply(f"{address}-gone", Message(body=b"lost"))  # not an error


async def test_kiwipy_09_replies_through_either_exchange_arrive(
    transport: AmqpTransport, settings: Settings, raw_channel: Any
) -> None:
    received, handler = collector()
    address = await transport.open_reply_queue(handler)
    for exchange in (settings.message_exchange, settings.task_exchange):
        await raw_channel.basic_publish(b"old peer", exchange=exchange, routing_key=address)
        assert (await next_item(received)).body == b"old peer"


async def test_auto_deleted_exchange_is_declared_again(
    transport: AmqpTransport, settings: Settings, amqp_url: str
) -> None:
    _, handler = collector()
    subscription = await transport.bind_rpc("gone", handler)
    await subscription.cancel()  # the last binding: the testing-mode exchange is auto-deleted
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.ChannelNotFoundEntity):
            await channel.exchange_declare(settings.message_exchange, passive=True)
    finally:
        await connection.close()
    with pytest.raises(UnroutableError):
        await transport.publish_rpc("gone", Message(body=b"?"))
    received, handler = collector()
    await transport.bind_rpc("gone", handler)
    await transport.publish_rpc("gone", Message(body=b"back"))
    assert (await next_item(received)).body == b"back"


# -- shutdown ------------------------------------------------------------------------------------


async def test_close_fails_publishes_in_flight_with_connection_lost(
    transport: AmqpTransport, settings: Settings
) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    publishes = [
        asyncio.ensure_future(transport.publish_task(queue, task_message())) for _ in range(300)
    ]
    await asyncio.sleep(0.002)
    await transport.close()
    results = await asyncio.wait_for(asyncio.gather(*publishes, return_exceptions=True), TIMEOUT)
    failures = [result for result in results if isinstance(result, BaseException)]
    # Publishes not started before close() see a closed transport; the others a lost connection.
    assert all(isinstance(failure, ConnectionLost | CommunicatorClosed) for failure in failures)


async def test_close_cancels_running_handlers(transport: AmqpTransport, settings: Settings) -> None:
    queue = settings.task_queue
    await transport.declare_task_queue(queue)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(delivery: Delivery) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await transport.consume_tasks(queue, stuck, prefetch_count=1)
    await transport.publish_task(queue, task_message())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    begin = time.monotonic()
    await transport.close()
    assert time.monotonic() - begin < 1.0
    assert cancelled.is_set()


async def test_a_handler_may_close_its_own_transport(make_transport: MakeTransport) -> None:
    transport, sender = await make_transport(), await make_transport()
    closed = asyncio.Event()

    async def closer(message: Message) -> None:
        await transport.close()
        closed.set()

    await transport.bind_rpc("closer", closer)
    await sender.publish_rpc("closer", Message(body=b"bye"))
    await asyncio.wait_for(closed.wait(), TIMEOUT)
    assert transport.is_closed
