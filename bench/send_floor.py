"""One awaited durable send, from this machine's floor up: how much of it any broker pays.

    .venv/bin/python bench/send_floor.py               # 5 rounds
    .venv/bin/python bench/send_floor.py --rounds 3 --n 1000

Each round measures, one after the other, the mean time of one awaited send (the next sent once
the previous is confirmed), in microseconds:

- ``rabbitmq``: our kiwipy on RabbitMQ, a worker in the same process (as ``local_bench.py``);
- ``local``: our kiwipy on ``local://``, the same;
- ``local_no_poll``: the same with ``?poll_us=0`` (the broker sleeps as soon as it is idle);
- ``kiwipy_to_bare``: our kiwipy client, no worker, to a *bare broker*: a stand-in of this
  script that reads each frame and answers it, a publish only after it has overwritten 4 KiB of
  a file and called ``fdatasync`` (the least any broker that confirms after an fsync does);
- ``raw_to_bare``: a raw client (one future and one write per send, the same frames) to the
  bare broker;
- ``raw_to_local``: the raw client to our local broker, no worker;
- ``raw_to_bare_no_fsync``: the raw client to the bare broker without the fsync (two processes
  waking each other: the floor of any round trip between two processes here).

Printed: one line per round with the ratio ``rabbitmq / figure`` for each, the medians, then one
JSON line. The gap between ``raw_to_bare`` and ``kiwipy_to_bare`` is our client's work; the gap
between ``raw_to_bare`` and ``raw_to_local`` is our broker's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from local_bench import AMQP_URL, awaited_sends_one_at_a_time, stop_broker

import kiwipy.aio
from kiwipy.broker._wire import FrameError, FrameProtocol, encode_frame, encode_ok

_BLOCK = 4096
_FILE_BLOCKS = 1024


class BareBroker(FrameProtocol):
    """Answers every request at once; a publish after a 4 KiB write and its ``fdatasync``."""

    def __init__(self, descriptor: int | None) -> None:
        super().__init__()
        self._descriptor = descriptor
        self._block = 0

    def frame_received(self, header: dict[str, Any], body: bytes) -> None:
        if "id" not in header:
            return  # an ack or a reply: nobody waits for an answer
        assert self.transport is not None
        if header.get("op") == "hello":
            hello = {"op": "ok", "id": header["id"], "product": "bare", "version": "1"}
            hello.update(protocol=1, pid=os.getpid(), epoch=1, directory="")
            self.transport.write(encode_frame(hello))
            return
        if header.get("op") == "publish" and self._descriptor is not None:
            self._block = (self._block + 1) % _FILE_BLOCKS
            os.pwrite(self._descriptor, body.ljust(_BLOCK, b"\0")[:_BLOCK], self._block * _BLOCK)
            os.fdatasync(self._descriptor)
        self.transport.write(encode_ok(header["id"]))

    def frame_refused(self, error: FrameError) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve_bare(directory: str, fsync: bool) -> None:
    descriptor = None
    if fsync:
        descriptor = os.open(os.path.join(directory, "data"), os.O_RDWR | os.O_CREAT, 0o600)
        os.write(descriptor, bytes(_BLOCK * _FILE_BLOCKS))  # then every write overwrites
        os.fsync(descriptor)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(
        lambda: BareBroker(descriptor), os.path.join(directory, "broker.sock")
    )
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()


class RawClient(FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.answer: asyncio.Future[dict[str, Any]] | None = None

    def frame_received(self, header: dict[str, Any], body: bytes) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(header)

    def frame_refused(self, error: FrameError) -> None:
        raise error


async def raw_sends(socket_path: str, n: int) -> float:
    """Microseconds per awaited publish of a raw client (no library on top of the frames)."""
    loop = asyncio.get_running_loop()
    writer, client = await loop.create_unix_connection(RawClient, socket_path)
    number = 0

    async def call(header: dict[str, Any], body: bytes = b"") -> dict[str, Any]:
        nonlocal number
        number += 1
        client.answer = loop.create_future()
        writer.write(encode_frame({**header, "id": number}, body))
        return await client.answer

    try:
        await call({"op": "hello", "version": 1})
        await call({"op": "declare", "queue": "send-floor"})
        publish = {"op": "publish", "queue": "send-floor", "m": {"ct": "application/json"}}
        for _ in range(200):
            await call(publish, b"[0]")
        started = time.perf_counter()
        for _ in range(n):
            await call(publish, b"[0]")
        return 1e6 * (time.perf_counter() - started) / n
    finally:
        writer.close()


async def kiwipy_sends(url: str, n: int) -> float:
    """Microseconds per awaited ``task_send`` of our client, with no worker."""
    name = f"send-floor-{os.getpid()}-{time.monotonic_ns()}"
    client = await kiwipy.aio.connect(
        url, testing_mode=True, task_queue=name, task_exchange=name, message_exchange=name
    )
    try:
        for i in range(200):
            await client.task_send(i, no_reply=True)
        started = time.perf_counter()
        for i in range(n):
            await client.task_send(i, no_reply=True)
        return 1e6 * (time.perf_counter() - started) / n
    finally:
        await client.close()


def start_bare(directory: str, fsync: bool) -> subprocess.Popen[str]:
    os.makedirs(directory, mode=0o700)
    command = [sys.executable, __file__, "--serve-bare", directory]
    process = subprocess.Popen(  # noqa: S603 (this script, by our own interpreter)
        [*command, *([] if fsync else ["--no-fsync"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the bare broker did not start")
    return process


def measure(rounds: int, n: int, amqp_url: str) -> dict[str, list[float]]:
    root = tempfile.mkdtemp(prefix="kiwipy-send-floor-")
    local, local_no_poll = os.path.join(root, "local"), os.path.join(root, "local-no-poll")
    bare, bare_no_fsync = os.path.join(root, "bare"), os.path.join(root, "bare-no-fsync")
    servers = [start_bare(bare, fsync=True), start_bare(bare_no_fsync, fsync=False)]
    local_url = f"local://{local}?idle_timeout=60"
    no_poll_url = f"local://{local_no_poll}?idle_timeout=60&poll_us=0"
    figures = {
        "rabbitmq": lambda: 1e6 / asyncio.run(awaited_sends_one_at_a_time(amqp_url, n)),
        "local": lambda: 1e6 / asyncio.run(awaited_sends_one_at_a_time(local_url, n)),
        "local_no_poll": lambda: 1e6 / asyncio.run(awaited_sends_one_at_a_time(no_poll_url, n)),
        "kiwipy_to_bare": lambda: asyncio.run(kiwipy_sends(f"local://{bare}", n)),
        "raw_to_bare": lambda: asyncio.run(raw_sends(os.path.join(bare, "broker.sock"), n)),
        "raw_to_local": lambda: asyncio.run(raw_sends(os.path.join(local, "broker.sock"), n)),
        "raw_to_bare_no_fsync": lambda: asyncio.run(
            raw_sends(os.path.join(bare_no_fsync, "broker.sock"), n)
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in figures}
    try:
        for url in (local_url, no_poll_url):  # spawned, their WAL wrapped
            asyncio.run(awaited_sends_one_at_a_time(url, 1200))
        for _ in range(rounds):
            row = {name: run() for name, run in figures.items()}
            for name, value in row.items():
                results[name].append(value)
            print(
                "  ".join(
                    f"{name} {value:.0f} us ({row['rabbitmq'] / value:.2f})"
                    for name, value in row.items()
                ),
                flush=True,
            )
    finally:
        for server in servers:
            server.communicate(timeout=10)  # closes its stdin: it stops
        stop_broker(local)
        stop_broker(local_no_poll)
        shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--url", default=AMQP_URL, help="the RabbitMQ to compare with")
    parser.add_argument("--serve-bare", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--no-fsync", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_bare:
        asyncio.run(serve_bare(options.serve_bare, fsync=not options.no_fsync))
        return 0
    results = measure(options.rounds, options.n, options.url)
    medians = {name: statistics.median(values) for name, values in results.items()}
    ratios = {
        name: [r / v for r, v in zip(results["rabbitmq"], values, strict=True)]
        for name, values in results.items()
    }
    print("median (us per send, rabbitmq / figure, its range over the rounds):")
    for name, value in medians.items():
        low, high = min(ratios[name]), max(ratios[name])
        ratio = medians["rabbitmq"] / value
        print(f"  {name:<22}{value:8.0f}   {ratio:5.2f}  {low:.2f}-{high:.2f}")
    print(json.dumps({"rounds": options.rounds, "n": options.n, "us": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
