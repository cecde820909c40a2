"""The ``kiwipy`` command: click commands and the entry point that keeps errors to one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

import kiwipy
from kiwipy.cli._common import (
    BadInput,
    CliError,
    ConnectionOptions,
    configure_logging,
    connection_options,
    dump_json,
    read_json_argument,
)
from kiwipy.cli._tools import broker, demo, policy, top, watch
from kiwipy.exceptions import ConnectionLost

__all__ = ("cli", "main")

from kiwipy.cli._common import CONTEXT as _CONTEXT


@click.group(context_settings=_CONTEXT)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: also the AMQP client's).")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Broker URL for the command that follows (its own --url wins).",
)
@click.version_option(package_name="kiwipy", prog_name="kiwipy")
def cli(verbose: int, url: str | None) -> None:
    """kiwipy: tasks, RPC and broadcasts over RabbitMQ, from the terminal.

    Every command takes --url (default: $KIWIPY_URL, else local://, the local broker).
    Start with `kiwipy demo`.
    """
    del url  # read by each command's --url default
    configure_logging(verbose)


# -- worker ------------------------------------------------------------------------------------


@cli.command(context_settings=_CONTEXT)
@click.argument("function", metavar="MODULE:FUNCTION")
@click.option("--queue", "-q", "queue_name", metavar="QUEUE", help="Task queue to consume.")
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks held from the broker at once  [default: --concurrency].",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tasks run at the same time (threads).",
)
@click.option(
    "--name",
    default=None,
    help="Answer the RPCs 'pause', 'play' and 'status' at this identifier; also the sender "
    "of --events broadcasts.",
)
@click.option(
    "--events",
    is_flag=True,
    help="Broadcast task.<id>.started / task.<id>.finished for every task.",
)
@click.option("--quiet", is_flag=True, help="Do not print a line per task.")
@click.option(
    "--metrics-port",
    default=None,
    metavar="[ADDR:]PORT",
    help="Serve Prometheus metrics at http://ADDR:PORT/metrics (needs kiwipy[prometheus]).",
)
@connection_options
def worker(
    function: str,
    queue_name: str | None,
    prefetch: int | None,
    concurrency: int,
    name: str | None,
    events: bool,
    quiet: bool,
    metrics_port: str | None,
    connection: ConnectionOptions,
) -> int:
    """Run a task worker in the foreground.

    Each task's body is passed to FUNCTION(communicator, task) (or FUNCTION(task) when it takes
    one argument); its return value is the task's result, an exception its error.

    Ctrl-C or SIGTERM drains: the worker takes no new task, finishes the tasks it runs (their
    senders get the results), gives back the ones it holds but has not started, and exits 0.
    A second signal stops at once (the broker requeues whatever was not acknowledged).
    """
    from kiwipy.cli._worker import load_function
    from kiwipy.worker import Worker

    try:
        task_function = load_function(function)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    prefetch = prefetch or concurrency
    if metrics_port is not None:
        from kiwipy.cli._top import serve_metrics

        click.echo(f"metrics at {serve_metrics(metrics_port)}")
    communicator = connection.connect(task_prefetch_count=prefetch)
    try:
        queue = queue_name or communicator.settings.task_queue

        def say(line: str) -> None:
            if not quiet:
                click.echo(f"{worker_.name}: {line}")

        worker_ = Worker(
            communicator,
            task_function,
            queue=queue,
            prefetch=prefetch,
            concurrency=concurrency,
            name=name,
            events=events,
            on_event=say,
        )
        click.echo(
            f"{worker_.name}: working on queue '{queue}' at {connection.masked_url} "
            f"(concurrency {concurrency}, prefetch {prefetch}); Ctrl-C or SIGTERM drains and stops"
        )
        try:
            drained = worker_.run()
        except ConnectionLost as exc:
            raise CliError(str(exc)) from None
        status = worker_.status()
        click.echo(
            f"{worker_.name}: stopped: {status['done']} done, {status['failed']} failed, "
            f"{status['requeued']} given back to the queue"
        )
    finally:
        communicator.close()
    return 0 if drained else 1


# -- sending -----------------------------------------------------------------------------------


def _timeout(seconds: float) -> float | None:
    return None if seconds <= 0 else seconds


@cli.command(context_settings=_CONTEXT)
@click.argument("body", metavar="JSON")
@click.option("--queue", "-q", "queue_name", metavar="QUEUE", help="Task queue to send to.")
@click.option("--no-reply", is_flag=True, help="Do not wait for the result.")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the result (0: forever).",
)
@click.option(
    "--verbose", "-v", is_flag=True, help="When the task fails, print the remote traceback."
)
@connection_options
def send(
    body: str,
    queue_name: str | None,
    no_reply: bool,
    timeout: float,
    verbose: bool,
    connection: ConnectionOptions,
) -> int:
    """Send a task (its body is JSON; - reads it from stdin) and print its result as JSON.

    The task is on the broker's disk when the send returns (publisher confirm).
    Example: kiwipy send --queue work '{"x": 1}'
    """
    task = read_json_argument(body)
    with connection.connect() as communicator:
        queue = (
            communicator.task_queue(queue_name)
            if queue_name
            else communicator.task_queue(communicator.settings.task_queue)
        )
        future = queue.task_send(task, no_reply, deadline=_timeout(timeout))
        if future is None:
            click.echo(f"sent to queue '{queue.name}' (confirmed by the broker, no reply asked)")
            return 0
        try:
            result = future.result()
        except kiwipy.RemoteException as exc:
            if verbose and exc.remote_traceback:
                click.echo("The task's remote traceback:", err=True)
                click.echo(exc.remote_traceback.rstrip("\n"), err=True)
            raise
        click.echo(dump_json(result))
    return 0


@cli.command(context_settings=_CONTEXT)
@click.argument("identifier", metavar="ID")
@click.argument("body", metavar="JSON")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the answer (0: forever).",
)
@connection_options
def call(identifier: str, body: str, timeout: float, connection: ConnectionOptions) -> int:
    """Send an RPC to ID (message: JSON; - reads it from stdin) and print the answer as JSON.

    Fails at once when nobody listens at ID. Example: kiwipy call demo-worker-1 '"status"'
    """
    message = read_json_argument(body)
    with connection.connect() as communicator:
        future = communicator.rpc_send(identifier, message, deadline=_timeout(timeout))
        click.echo(dump_json(future.result()))
    return 0


@cli.command(context_settings=_CONTEXT)
@click.argument("body", metavar="JSON")
@click.option("--subject", default=None, help="Subject of the broadcast.")
@click.option("--sender", default=None, help="Sender of the broadcast.")
@connection_options
def broadcast(
    body: str, subject: str | None, sender: str | None, connection: ConnectionOptions
) -> int:
    """Send a broadcast (body: JSON; - reads it from stdin) to every subscriber.

    Example: kiwipy broadcast --subject state.done --sender me '{"pk": 3}'
    """
    message = read_json_argument(body)
    with connection.connect() as communicator:
        communicator.broadcast_send(message, sender=sender, subject=subject)
    click.echo("broadcast sent")
    return 0


# -- watch -------------------------------------------------------------------------------------


@cli.command(context_settings=_CONTEXT)
@click.option(
    "--queue",
    "-q",
    "queue_names",
    multiple=True,
    metavar="QUEUE",
    help="Also show this task queue (repeatable).",
)
@click.option(
    "--worker",
    "-w",
    "worker_names",
    multiple=True,
    metavar="NAME",
    help="Also show the worker started with --name NAME: working, paused or draining, and its "
    "counts (repeatable).",
)
@connection_options
def status(
    queue_names: Sequence[str], worker_names: Sequence[str], connection: ConnectionOptions
) -> int:
    """Show the broker, its consumer_timeout, the task queues' counts and named workers."""
    from kiwipy.cli._inspect import show_status

    show_status(connection, list(queue_names), list(worker_names))
    return 0


