"""Prometheus metrics for kiwipy (extra ``prometheus``: ``pip install 'kiwipy[prometheus]'``).

::

    metrics = kiwipy.observe.prometheus.Metrics()   # in prometheus_client's default registry
    kiwipy.observe.add_listener(metrics)
    kiwipy.observe.prometheus.serve(9100)             # http://HOST:9100/metrics

``kiwipy worker --metrics-port 9100`` does both. Labels: ``kind`` (``task``, ``rpc``,
``broadcast``) and ``destination`` (the task queue; empty for broadcasts, and for RPC unless
``rpc_identifiers=True``, as identifiers are often one per process: a label per identifier
would grow without bound). The metrics (names without the ``kiwipy_`` prefix):

============================  ==========  ====================================================
``sent_total``                counter     messages the broker confirmed
``send_failures_total``       counter     publishes that failed (unroutable, link lost, ...)
``confirm_seconds``           histogram   publish to confirm
``sends_in_flight``           gauge       publishes waiting for their confirm
``answers_total``             counter     replies to tasks and RPCs, ``outcome`` result/error
``answer_seconds``            histogram   send to reply (the round trip seen by the sender)
``received_total``            counter     messages delivered to this process
``redelivered_total``         counter     tasks the broker had given out before
``processed_total``           counter     tasks and RPCs handled, ``outcome``
                                          finished/failed/requeued
``processing_seconds``        histogram   start of the subscriber to its outcome
``in_progress``               gauge       tasks and RPCs being handled now
``lost_total``                counter     tasks lost with their connection (another worker
                                          gets them)
``connection_lost_total``     counter     links to the broker that went down
``reconnects_total``          counter     links restored after a loss
============================  ==========  ====================================================

Only this module imports ``prometheus_client``; ``import kiwipy`` does not.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kiwipy.observe import RPC, Incoming, Listener, Outgoing

__all__ = ("Metrics", "serve")

_LABELS = ("kind", "destination")
#: Seconds; from a fast in-memory round trip up to long-running tasks.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclasses.dataclass(frozen=True)
class _Families:
    sent: Counter
    send_failures: Counter
    confirm_seconds: Histogram
    sends_in_flight: Gauge
    answers: Counter
    answer_seconds: Histogram
    received: Counter
    redelivered: Counter
    processed: Counter
    processing_seconds: Histogram
    in_progress: Gauge
    lost: Counter
    connection_lost: Counter
    reconnects: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> _Families:
        def counter(name: str, doc: str, *extra: str) -> Counter:
            return Counter(f"kiwipy_{name}", doc, (*_LABELS, *extra), registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(f"kiwipy_{name}", doc, _LABELS, registry=registry, buckets=_BUCKETS)

        return cls(
            sent=counter("sent", "Messages the broker confirmed"),
            send_failures=counter("send_failures", "Publishes that failed"),
            confirm_seconds=histogram("confirm_seconds", "Publish to broker confirm"),
            sends_in_flight=Gauge(
                "kiwipy_sends_in_flight", "Publishes awaiting confirm", ("kind",), registry=registry
            ),
            answers=counter("answers", "Replies to tasks and RPCs received", "outcome"),
            answer_seconds=histogram("answer_seconds", "Send to reply"),
            received=counter("received", "Messages delivered to this process"),
            redelivered=counter("redelivered", "Tasks the broker had given out before"),
            processed=counter("processed", "Tasks and RPCs handled", "outcome"),
            processing_seconds=histogram("processing_seconds", "Subscriber start to outcome"),
            in_progress=Gauge(
                "kiwipy_in_progress", "Tasks and RPCs being handled", _LABELS, registry=registry
            ),
            lost=counter("lost", "Tasks lost with their connection"),
            connection_lost=Counter(
                "kiwipy_connection_lost", "Links to the broker lost", registry=registry
            ),
            reconnects=Counter(
                "kiwipy_reconnects", "Links restored after a loss", registry=registry
            ),
        )


_FAMILIES: dict[int, tuple[CollectorRegistry, _Families]] = {}
_FAMILIES_LOCK = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    """One set of metrics per registry, however many :class:`Metrics` listeners use it."""
    with _FAMILIES_LOCK:
        known = _FAMILIES.get(id(registry))
        if known is None or known[0] is not registry:
            known = _FAMILIES[id(registry)] = (registry, _Families.create(registry))
        return known[1]


class _Children:
    """The metrics of one (kind, destination): ``labels()`` looked up once, not per message."""

    def __init__(self, families: _Families, kind: str, destination: str) -> None:
        labels = (kind, destination)
        self.sends_in_flight = families.sends_in_flight.labels(kind)
        self.sent = families.sent.labels(*labels)
        self.send_failures = families.send_failures.labels(*labels)
        self.confirm_seconds = families.confirm_seconds.labels(*labels)
        self.answers_result = families.answers.labels(*labels, "result")
        self.answers_error = families.answers.labels(*labels, "error")
        self.answer_seconds = families.answer_seconds.labels(*labels)
        self.received = families.received.labels(*labels)
        self.redelivered = families.redelivered.labels(*labels)
        self.processed = {
            outcome: families.processed.labels(*labels, outcome)
            for outcome in ("finished", "failed", "requeued")
        }
        self.processing_seconds = families.processing_seconds.labels(*labels)
        self.in_progress = families.in_progress.labels(*labels)
        self.lost = families.lost.labels(*labels)


class Metrics(Listener):
    """Counts and times kiwipy's messages into a Prometheus registry (module docstring)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, rpc_identifiers: bool = False
    ) -> None:
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self._families = _families(self.registry)
        self._rpc_identifiers = rpc_identifiers
        self._children: dict[tuple[str, str], _Children] = {}

    def _of(self, message: Outgoing | Incoming) -> _Children:
        destination = message.destination or ""
        if message.kind == RPC and not self._rpc_identifiers:
            destination = ""
        key = (message.kind, destination)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Children(self._families, *key)
        return children

    # -- sending -------------------------------------------------------------------------------

    def sending(self, message: Outgoing) -> None:
        self._of(message).sends_in_flight.inc()

    def confirmed(self, message: Outgoing) -> None:
        children = self._of(message)
        children.sends_in_flight.dec()
        children.sent.inc()
        children.confirm_seconds.observe(_since(message.sent_at))

    def send_failed(self, message: Outgoing, error: BaseException) -> None:
        children = self._of(message)
        children.sends_in_flight.dec()
        children.send_failures.inc()

    def answered(self, message: Outgoing, error: BaseException | None) -> None:
        children = self._of(message)
        (children.answers_result if error is None else children.answers_error).inc()
        children.answer_seconds.observe(_since(message.sent_at))

    # -- receiving -----------------------------------------------------------------------------

    def delivered(self, message: Incoming) -> None:
        self._of(message).received.inc()

    def redelivered(self, message: Incoming) -> None:
        self._of(message).redelivered.inc()

    def started(self, message: Incoming) -> None:
        self._of(message).in_progress.inc()

    def finished(self, message: Incoming) -> None:
        self._ended(message, "finished")

    def failed(self, message: Incoming, error: BaseException) -> None:
        self._ended(message, "failed")

    def requeued(self, message: Incoming) -> None:
        self._ended(message, "requeued")

    def lost(self, message: Incoming) -> None:
        self._of(message).lost.inc()

    def _ended(self, message: Incoming, outcome: str) -> None:
        children = self._of(message)
        children.processed[outcome].inc()
        if message.started_at is not None:
            children.in_progress.dec()
            children.processing_seconds.observe(_since(message.started_at))

    # -- connection ----------------------------------------------------------------------------

    def connection_lost(self, error: BaseException | None) -> None:
        self._families.connection_lost.inc()

    def connection_restored(self) -> None:
        self._families.reconnects.inc()


def _since(start: float) -> float:
    return max(0.0, time.perf_counter() - start)


def serve(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None) -> Any:  # noqa: S104
    """Serve the metrics of ``registry`` (default: prometheus_client's) over HTTP on ``port``
    (``0``: any free port), from a daemon thread; return the server (its ``server_port``)."""
    server, _thread = prometheus_client.start_http_server(
        port, addr, registry=registry if registry is not None else prometheus_client.REGISTRY
    )
    return server
