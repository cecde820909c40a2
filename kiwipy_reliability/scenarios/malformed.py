"""M1: malformed task bodies mixed with valid tasks, published raw to a worker's task queue.

One worker process (``max_message_bytes`` 64 KiB, a dead-letter queue) consumes a queue into
which this scenario publishes, with aiormq and publisher confirms, valid kiwipy tasks and as
many malformed bodies: random bytes, truncated JSON and YAML, unknown content types, invalid
UTF-8, JSON nested far too deep, YAML that would run a command or import a name if loaded
unsafely, a pickle, empty and oversized bodies. Every malformed message must be dead-lettered
once, on its first delivery, the worker must neither crash nor lose its connection, every valid
task must be processed once, and the unsafe payloads must have no effect (their marker file is
never created).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kiwipy_reliability.scenario_workers import WorkerLog, queue_table, start_worker

if TYPE_CHECKING:
    from kiwipy_reliability.base import Scale, ScenarioResult
    from kiwipy_reliability.faults import RabbitNode, WorkerProcess

__all__ = ["NAME", "malformed_bodies", "run"]

NAME = "malformed"

MAX_MESSAGE_BYTES = 64 * 1024
_READY_TIMEOUT = 30.0
_BATCH = 250
_JSON = "application/json"
_YAML = "application/x-yaml"
_ID_HEADER = "x-scenario-id"

Body = tuple[bytes, str | None]


def _pickled_shell(command: str) -> bytes:
    """A protocol-0 pickle that calls ``os.system(command)`` when unpickled (it never is)."""
    return b"cos\nsystem\n(S'" + command.encode() + b"'\ntR."


def malformed_bodies(marker: str, rng: random.Random) -> list[tuple[str, Callable[[], Body]]]:
    """``(kind, make)`` pairs; ``make()`` returns a body and its content type (or ``None``)."""
    touch = f"touch {marker}"
    oversized = json.dumps([{"id": "big", "pad": "x" * (2 * MAX_MESSAGE_BYTES)}, True]).encode()
    bomb = "\n".join(
        ["a: &a [x, x, x, x, x, x, x, x, x]"]
        + [
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ]
    ).encode()
    return [
        ("random_bytes_json", lambda: (rng.randbytes(rng.randint(1, 512)), _JSON)),
        ("random_bytes_untyped", lambda: (rng.randbytes(rng.randint(1, 512)), None)),
        ("truncated_json", lambda: (b'[{"id": "t", "values": [1, 2, 3', _JSON)),
        ("truncated_yaml", lambda: (b"- {id: t, values: [1, 2, 3\n- tru", None)),
        ("wrong_content_type", lambda: (b'[{"id": "w"}, true]', "application/x-unknown")),
        ("invalid_utf8", lambda: (b'[{"id": "\xff\xfe\xc3\x28"}, true]', _JSON)),
        ("invalid_utf8_untyped", lambda: (b"- \xff\xfe\xc3\x28\n- true", None)),
        ("deep_json_100k", lambda: (b"[" * 100_000, _JSON)),
        ("deep_json_60k", lambda: (b"[" * 60_000, _JSON)),
        ("deep_json_closed", lambda: (b"[" * 30_000 + b"]" * 30_000, _JSON)),
        ("deep_yaml_untyped", lambda: (b"[" * 60_000, None)),
        ("yaml_os_system", lambda: (f'!!python/object/apply:os.system ["{touch}"]'.encode(), None)),
        (
            "yaml_os_system_task",
            lambda: (f'[!!python/object/apply:os.system ["{touch}"], true]'.encode(), None),
        ),
        (
            "yaml_os_system_typed",
            lambda: (f'[!!python/object/apply:os.system ["{touch}"], true]'.encode(), _YAML),
        ),
        ("yaml_python_name", lambda: (b"[!!python/name:os.system , true]", None)),
        ("yaml_alias_bomb", lambda: (bomb, None)),
        ("pickle", lambda: (_pickled_shell(touch), "application/x-python-serialize")),
        ("empty_json", lambda: (b"", _JSON)),
        ("empty_untyped", lambda: (b"", None)),
        ("oversized", lambda: (oversized, _JSON)),
        ("not_a_task", lambda: (b'{"id": "n", "no_reply": true}', _JSON)),
    ]


def _plan(count: int, marker: str, seed: int) -> list[tuple[str, str, bytes, str | None]]:
    """``count`` malformed and ``count`` valid messages, shuffled: ``(id, kind, body, type)``."""
    rng = random.Random(seed)
    kinds = malformed_bodies(marker, rng)
    plan: list[tuple[str, str, bytes, str | None]] = []
    for number in range(count):
        kind, make = kinds[number % len(kinds)]
        body, content_type = make()
        plan.append((f"m-{number}", kind, body, content_type))
        valid = json.dumps([{"id": f"v-{number}"}, True]).encode()
        plan.append((f"v-{number}", "valid", valid, _JSON))
    rng.shuffle(plan)
    return plan


async def _publish(url: str, queue: str, plan: list[tuple[str, str, bytes, str | None]]) -> int:
    """Publish every message with confirms; return how many the broker did not confirm."""
    # The brief allows raw aiormq here: malformed bodies cannot be sent through kiwipy.
    import aiormq
    import aiormq.abc
    from pamqp import commands

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        failures = 0
        for start in range(0, len(plan), _BATCH):
            sends = [
                channel.basic_publish(
                    body,
                    exchange="",
                    routing_key=queue,
                    mandatory=True,
                    properties=aiormq.spec.Basic.Properties(
                        content_type=content_type,
                        correlation_id=ident,
                        headers={_ID_HEADER: ident},
                        delivery_mode=2,
                    ),
                )
                for ident, _kind, body, content_type in plan[start : start + _BATCH]
            ]
            for outcome in await asyncio.gather(*sends, return_exceptions=True):
                if not isinstance(outcome, commands.Basic.Ack):
                    failures += 1
        return failures
    finally:
        await connection.close()


async def _drain(url: str, queue: str, expected: int, quiet: float) -> list[dict[str, Any]]:
    """Consume ``queue`` until ``expected`` messages came or none came for ``quiet`` s."""
    import aiormq
    import aiormq.abc

    received: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        props = message.header.properties
        received.append(
            {
                "id": (props.headers or {}).get(_ID_HEADER) or props.correlation_id,
                "headers": dict(props.headers or {}),
                "redelivered": bool(getattr(message.delivery, "redelivered", False)),
            }
        )
        arrived.set()

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1000)
        await channel.basic_consume(queue, on_message, no_ack=True)
        while len(received) < expected:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), quiet)
            except TimeoutError:
                break
        return received
    finally:
        await connection.close()


def _as_text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def worker_figures(
    log: WorkerLog,
    worker: WorkerProcess,
    pid: int | None,
    figures: dict[str, float | int],
    notes: list[str],
) -> None:
    """What the malformed worker's events say: valid tasks processed, duplicated and
    redelivered, connection losses, and whether the worker that started is still the one."""
    valid = [event[1] for event in log.of("VALID")]
    figures["valid_processed"] = len(set(valid))
    figures["valid_duplicated"] = len(valid) - len(set(valid))
    figures["valid_redelivered"] = sum(1 for event in log.of("VALID") if event[2] == "1")
    figures["connection_losses"] = sum(1 for event in log.of("CONN") if event[1] == "0")
    alive = worker.is_running() and worker.pid == pid
    figures["malformed_crashes"] = 0 if alive else 1
    if not alive:
        notes.append(f"worker exited with {worker.returncode}:\n{worker.output()[-3000:]}")


def dead_letter_figures(
    dead: list[dict[str, Any]],
    kinds: dict[str, str],
    count: int,
    figures: dict[str, float | int],
    notes: list[str],
) -> None:
    """What the dead-letter queue holds against the plan (``kinds``: id -> kind); needs
    ``queue_left`` and ``connection_losses`` already in ``figures``."""
    from kiwipy.aio._rejections import REASON_HEADER

    ids = Counter(_as_text(message["id"]) for message in dead)
    malformed_ids = {ident for ident, kind in kinds.items() if kind != "valid"}
    figures["dead_lettered"] = len(set(ids) & malformed_ids)
    figures["dead_lettered_twice"] = sum(1 for n in ids.values() if n > 1)
    figures["dead_lettered_valid"] = len(set(ids) - malformed_ids)
    figures["dead_with_reason"] = sum(1 for m in dead if REASON_HEADER in m["headers"])
    missing = Counter(kinds[ident] for ident in malformed_ids - set(ids))
    if missing:
        notes.append(f"not dead-lettered, by kind: {dict(missing)}")
    figures["malformed_settled_first"] = int(
        figures["dead_lettered"] == count
        and figures["dead_lettered_twice"] == 0
        and figures["queue_left"] == 0
        and figures["connection_losses"] == 0
    )


@dataclasses.dataclass(frozen=True)
class Setup:
    """One malformed-input run's names, worker settings and messages (on either broker)."""

    queue: str
    dead_letters: str
    #: The file a body that managed to run code would create.
    marker: str
    settings: dict[str, Any]
    #: ``(ident, kind, body, content type)`` in sending order: malformed and valid mixed.
    plan: list[tuple[str, str, bytes, str | None]]

    @property
    def kinds(self) -> dict[str, str]:
        return {ident: kind for ident, kind, _body, _type in self.plan}


