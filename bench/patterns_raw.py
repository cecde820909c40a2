"""The raw baseline: the same patterns with aiormq directly, no messaging library on top.

Tasks are persistent messages to a durable queue, published with publisher confirms; the
worker consumes with manual acks and prefetch 100, publishes the reply (confirmed) to the
``reply_to`` queue with the correlation id, then acks. RPC is the same over a non-durable queue.
The caller has one exclusive reply queue (no-ack consumer) and a future per correlation id.
Broadcasts go to a topic exchange; each subscriber process has its own exclusive queue and a
no-ack consumer (as ours has: broadcasts are fire and forget).
Bodies are JSON. Patterns: ``tasks_seq`` awaits one confirm at a time (blocking style),
``tasks_pipelined`` keeps every confirm in flight (the batch and the asyncio styles).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import common
import workers
from common import (
    WAIT_TIMEOUT_S,
    Names,
    Result,
    Timer,
    answer,
    check_answers,
    latency_summary,
    monotonic,
    payload,
)

PREFETCH = 100
PERSISTENT = 2
TRANSIENT = 1
BROADCAST_KEY = "[broadcast]"
SCRIPT = __file__


def _aiormq() -> Any:
    """aiormq, imported on first use (so a driver's workers start while it imports)."""
    import aiormq  # noqa: TID251 (the baseline is the AMQP client itself)

    return aiormq


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def payloads(first: int, stop: int) -> list[dict[str, Any]]:
    return [payload(i) for i in range(first, stop)]


@contextlib.asynccontextmanager
async def confirmed_channel(url: str) -> AsyncIterator[Any]:
    """A connection with one publisher-confirm channel; closed on exit."""
    connection = await _aiormq().connect(url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


def publish(
    channel: Any,
    routing_key: str,
    body: Any,
    *,
    persistent: bool,
    exchange: str = "",
    correlation_id: str | None = None,
    reply_to: str | None = None,
) -> Awaitable[Any]:
    """Publish ``body`` as JSON; the awaitable resolves with the broker's confirm."""
    properties = _aiormq().spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=PERSISTENT if persistent else TRANSIENT,
        correlation_id=correlation_id,
        reply_to=reply_to,
    )
    confirm: Awaitable[Any] = channel.basic_publish(
        encode(body), exchange=exchange, routing_key=routing_key, properties=properties
    )
    return confirm


class Requester:
    """The caller's side of request/reply: a reply queue and a future per correlation id."""

    def __init__(self, channel: Any, reply_queue: str) -> None:
        self._channel = channel
        self._reply_queue = reply_queue
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count()

    @classmethod
    async def open(cls, channel: Any) -> Requester:
        declared = await channel.queue_declare("", exclusive=True)
        requester = cls(channel, declared.queue)
        await channel.basic_consume(declared.queue, requester._on_reply, no_ack=True)
        return requester

    async def _on_reply(self, message: Any) -> None:
        future = self._pending.pop(message.header.properties.correlation_id)
        future.set_result(json.loads(message.body))

    async def call(self, queue: str, body: Any, persistent: bool) -> asyncio.Future[Any]:
        """Send a request; return (once confirmed) the future of its reply."""
        correlation_id = str(next(self._ids))
        future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        await publish(
            self._channel,
            queue,
            body,
            persistent=persistent,
            correlation_id=correlation_id,
            reply_to=self._reply_queue,
        )
        return future

    async def send(self, queue: str, body: Any, persistent: bool) -> None:
        """Send without asking for a reply."""
        await publish(self._channel, queue, body, persistent=persistent)


async def send_all(
    send: Callable[[str, Any, bool], Awaitable[Any]],
    queue: str,
    bodies: Sequence[Any],
    *,
    persistent: bool,
    pipelined: bool,
) -> list[Any]:
    """Send every body: all confirms in flight together, or one confirm at a time."""
    if pipelined:
        return list(await asyncio.gather(*(send(queue, body, persistent) for body in bodies)))
    return [await send(queue, body, persistent) for body in bodies]


async def results_time(futures: Sequence[Any], first: int = 0) -> float:
    results = await asyncio.wait_for(asyncio.gather(*futures), WAIT_TIMEOUT_S)
    end = monotonic()
    check_answers(results, first)
    return end


# -- drivers -------------------------------------------------------------------------------------


def tasks_seq(args: argparse.Namespace) -> Result:
    return asyncio.run(_requests(args, "tasks", pipelined=False))


def tasks_pipelined(args: argparse.Namespace) -> Result:
    return asyncio.run(_requests(args, "tasks", pipelined=True))


def rpc_pipelined(args: argparse.Namespace) -> Result:
    return asyncio.run(_requests(args, "rpc", pipelined=True))


def _destination(args: argparse.Namespace, kind: str) -> tuple[str, bool]:
    """The queue of ``kind`` requests and whether they are persistent."""
    names = Names.from_json(args.names)
    return (names.task_queue, True) if kind == "tasks" else (names.raw_rpc_queue, False)


async def _requests(args: argparse.Namespace, kind: str, *, pipelined: bool) -> Result:
    """Tasks (durable queue, persistent) or RPCs (transient); replies unless ``--no-reply``."""
    queue, persistent = _destination(args, kind)
    bodies = payloads(0, args.n)
    with workers.pool(SCRIPT, args, kind, args.warmup + args.n) as pool:
        async with confirmed_channel(args.url) as channel:
            requester = await Requester.open(channel)
            pool.ready()
            warm = payloads(-args.warmup, 0)
            futures = await send_all(
                requester.call, queue, warm, persistent=persistent, pipelined=True
            )
            await results_time(futures, -args.warmup)
            send = requester.send if args.no_reply else requester.call
            timer = Timer()
            futures = await send_all(
                send, queue, bodies, persistent=persistent, pipelined=pipelined
            )
            timer.all_sent()
            if args.no_reply:
                end = await asyncio.to_thread(pool.done_time)
            else:
                end = await results_time(futures)
    return {**timer.throughput(args.n, end), **pool.summary()}


def rpc_latency(args: argparse.Namespace) -> Result:
    return asyncio.run(_rpc_latency(args))


async def _rpc_latency(args: argparse.Namespace) -> Result:
    queue = Names.from_json(args.names).raw_rpc_queue
    samples: list[float] = []
    with workers.pool(SCRIPT, args, "rpc", args.warmup + args.calls) as pool:
        async with confirmed_channel(args.url) as channel:
            requester = await Requester.open(channel)
            pool.ready()
            for i in range(-args.warmup, args.calls):
                start = monotonic()
                result = await (await requester.call(queue, payload(i), False))
                if i >= 0:
                    samples.append(monotonic() - start)
                check_answers([result], i)
    return {**latency_summary(samples), **pool.summary()}


def broadcast_seq(args: argparse.Namespace) -> Result:
    return asyncio.run(_broadcast_seq(args))


async def _broadcast_seq(args: argparse.Namespace) -> Result:
    exchange = Names.from_json(args.names).message_exchange
    bodies = payloads(0, args.n)
    with workers.pool(SCRIPT, args, "broadcast", args.warmup + args.n, size=args.subs) as pool:
        async with confirmed_channel(args.url) as channel:
            await channel.exchange_declare(exchange, exchange_type="topic")
            pool.ready()

            async def send(body: Any) -> None:
                await publish(channel, BROADCAST_KEY, body, persistent=False, exchange=exchange)

            for body in payloads(-args.warmup, 0):
                await send(body)
            timer = Timer()
            for body in bodies:
                await send(body)
            timer.all_sent()
            end = await asyncio.to_thread(pool.done_time)
    return {**timer.throughput(args.n, end), **pool.summary()}


def connect(args: argparse.Namespace) -> Result:
    return asyncio.run(_connect(args))


async def _connect(args: argparse.Namespace) -> Result:
    """Connection, confirm channel, reply queue, and the first task round trip (twice)."""
    start = monotonic()
    _aiormq()
    load_s = monotonic() - start
    with workers.pool(SCRIPT, args, "tasks", 2) as pool:
        pool.ready()
        first = await _connect_and_ask(args, 0)
        second = await _connect_and_ask(args, 1)
    cold = round(load_s + first["first_reply_s"], 4)
    return {
        **first,
        "second_first_reply_s": second["first_reply_s"],
        "cold_first_reply_s": cold,
        **pool.summary(),
    }


async def _connect_and_ask(args: argparse.Namespace, i: int) -> Result:
    queue = Names.from_json(args.names).task_queue
    start = monotonic()
    async with confirmed_channel(args.url) as channel:
        requester = await Requester.open(channel)
        connected = monotonic()
        result = await (await requester.call(queue, payload(i), True))
        end = monotonic()
    check_answers([result], i)
    return {"first_reply_s": round(end - start, 4), "connect_s": round(connected - start, 4)}


# -- workers -------------------------------------------------------------------------------------


def tasks_worker(args: argparse.Namespace) -> None:
    queue = Names.from_json(args.names).task_queue
    asyncio.run(_serve_requests(args, lambda ch: ch.queue_declare(queue, durable=True), queue))


def rpc_worker(args: argparse.Namespace) -> None:
    queue = Names.from_json(args.names).raw_rpc_queue
    asyncio.run(_serve_requests(args, lambda ch: ch.queue_declare(queue, exclusive=True), queue))


async def _serve_requests(
    args: argparse.Namespace, declare: Callable[[Any], Awaitable[Any]], queue: str
) -> None:
    """Consume ``queue`` with manual acks; reply (confirmed) when asked, then ack."""
    counter = workers.Counter(args.count)
    async with confirmed_channel(args.url) as channel:
        await channel.basic_qos(prefetch_count=PREFETCH)
        await declare(channel)

        async def on_request(message: Any) -> None:
            request = json.loads(message.body)
            counter.bump()
            properties = message.header.properties
            if properties.reply_to:
                await publish(
                    channel,
                    properties.reply_to,
                    answer(request),
                    persistent=False,
                    correlation_id=properties.correlation_id,
                )
            await channel.basic_ack(message.delivery.delivery_tag)

        await channel.basic_consume(queue, on_request, no_ack=False)
        await _serve_until_stopped(counter)
    workers.say_bye(counter)


def broadcast_worker(args: argparse.Namespace) -> None:
    asyncio.run(_serve_broadcasts(args))


async def _serve_broadcasts(args: argparse.Namespace) -> None:
    exchange = Names.from_json(args.names).message_exchange
    counter = workers.Counter(args.count)
    async with confirmed_channel(args.url) as channel:
        await channel.exchange_declare(exchange, exchange_type="topic")
        declared = await channel.queue_declare("", exclusive=True)
        await channel.queue_bind(declared.queue, exchange, routing_key=BROADCAST_KEY)

        async def on_broadcast(message: Any) -> None:
            json.loads(message.body)
            counter.bump()

        await channel.basic_consume(declared.queue, on_broadcast, no_ack=True)
        await _serve_until_stopped(counter)
    workers.say_bye(counter)


async def _serve_until_stopped(counter: workers.Counter) -> None:
    counter.ready()
    await asyncio.to_thread(workers.wait_for_stop)


DRIVERS = {
    "tasks_seq": tasks_seq,
    "tasks_pipelined": tasks_pipelined,
    "rpc_pipelined": rpc_pipelined,
    "rpc_latency": rpc_latency,
    "broadcast_seq": broadcast_seq,
    "connect": connect,
}
WORKERS = {"tasks": tasks_worker, "rpc": rpc_worker, "broadcast": broadcast_worker}

if __name__ == "__main__":
    common.main(DRIVERS, WORKERS)
