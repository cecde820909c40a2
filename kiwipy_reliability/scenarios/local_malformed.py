"""L5: :mod:`.malformed` on the local broker: malformed bodies mixed with valid tasks.

The same plan as on RabbitMQ (random bytes, truncated JSON and YAML, unknown content types,
invalid UTF-8, deep nesting, YAML and pickles that would run a command if loaded unsafely, empty
and oversized bodies, each beside a valid task), published straight to the worker's task queue
through the local transport with confirms, and the same scenario worker (64 KiB limit, a
dead-letter queue). Every malformed message must be dead-lettered once, every valid task
processed once, the worker must neither crash nor lose its connection, and the unsafe payloads
must have no effect. Also: frames the broker must refuse (another protocol version, oversized)
leave it serving (``broker_refusals_ok``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from typing import Any

from kiwipy.broker._wire import PROTOCOL_VERSION, decode_frame, encode_frame
from kiwipy.transports.base import Message
from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.local import LocalBroker
from kiwipy_reliability.scenario_workers import WorkerLog, start_worker
from kiwipy_reliability.scenarios.malformed import (
    _ID_HEADER,
    dead_letter_figures,
    prepare,
    worker_figures,
)

__all__ = ["NAME", "NEEDS_RABBITMQ", "run"]

NAME = "local_malformed"
NEEDS_RABBITMQ = False

_READY_TIMEOUT = 30.0
_BATCH = 250

Plan = list[tuple[str, str, bytes, str | None]]


async def _publish(url: str, queue: str, plan: Plan) -> int:
    """Publish every message through the local transport; how many were not confirmed."""
    import kiwipy.aio

    comm = await kiwipy.aio.connect(url)
    transport: Any = comm.transport
    failures = 0
    try:
        await transport.declare_task_queue(queue)
        for start in range(0, len(plan), _BATCH):
            sends = [
                transport.publish_task(
                    queue,
                    Message(
                        body,
                        content_type,
                        correlation_id=ident,
                        headers={_ID_HEADER: ident},
                        persistent=True,
                    ),
                )
                for ident, _kind, body, content_type in plan[start : start + _BATCH]
            ]
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
            failures += sum(1 for outcome in outcomes if outcome is not None)
    finally:
        await comm.close()
    return failures


async def _drain(url: str, queue: str) -> list[dict[str, Any]]:
    """Every message of ``queue`` (acknowledged as taken)."""
    import kiwipy.aio

    comm = await kiwipy.aio.connect(url)
    transport: Any = comm.transport
    taken: list[dict[str, Any]] = []
    try:
        while (delivery := await transport.get_task(queue)) is not None:
            message = delivery.message
            headers = dict(message.headers)
            ident = headers.get(_ID_HEADER) or message.correlation_id
            taken.append({"id": str(ident), "headers": headers})
            await delivery.ack()
    finally:
        await comm.close()
    return taken


def _broker_refusals(broker: LocalBroker) -> int:
    """1 if the broker refuses another protocol and an oversized frame, and serves on."""

    def exchange(frame: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(5)
            raw.connect(str(broker.directory / "broker.sock"))
            raw.sendall(frame)
            length = struct.unpack(">I", raw.recv(4))[0]
            payload = b""
            while len(payload) < length:
                payload += raw.recv(length - len(payload))
            return decode_frame(payload)[0]

    version = exchange(encode_frame({"op": "hello", "version": PROTOCOL_VERSION + 1}))
    oversized = exchange(struct.pack(">I", 2**31))
    asyncio.run(_publish(broker.url, "after-refusals", []))  # declares it: a round trip
    serving = "after-refusals" in broker.queue_stats()
    refused = version.get("type") == "version" and oversized.get("type") == "frame"
    return int(refused and serving)


def run(node: object, scale: Scale) -> ScenarioResult:
    count = scale.pick(200, 2_000, 10_000)
    setup = prepare("local-malformed", count)
    queue, dead_letters, marker, plan = setup.queue, setup.dead_letters, setup.marker, setup.plan
    kinds = setup.kinds
    figures: dict[str, float | int] = {"malformed_sent": count, "valid_sent": count}
    notes: list[str] = []
    with LocalBroker() as broker:
        worker = start_worker("malformed", broker.url, setup.settings)
        try:
            log = WorkerLog(worker)
            if not log.wait(lambda log: bool(log.of("READY")), _READY_TIMEOUT):
                raise RuntimeError(f"worker did not start:\n{worker.output()}")
            pid = worker.pid
            began = time.monotonic()
            figures["publish_failures"] = asyncio.run(_publish(broker.url, queue, plan))

            def settled(_log: WorkerLog) -> bool:
                if len(_log.of("VALID")) < count:
                    return False
                stats = broker.queue_stats()
                dead = stats.get(dead_letters, {}).get("ready", 0)
                left = stats.get(queue, {"ready": -1, "unacked": -1})
                return dead == count and left["ready"] == left["unacked"] == 0

            deadline = time.monotonic() + 60.0 + count / 100
            while not settled(log) and time.monotonic() < deadline and worker.is_running():
                log.wait(lambda log: False, 0.2)
            figures["settle_s"] = round(time.monotonic() - began, 2)
            log.wait(lambda log: False, 0.5)  # late events, if any
            worker_figures(log, worker, pid, figures, notes)
            left = broker.queue_stats().get(queue, {"ready": -1, "unacked": -1})
            figures["queue_left"] = left["ready"] + left["unacked"]
            figures["broker_refusals_ok"] = _broker_refusals(broker)

            dead = asyncio.run(_drain(broker.url, dead_letters))
            dead_letter_figures(dead, kinds, count, figures, notes)
        finally:
            worker.close()
            figures["marker_created"] = int(os.path.exists(marker))
            if os.path.exists(marker):
                os.unlink(marker)
    return ScenarioResult(NAME, figures, notes)
