"""``kiwipy top``: queues, workers and recent failures, live in the terminal.

Where the numbers come from:

* queues (ready, unacknowledged, consumers): RabbitMQ's management API or ``rabbitmqctl``
  (:mod:`kiwipy.cli._broker`), read on a thread of their own since ``rabbitmqctl`` takes a
  second or more; on the in-memory transport, the broker of this process.
* workers: each answers the ``"status"`` RPC at its ``--name`` (``kiwipy worker``). Workers are
  the ``--worker`` names plus every sender of ``task.*`` broadcasts (``kiwipy worker
  --events``) seen since ``top`` started.
* rates: the management API's (publish and ack rates) when it answers; otherwise, per second
  over the last refresh, *out* is the tasks the workers of the queue ended (done + failed,
  from their statuses) and *in* is out plus the growth of the queue.
* recent failures: the ``task.<id>.failed`` broadcasts of workers with ``--events``.

Also ``--metrics-port`` of ``kiwipy worker`` (:func:`serve_metrics`).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import threading
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

import kiwipy
from kiwipy.cli._broker import CountsReport, QueueCounts, queue_counts
from kiwipy.cli._common import CliError, ConnectionOptions
from kiwipy.filters import BroadcastFilter
from kiwipy.settings import mask_url

__all__ = ("Top", "run_top", "serve_metrics")

#: How long one status RPC may take before the worker shows as "no answer".
_STATUS_DEADLINE_S = 1.0
_FAILURES_SHOWN = 8


def serve_metrics(spec: str) -> str:
    """Count this process's messages in Prometheus metrics served at ``[ADDR:]PORT``."""
    addr, _, port = spec.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise CliError(f"--metrics-port: expected [ADDR:]PORT, got {spec!r}") from None
    try:
        from kiwipy.observe import prometheus
    except ImportError as exc:
        raise CliError(
            f"--metrics-port needs prometheus-client ({exc}): pip install 'kiwipy[prometheus]'"
        ) from exc
    kiwipy.observe.add_listener(prometheus.Metrics())
    try:
        server = prometheus.serve(number, addr or "0.0.0.0")  # noqa: S104
    except OSError as exc:
        raise CliError(f"Cannot serve metrics on {spec}: {exc}") from exc
    return f"http://{addr or '0.0.0.0'}:{server.server_port}/metrics"  # noqa: S104


@dataclasses.dataclass(frozen=True)
class Failure:
    at: datetime.datetime
    worker: str
    task_id: Any
    error: str


@dataclasses.dataclass
class WorkerRow:
    name: str
    status: dict[str, Any] | None  # None: no answer
    state: str
    rate: float | None = None


@dataclasses.dataclass
class QueueRow:
    counts: QueueCounts
    rate_in: float | None = None
    rate_out: float | None = None


@dataclasses.dataclass
class Snapshot:
    at: datetime.datetime
    source: str | None
    note: str
    queues: list[QueueRow]
    workers: list[WorkerRow]
    failures: list[Failure]


class _Counts:
    """The latest queue counts, read again and again on a daemon thread (rabbitmqctl is slow)."""

    def __init__(self, url: str, names: Any) -> None:
        self._url = url
        self._names = names  # a callable giving the names to count now
        self.latest: CountsReport | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiwipy-top-counts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.latest = queue_counts(self._url, self._names())
            # rabbitmqctl starts an Erlang VM each time (a second of CPU): pause as long as it
            # took, so that top never keeps a core busy with it.
            self._stop.wait(max(1.0, time.monotonic() - started))

    def stop(self) -> None:
        self._stop.set()


