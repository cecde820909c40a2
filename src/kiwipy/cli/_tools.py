"""The commands that watch or run the system: watch, top, demo, policy, broker."""

from __future__ import annotations

import datetime
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import click

from kiwipy.broker._poll import DEFAULT_POLL_US, MAX_POLL_US
from kiwipy.cli._common import CONTEXT as _CONTEXT
from kiwipy.cli._common import ConnectionOptions, connection_options, dump_json
from kiwipy.filters import BroadcastFilter

__all__ = ("broker", "demo", "policy", "top", "watch")


@click.command(context_settings=_CONTEXT)
@click.option("--subject", default=None, metavar="PATTERN", help="Only subjects matching (glob).")
@click.option("--sender", default=None, metavar="PATTERN", help="Only senders matching (glob).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop after COUNT broadcasts."
)
@click.option(
    "--for",
    "duration",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Stop after this long.",
)
@connection_options
def watch(
    subject: str | None,
    sender: str | None,
    as_json: bool,
    count: int | None,
    duration: float | None,
    connection: ConnectionOptions,
) -> int:
    """Print broadcasts as they arrive, one line each (like tail -f); Ctrl-C stops.

    PATTERNs are globs: '*' matches any run of characters, e.g. --subject 'task.*.finished'.
    """
    stop = threading.Event()
    seen = 0
    lock = threading.Lock()

    def on_broadcast(
        _communicator: Any, body: Any, sender_: Any, subject_: Any, correlation_id: Any
    ) -> None:
        nonlocal seen
        now = datetime.datetime.now()
        with lock:
            if stop.is_set():
                return
            if as_json:
                record = {
                    "time": now.isoformat(timespec="milliseconds"),
                    "subject": subject_,
                    "sender": sender_,
                    "correlation_id": correlation_id,
                    "body": body,
                }
                click.echo(dump_json(record))
            else:
                click.echo(
                    f"{now:%H:%M:%S.%f}"[:-3]
                    + f"  {subject_ if subject_ is not None else '-'}"
                    + f"  from {sender_ if sender_ is not None else '-'}: {dump_json(body)}"
                )
            seen += 1
            if count is not None and seen >= count:
                stop.set()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with connection.connect() as communicator:
            communicator.add_broadcast_subscriber(
                BroadcastFilter(on_broadcast, subject=subject, sender=sender)
            )
            click.echo(f"watching broadcasts at {connection.masked_url} (Ctrl-C stops)", err=True)
            deadline = None if duration is None else time.monotonic() + duration
            while not stop.wait(0.2):
                if deadline is not None and time.monotonic() >= deadline:
                    break
            stop.set()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


# -- status and tasks --------------------------------------------------------------------------


@click.command(context_settings=_CONTEXT)
@click.option("--queue", "-q", "queue_names", multiple=True, metavar="QUEUE", help="Show QUEUE.")
@click.option("--worker", "-w", "workers", multiple=True, metavar="NAME", help="Ask NAME.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@click.option("--iterations", "-n", type=click.IntRange(min=1), default=None, help="Then stop.")
@connection_options
def top(
    queue_names: Sequence[str],
    workers: Sequence[str],
    interval: float,
    iterations: int | None,
    connection: ConnectionOptions,
) -> int:
    """Live view of task queues, workers and recent failures; Ctrl-C stops.

    Workers are the --worker names plus the senders of task.* broadcasts (kiwipy worker
    --name NAME --events); each answers the 'status' RPC. See docs/observability.md.
    """
    from kiwipy.cli._top import run_top

    return run_top(connection, list(queue_names), list(workers), interval, iterations)


# -- demo --------------------------------------------------------------------------------------


@click.command(context_settings=_CONTEXT)
@click.option("--tasks", "n_tasks", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--task-seconds",
    type=click.FloatRange(min=0.05),
    default=0.4,
    show_default=True,
    help="How long each task works.",
)
@connection_options
def demo(n_tasks: int, workers: int, task_seconds: float, connection: ConnectionOptions) -> int:
    """Watch kiwipy keep its promise: worker processes, a pause by RPC, a SIGKILL, no task lost.

    Starts WORKERS worker processes, sends TASKS tasks, pauses and resumes one worker by RPC,
    follows the workers' broadcasts, SIGKILLs one worker in the middle of a task and proves with
    the numbers that every task completed. Without a broker, runs in memory (threads, no kill).
    """
    from kiwipy.cli._demo import run_demo

    return run_demo(connection, tasks=n_tasks, workers=workers, task_seconds=task_seconds)


# -- entry point -------------------------------------------------------------------------------


@click.command(context_settings=_CONTEXT)
@click.option("--queue", "-q", "queue_name", default="kiwipy.tasks", show_default=True)
@click.option("--dead-letter-queue", default=None, help="Default: QUEUE.dead.")
@click.option("--delivery-limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--vhost", default="/", show_default=True)
@click.option("--apply", is_flag=True, help="Run it with rabbitmqctl (on the broker's machine).")
def policy(
    queue_name: str, dead_letter_queue: str | None, delivery_limit: int, vhost: str, apply: bool
) -> int:
    """Print (or apply) the RabbitMQ policy for poison tasks: delivery limit and dead-lettering.

    A policy applies to an existing queue without changing its declaration, so kiwipy 0.9
    peers keep working. The delivery limit counts on quorum queues.
    """
    from kiwipy.cli._policy import PoisonPolicy, apply_policy

    chosen = PoisonPolicy(
        queue_name, dead_letter_queue or f"{queue_name}.dead", delivery_limit, vhost
    )
    click.echo(chosen.command())
    if apply:
        try:
            click.echo(apply_policy(chosen))
        except (OSError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from exc
    return 0


@click.command(context_settings=_CONTEXT)
@click.option("--dir", "directory", metavar="DIR", help="State directory (default: local://'s).")
@click.option("--idle-timeout", type=float, default=0.0, show_default=True, help="0: never.")
@click.option("--durability", type=click.Choice(["full", "process"]), default="full")
@click.option(
    "--poll-us",
    type=click.IntRange(0, MAX_POLL_US),
    default=DEFAULT_POLL_US,
    show_default=True,
    help="Microseconds to poll before sleeping while frames come that close (0: never).",
)
def broker(directory: str | None, idle_timeout: float, durability: str, poll_us: int) -> int:
    """Run the local broker (local://) in the foreground, e.g. under a supervisor.

    Clients start one themselves when none runs; this is for those who want it supervised.
    """
    from kiwipy.broker import main as broker_main

    arguments = ["--idle-timeout", str(idle_timeout), "--durability", durability]
    arguments += ["--poll-us", str(poll_us)]
    return broker_main([*arguments, *(["--dir", directory] if directory else [])])
