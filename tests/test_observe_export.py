"""Traces and metrics across processes, on RabbitMQ: what a tracing backend and Prometheus see.

The worker is another process (tests/observed_peer.py, or ``kiwipy worker --metrics-port``);
each side has its own exporter or registry, as in production.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import kiwipy

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(90)]

PEER = Path(__file__).resolve().parent / "observed_peer.py"
TIMEOUT = 20.0


def _options(prefix: str) -> dict[str, Any]:
    return {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.tasks",
        "testing_mode": True,
    }


def test_one_trace_per_task_with_the_producer_span_parent_of_the_consumer_span(
    amqp_url: str, unique_name: str
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from kiwipy.observe.otel import Tracing

    # Given a worker process with tracing on, and a sender with its own tracer provider
    rpc_id = f"{unique_name}-rpc"
    peer = subprocess.Popen(
        [sys.executable, str(PEER), amqp_url, unique_name, rpc_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None and peer.stdin is not None
        assert peer.stdout.readline().strip() == "READY"
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        # When the sender sends 5 tasks (one failing) and 3 RPCs
        with kiwipy.connect(amqp_url, **_options(unique_name)) as comm:
            comm.add_listener(Tracing(provider))
            tasks = [comm.task_send(n) for n in (1, 2, 3, 4)] + [comm.task_send("fail")]
            calls = [comm.rpc_send(rpc_id, n) for n in (10, 20, 30)]
            assert [f.result(TIMEOUT) for f in tasks[:4] if f] == [2, 4, 6, 8]
            assert [f.result(TIMEOUT) for f in calls] == [20, 40, 60]
            with pytest.raises(kiwipy.RemoteException):
                assert tasks[4] is not None
                tasks[4].result(TIMEOUT)
        output, _ = peer.communicate("", timeout=TIMEOUT)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
    worker_spans = json.loads(output.strip().splitlines()[-1])
    sent = [span for span in exporter.get_finished_spans() if span.kind.name == "PRODUCER"]

    # Then every send has a producer span, each in a trace of its own
    assert len(sent) == 8
    assert len({span.context.trace_id for span in sent}) == 8
    # and the worker's consumer span of each is its child, in the same trace
    consumed = [span for span in worker_spans if span["kind"] == "CONSUMER"]
    assert len(consumed) == 8
    producers = {(span.context.trace_id, span.context.span_id): span for span in sent}
    for span in consumed:
        parent = producers[(span["trace_id"], span["parent"])]
        assert parent.name.split()[0] == span["name"].split()[0]  # the same destination
    names = sorted(span["name"] for span in consumed)
    assert names == [f"[rpc].{rpc_id} process"] * 3 + [f"{unique_name}.tasks process"] * 5
    assert [span["status"] for span in consumed].count("ERROR") == 1
    # and the subscriber's own span is a child of the consumer span (it was current)
    by_id = {span["span_id"]: span for span in consumed}
    work = [span for span in worker_spans if span["name"] == "work"]
    assert len(work) == 8
    assert all(by_id[span["parent"]]["trace_id"] == span["trace_id"] for span in work)


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


TASKS_MODULE = """
def triple(x):
    if x == "fail":
        raise ValueError("asked to fail")
    return 3 * x
"""


def test_the_worker_metrics_endpoint_counts_what_was_sent(
    amqp_url: str, unique_name: str, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from kiwipy.observe.prometheus import Metrics

    kiwipy_cli = shutil.which("kiwipy", path=str(Path(sys.executable).parent))
    assert kiwipy_cli is not None
    (tmp_path / "observed_tasks.py").write_text(TASKS_MODULE)
    # Given a worker serving its metrics on a free port
    worker = subprocess.Popen(
        [
            *(kiwipy_cli, "worker", "observed_tasks:triple", "--metrics-port", "127.0.0.1:0"),
            *("--url", amqp_url, "--exchange-prefix", unique_name, "--testing-mode", "--quiet"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert worker.stdout is not None
        first = worker.stdout.readline()
        match = re.search(r"metrics at (http://\S+)", first)
        assert match, first
        assert "working on queue" in worker.stdout.readline()
        registry = CollectorRegistry()
        # When we send 6 tasks, 2 of which fail, with metrics on our side too
        with kiwipy.connect(amqp_url, **_options(unique_name)) as comm:
            comm.add_listener(Metrics(registry))
            futures = [comm.task_send(x) for x in (1, 2, "fail", 3, "fail", 4)]
            for future in futures:
                assert future is not None
                with contextlib.suppress(kiwipy.RemoteException):
                    future.result(TIMEOUT)
        # Then the worker's endpoint counts them: 6 received, 4 finished, 2 failed
        labels = f'destination="{unique_name}.tasks",kind="task"'
        deadline = time.monotonic() + TIMEOUT
        while True:
            samples = _scrape(match.group(1))
            done = samples.get(f'kiwipy_processed_total{{{labels},outcome="finished"}}')
            if done == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # the ack (and its event) may follow the reply by a moment
        assert samples[f"kiwipy_received_total{{{labels}}}"] == 6
        assert samples[f'kiwipy_processed_total{{{labels},outcome="finished"}}'] == 4
        assert samples[f'kiwipy_processed_total{{{labels},outcome="failed"}}'] == 2
        assert samples[f"kiwipy_processing_seconds_count{{{labels}}}"] == 6
        assert samples[f"kiwipy_in_progress{{{labels}}}"] == 0
        # and ours counts the sends and their answers
        ours = registry.get_sample_value
        sent = {"kind": "task", "destination": f"{unique_name}.tasks"}
        assert ours("kiwipy_sent_total", sent) == 6
        assert ours("kiwipy_answers_total", {**sent, "outcome": "result"}) == 4
        assert ours("kiwipy_answers_total", {**sent, "outcome": "error"}) == 2
        assert ours("kiwipy_answer_seconds_count", sent) == 6
        assert ours("kiwipy_sends_in_flight", {"kind": "task"}) == 0
    finally:
        worker.terminate()
        worker.wait(TIMEOUT)
        if worker.stdout is not None:
            worker.stdout.close()