def prepare(name: str, count: int) -> Setup:
    """Fresh names for scenario ``name`` and ``count`` malformed bodies beside ``count`` valid
    tasks, in a seeded order."""
    from kiwipy_reliability.base import unique_name

    prefix = unique_name(name)
    queue, dead_letters = f"{prefix}.queue", f"{prefix}.dead"
    marker = f"/tmp/kiwipy-malformed-marker-{uuid.uuid4().hex}"  # noqa: S108 - the brief's path
    settings = {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": queue,
        "dead_letter_queue": dead_letters,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "task_prefetch_count": 50,
    }
    return Setup(queue, dead_letters, marker, settings, _plan(count, marker, seed=count))


def run(node: RabbitNode, scale: Scale) -> ScenarioResult:
    from kiwipy.aio._rejections import REASON_HEADER
    from kiwipy_reliability.base import ScenarioResult

    count = scale.pick(200, 2_000, 10_000)
    setup = prepare("malformed", count)
    queue, dead_letters, marker, plan = setup.queue, setup.dead_letters, setup.marker, setup.plan
    kinds = setup.kinds
    figures: dict[str, float | int] = {"malformed_sent": count, "valid_sent": count}
    notes: list[str] = []
    worker = start_worker("malformed", node.url, setup.settings)
    try:
        log = WorkerLog(worker)
        if not log.wait(lambda log: bool(log.of("READY")), _READY_TIMEOUT):
            raise RuntimeError(f"worker did not start:\n{worker.output()}")
        pid = worker.pid
        began = time.monotonic()
        figures["publish_failures"] = asyncio.run(_publish(node.url, queue, plan))

        def settled(_log: WorkerLog) -> bool:
            if len(_log.of("VALID")) < count:
                return False
            table = queue_table(node, "messages")
            return (
                table.get(dead_letters, ["0"])[0] == str(count)
                and table.get(queue, ["-1"])[0] == "0"
            )

        deadline = time.monotonic() + 60.0 + count / 100
        while not settled(log) and time.monotonic() < deadline and worker.is_running():
            log.wait(lambda log: False, 1.0)
        figures["settle_s"] = round(time.monotonic() - began, 2)
        log.wait(lambda log: False, 0.5)  # late events, if any
        worker_figures(log, worker, pid, figures, notes)
        queue_left = queue_table(node, "messages").get(queue, ["0"])[0]
        figures["queue_left"] = int(queue_left) if queue_left.isdigit() else -1

        dead = asyncio.run(_drain(node.url, dead_letters, count, quiet=3.0))
        dead_letter_figures(dead, kinds, count, figures, notes)
        reasons = {
            kinds.get(_as_text(m["id"]), "?"): _as_text(m["headers"].get(REASON_HEADER))[:160]
            for m in dead
        }
        notes.extend(f"{kind}: {reason}" for kind, reason in sorted(reasons.items()))
    finally:
        worker.close()
        figures["marker_created"] = int(os.path.exists(marker))
        if os.path.exists(marker):
            os.unlink(marker)
    return ScenarioResult(NAME, figures, notes)