@cli.group(context_settings=_CONTEXT)
def tasks() -> None:
    """Look at the tasks waiting in a queue, or remove them."""


@tasks.command("list", context_settings=_CONTEXT)
@click.option("--queue", "-q", "queue_name", metavar="QUEUE", help="Task queue to read.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Show at most."
)
@connection_options
def tasks_list(queue_name: str | None, limit: int, connection: ConnectionOptions) -> int:
    """Show the tasks waiting in a queue (bodies and headers) and the broker's counts.

    The tasks are read and put back unchanged in content, but AMQP marks a message it gave out
    and took back as redelivered. An undecodable message is dead-lettered by the read.
    """
    from kiwipy.cli._inspect import list_tasks

    list_tasks(connection, queue_name, limit)
    return 0


@tasks.command("purge", context_settings=_CONTEXT)
@click.option("--queue", "-q", "queue_name", metavar="QUEUE", required=True, help="Task queue.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def tasks_purge(queue_name: str, yes: bool, connection: ConnectionOptions) -> int:
    """Remove every task waiting in QUEUE; their senders get an error reply (TaskPurged)."""
    from kiwipy.cli._inspect import purge_tasks

    if not yes:
        click.confirm(
            f"Remove every task waiting in queue '{queue_name}' at {connection.masked_url}?",
            abort=True,
        )
    purge_tasks(connection, queue_name)
    return 0


for _command in (watch, top, demo, policy, broker):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None, prog_name: str = "kiwipy") -> int:
    """Run the ``kiwipy`` command; expected failures print one line and return non-zero."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog_name
        message = " ".join(exc.format_message().split())
        click.echo(f"{where}: error: {message} (see '{where} --help')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"{prog_name}: error: {' '.join(exc.format_message().split())}", err=True)
        return exc.exit_code
    except click.Abort:
        click.echo(f"{prog_name}: aborted", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo(f"{prog_name}: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0
