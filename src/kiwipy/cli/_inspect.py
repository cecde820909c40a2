"""``kiwipy status`` and ``kiwipy tasks``: look inside the broker with the client's means."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from kiwipy.cli._broker import CountsReport, queue_counts
from kiwipy.cli._common import BadInput, ConnectionOptions, dump_json
from kiwipy.exceptions import KiwipyError
from kiwipy.settings import mask_url

if TYPE_CHECKING:
    from kiwipy.sync import Communicator

__all__ = ("TaskPurged", "list_tasks", "purge_tasks", "require_queue", "show_status")


class TaskPurged(KiwipyError):
    """The task was removed from its queue by ``kiwipy tasks purge``."""


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _counts_table(report: CountsReport) -> Table:
    table = Table(title=f"Task queues (counts from {report.source})", title_justify="left")
    table.add_column("queue")
    table.add_column("ready", justify="right")
    table.add_column("unacknowledged", justify="right")
    table.add_column("consumers", justify="right")

    def cell(value: int | None) -> str:
        return "?" if value is None else str(value)

    for counts in report.queues:
        if not counts.exists:
            table.add_row(counts.name, "-", "-", "-", end_section=False)
            continue
        table.add_row(
            counts.name,
            cell(counts.ready),
            cell(counts.unacknowledged),
            cell(counts.consumers),
        )
    return table


def _print_counts(console: Console, report: CountsReport) -> None:
    if report.source is None:
        console.print(f"Queue counts: {report.note}")
        return
    console.print(_counts_table(report))
    if any(not counts.exists for counts in report.queues):
        console.print("('-': no such queue on the broker)")


def show_status(connection: ConnectionOptions, extra_queues: list[str]) -> None:
    console = _console()
    with connection.connect() as communicator:
        transport: Any = communicator.asyncio_communicator.transport
        properties = communicator.server_properties
        product = properties.get("product", "unknown broker")
        version = properties.get("version", "unknown version")
        console.print(f"Broker: reachable at {connection.masked_url}")
        console.print(f"Server: {product} {version}")
        if properties.get("cluster_name"):
            console.print(f"Cluster: {properties['cluster_name']}")
        limit: float | None = getattr(transport, "consumer_timeout", None)
        asked = communicator.settings.consumer_timeout
        if communicator.settings.scheme == "memory":
            console.print("consumer_timeout: none (in-memory transport)")
        elif limit is None:
            console.print("consumer_timeout: none: tasks may run as long as they need")
        else:
            where = (
                "set per consumer by kiwipy"
                if asked is not None
                else "the default of this RabbitMQ version; rabbitmq.conf may set another, "
                "which a client cannot read"
            )
            console.print(f"consumer_timeout: {_duration(limit)} ({where})")
            console.print(
                f"[yellow]warning:[/yellow] a task running longer than {_duration(limit)} is "
                "taken back by the broker and given to another worker. For longer tasks set "
                "consumer_timeout in rabbitmq.conf (milliseconds), or kiwipy's consumer_timeout "
                "option on RabbitMQ 3.11.15 and later."
            )
        names = [communicator.settings.task_queue, *extra_queues]
    _print_counts(console, queue_counts(connection.url, names))


_CHECK_TIMEOUT = 15.0


def require_queue(communicator: Communicator, name: str) -> None:
    """Raise :class:`BadInput` when the broker has no queue ``name``: inspection must not
    change the broker, and reading a queue through the client would declare it.

    On RabbitMQ this is a passive declare (it creates nothing). The in-memory and local
    transports declare nothing a user could see later, so they are not checked.
    """
    if communicator.settings.scheme not in ("amqp", "amqps"):
        return
    transport: Any = communicator.asyncio_communicator.transport
    queue_exists = getattr(transport, "queue_exists", None)
    if queue_exists is None:
        return  # a transport that cannot check passively

    async def exists() -> bool:
        return bool(await queue_exists(name))

    future = asyncio.run_coroutine_threadsafe(exists(), communicator.loop())
    if not future.result(timeout=_CHECK_TIMEOUT):
        raise BadInput(
            f"No queue '{name}' at {mask_url(communicator.settings.url)} (nothing was created; "
            "check the name and --exchange-prefix)"
        )


def _headers_of(task: Any) -> dict[str, Any]:
    """The AMQP headers of a task taken with the pull API (not public API: best effort)."""
    delivery = getattr(getattr(task, "_task", None), "_delivery", None)
    headers = getattr(getattr(delivery, "message", None), "headers", None)
    return dict(headers) if headers else {}


def list_tasks(connection: ConnectionOptions, queue_name: str | None, limit: int) -> None:
    console = _console()
    with connection.connect() as communicator:
        name = queue_name or communicator.settings.task_queue
        require_queue(communicator, name)
        queue = communicator.task_queue(name)
        table = Table(title=f"Tasks waiting in queue '{name}'", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("redelivered")
        table.add_column("reply")
        table.add_column("body", overflow="fold")
        table.add_column("headers", overflow="fold")
        shown = 0
        more = False
        for task in queue:
            if shown >= limit:
                more = True
                break
            shown += 1
            headers = _headers_of(task)
            table.add_row(
                str(shown),
                "yes" if task.redelivered else "no",
                "no" if task.no_reply else "yes",
                dump_json(task.body),
                dump_json(headers) if headers else "",
            )
        # Leaving the loop put every task back (requeued, unchanged in content).
        if shown == 0:
            console.print(f"Queue '{name}' is empty.")
        else:
            console.print(table)
            if more:
                console.print(f"(showing the first {limit}; --limit shows more)")
            console.print(
                f"The {shown} task(s) were read and put back unchanged; the broker now marks "
                "them redelivered (AMQP does that for any message it gave out and took back)."
            )
    _print_counts(console, queue_counts(connection.url, [name]))


def purge_tasks(connection: ConnectionOptions, queue_name: str) -> None:
    purged = 0
    # A purged task without a reply address would log "Task without reply failed" each.
    logging.getLogger("kiwipy.aio._incoming").setLevel(logging.ERROR)
    with connection.connect() as communicator:
        require_queue(communicator, queue_name)
        queue = communicator.task_queue(queue_name)
        for task in queue:
            with task.processing() as outcome:
                outcome.set_exception(TaskPurged(f"Purged from queue '{queue_name}'"))
            purged += 1
    click.echo(
        f"Purged {purged} task(s) from queue '{queue_name}' at {mask_url(connection.url)}"
        + (" (their senders got a TaskPurged error)" if purged else "")
    )
