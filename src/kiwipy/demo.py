"""A short tour: a worker and a client exchange tasks, an RPC and broadcasts.

Run it with ``python -m kiwipy.demo [URL]``. When no RabbitMQ answers at the URL (default
``$KIWIPY_URL`` or the local broker), it says so and runs on the in-memory transport.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
import uuid
from typing import Any

import kiwipy.sync
from kiwipy.exceptions import ConnectionLost
from kiwipy.filters import BroadcastFilter
from kiwipy.settings import DEFAULT_URL, mask_url

__all__ = ("main",)

_PRINT_LOCK = threading.Lock()


def say(*parts: Any) -> None:
    """Print one whole line even when several threads talk at once."""
    with _PRINT_LOCK:
        print(*parts, flush=True)


def _options() -> dict[str, Any]:
    prefix = f"kiwipy-demo-{uuid.uuid4().hex[:8]}"
    return {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.tasks",
        "testing_mode": True,  # everything the demo declares expires after it
    }


def _connect_pair(url: str) -> tuple[kiwipy.sync.Communicator, kiwipy.sync.Communicator, str]:
    options = _options()
    try:
        worker = kiwipy.sync.connect(url, connection_timeout=3.0, **options)
    except ConnectionLost as exc:
        say(f"No RabbitMQ answered at {mask_url(url)} ({exc}).")
        say(
            "  To start one on Debian: sudo apt-get install rabbitmq-server "
            "&& sudo rabbitmq-server -detached"
        )
        say("  Running the demo on the in-memory transport instead (one process).")
        url = f"memory://demo-{uuid.uuid4().hex[:8]}"
        worker = kiwipy.sync.connect(url, **options)
    client = kiwipy.sync.connect(url, **options)
    return worker, client, url


def _run_worker(worker: kiwipy.sync.Communicator, name: str) -> None:
    processed = []

    def square(comm: kiwipy.sync.Communicator, task: int) -> int:
        processed.append(task)
        say(f"  worker: got task {task}, returning {task * task}")
        comm.broadcast_send({"task": task}, sender=name, subject=f"task.{task}.done")
        return task * task

    def status(comm: kiwipy.sync.Communicator, msg: Any) -> dict[str, Any]:
        return {"worker": name, "asked": msg, "processed": len(processed)}

    worker.add_task_subscriber(square)
    worker.add_rpc_subscriber(status, name)


def _run_client(client: kiwipy.sync.Communicator, name: str, count: int) -> None:
    heard: list[str] = []
    all_heard = threading.Event()

    def on_done(comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
        heard.append(subject)
        say(f"  client: broadcast '{subject}' from {sender}")
        if len(heard) == count:
            all_heard.set()

    client.add_broadcast_subscriber(BroadcastFilter(on_done, subject="task.*.done"))
    say(f"client: sending {count} tasks (confirmed by the broker when task_send_many returns)")
    futures = client.task_send_many(range(1, count + 1))
    results = [future.result(timeout=30) for future in futures if future is not None]
    say(f"client: results {results}")
    answer = client.rpc_send(name, "how are you?").result(timeout=30)
    say(f"client: RPC answer from {name}: {answer}")
    all_heard.wait(timeout=10)
    say(f"client: heard {len(heard)} broadcasts through a filter on 'task.*.done'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiwipy.demo", description=__doc__)
    parser.add_argument("url", nargs="?", default=os.environ.get("KIWIPY_URL", DEFAULT_URL))
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args(argv)
    # The AMQP client logs its own connection failures; the demo reports them in one line.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    started = time.monotonic()
    worker, client, url = _connect_pair(args.url)
    with worker, client:
        say(f"Connected worker and client to {mask_url(url)}")
        _run_worker(worker, "worker-1")
        _run_client(client, "worker-1", args.tasks)
    say(f"Done in {time.monotonic() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