class Top:
    """What ``kiwipy top`` shows, sampled with a blocking communicator."""

    def __init__(
        self,
        communicator: kiwipy.sync.Communicator,
        url: str,
        queues: Iterable[str] = (),
        workers: Iterable[str] = (),
    ) -> None:
        self._comm = communicator
        self._url = url
        self._lock = threading.Lock()
        self._queues = list(dict.fromkeys(queues)) or [communicator.settings.task_queue]
        self._workers: dict[str, None] = dict.fromkeys(workers)
        self._failures: collections.deque[Failure] = collections.deque(maxlen=_FAILURES_SHOWN)
        self._last_done: dict[str, tuple[float, int]] = {}
        self._last_depth: dict[str, tuple[float, int]] = {}
        self._memory = urllib.parse.urlsplit(url).scheme == "memory"
        self._counts = None if self._memory else _Counts(url, self.queue_names)
        communicator.add_broadcast_subscriber(BroadcastFilter(self._on_event, subject="task.*"))

    def close(self) -> None:
        if self._counts is not None:
            self._counts.stop()

    def queue_names(self) -> list[str]:
        with self._lock:
            return list(self._queues)

    def _on_event(self, _comm: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
        parts = str(subject).split(".")
        if sender is None or len(parts) < 3:
            return
        with self._lock:
            self._workers.setdefault(str(sender), None)
            if parts[-1] == "failed":
                error = body.get("error", "?") if isinstance(body, dict) else repr(body)
                task_id = body.get("id") if isinstance(body, dict) else ".".join(parts[1:-1])
                now = datetime.datetime.now()
                self._failures.appendleft(Failure(now, str(sender), task_id, str(error)))

    # -- sampling --------------------------------------------------------------------------------

    def sample(self) -> Snapshot:
        workers = self._sample_workers()
        source, note, counts = self._queue_counts()
        now = time.monotonic()
        rows = []
        for queue in counts:
            done = [row.status for row in workers if _serves(row.status, queue.name)]
            out = self._rate(self._last_done, queue.name, now, sum(map(_ended, done)))
            rows.append(QueueRow(queue, None, out))
            if queue.ready is not None and queue.unacknowledged is not None:
                depth = queue.ready + queue.unacknowledged
                growth = self._rate(self._last_depth, queue.name, now, depth, allow_negative=True)
                if growth is not None and out is not None:
                    rows[-1].rate_in = max(0.0, out + growth)
            if queue.rate_in is not None or queue.rate_out is not None:  # the broker's own
                rows[-1].rate_in, rows[-1].rate_out = queue.rate_in, queue.rate_out
        with self._lock:
            failures = list(self._failures)
        return Snapshot(datetime.datetime.now(), source, note, rows, workers, failures)

    def _sample_workers(self) -> list[WorkerRow]:
        with self._lock:
            names = list(self._workers)
        asked: dict[str, Any] = {}
        for name in names:
            try:
                asked[name] = self._comm.rpc_send(name, "status", deadline=_STATUS_DEADLINE_S)
            except kiwipy.UnroutableError:
                asked[name] = None
            except kiwipy.KiwipyError as exc:
                asked[name] = exc
        now = time.monotonic()
        rows = []
        for name, future in asked.items():
            rows.append(self._worker_row(name, future, now))
        with self._lock:
            known = set(self._queues)
            self._queues += [
                row.status["queue"]
                for row in rows
                if row.status and row.status.get("queue") not in known
            ]
            self._queues = list(dict.fromkeys(self._queues))
        return rows

    def _worker_row(self, name: str, future: Any, now: float) -> WorkerRow:
        if future is None:
            return WorkerRow(name, None, "gone")
        if isinstance(future, BaseException):
            return WorkerRow(name, None, "no answer")
        try:
            status = future.result(timeout=_STATUS_DEADLINE_S + 0.5)
        except Exception:
            return WorkerRow(name, None, "no answer")
        if not isinstance(status, dict):
            return WorkerRow(name, None, "no answer")
        state = "draining" if status.get("draining") else "paused" if status.get("paused") else ""
        state = state or ("busy" if status.get("running") else "idle")
        rate = self._rate(self._last_done, f"worker:{name}", now, _ended(status))
        return WorkerRow(name, status, state, rate)

    def _queue_counts(self) -> tuple[str | None, str, list[QueueCounts]]:
        names = self.queue_names()
        if self._memory:
            from kiwipy.transports.memory import get_broker

            broker = get_broker(urllib.parse.urlsplit(self._url).netloc)
            counts = [(name, broker.queue_counts(name)) for name in names]
            found = [
                QueueCounts(name, *numbers) if numbers else QueueCounts(name, *_NONE, exists=False)
                for name, numbers in counts
            ]
            return "in-memory broker of this process", "", found
        report = self._counts.latest if self._counts is not None else None
        if report is None:
            return None, "reading the queue counts...", []
        return report.source, report.note, report.queues

    @staticmethod
    def _rate(
        last: dict[str, tuple[float, int]],
        key: str,
        now: float,
        value: int,
        allow_negative: bool = False,
    ) -> float | None:
        previous = last.get(key)
        last[key] = (now, value)
        if previous is None or now <= previous[0]:
            return None
        rate = (value - previous[1]) / (now - previous[0])
        return rate if allow_negative else max(0.0, rate)


_NONE = (None, None, None)


def _ended(status: dict[str, Any] | None) -> int:
    if not status:
        return 0
    return int(status.get("done", 0)) + int(status.get("failed", 0))


def _serves(status: dict[str, Any] | None, queue: str) -> bool:
    return bool(status) and status is not None and status.get("queue") == queue


# -- rendering -----------------------------------------------------------------------------------


def _cell(value: int | None) -> str:
    return "?" if value is None else str(value)


def _rate_cell(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}/s"


def render(snapshot: Snapshot, url: str) -> RenderableType:
    source = snapshot.source or "unavailable"
    title = f"kiwipy top — {mask_url(url)} — {snapshot.at:%H:%M:%S}"
    queues = Table(title=f"Queues (counts: {source})", title_justify="left", expand=False)
    for column in ("queue", "ready", "unacked", "consumers", "in", "out"):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for row in snapshot.queues:
        counts = row.counts
        if not counts.exists:
            queues.add_row(counts.name, "-", "-", "-", "-", "-")
            continue
        queues.add_row(
            counts.name,
            _cell(counts.ready),
            _cell(counts.unacknowledged),
            _cell(counts.consumers),
            _rate_cell(row.rate_in),
            _rate_cell(row.rate_out),
        )
    workers = Table(title="Workers", title_justify="left")
    for column in ("worker", "queue", "state", "running", "done", "failed", "requeued", "rate"):
        workers.add_column(column, justify="left" if column in ("worker", "queue") else "right")
    for worker in snapshot.workers:
        status = worker.status or {}
        workers.add_row(
            worker.name,
            str(status.get("queue", "-")),
            worker.state,
            *(str(status.get(key, "-")) for key in ("running", "done", "failed", "requeued")),
            _rate_cell(worker.rate) if worker.status else "-",
        )
    parts: list[RenderableType] = [Text(title, style="bold"), queues]
    if snapshot.note:
        parts.append(Text(snapshot.note, style="yellow"))
    parts.append(workers)
    if not snapshot.workers:
        parts.append(Text("(no worker yet: give --worker NAME, or run workers with --events)"))
    failures = Table(title="Recent failures", title_justify="left")
    for column in ("time", "worker", "task", "error"):
        failures.add_column(column, overflow="fold" if column == "error" else "ellipsis")
    for failure in snapshot.failures:
        when = f"{failure.at:%H:%M:%S}"
        failures.add_row(when, failure.worker, str(failure.task_id), failure.error)
    parts.append(failures if snapshot.failures else Text("Recent failures: none"))
    return Group(*parts)


def run_top(
    connection: ConnectionOptions,
    queues: list[str],
    workers: list[str],
    interval: float,
    iterations: int | None,
) -> int:
    console = Console(highlight=False)
    with connection.connect() as communicator:
        top = Top(communicator, connection.url, queues, workers)
        shown = 0
        try:
            with Live(console=console, auto_refresh=False, transient=False) as live:
                while iterations is None or shown < iterations:
                    started = time.monotonic()
                    live.update(render(top.sample(), connection.url), refresh=True)
                    shown += 1
                    if iterations is not None and shown >= iterations:
                        break
                    time.sleep(max(0.0, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            pass
        finally:
            top.close()
    return 0
