"""A worker process for tests/test_observe_export.py: answers tasks and RPCs with tracing on.

    python tests/observed_peer.py URL PREFIX RPC_ID

Prints READY once subscribed; when its stdin closes, prints its finished spans as one JSON list.
A task or RPC whose message is "fail" raises. The subscriber starts a span of its own ("work"),
which must be a child of kiwipy's consumer span.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kiwipy
from kiwipy.observe.otel import Tracing


def span_record(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": span.context.trace_id,
        "span_id": span.context.span_id,
        "parent": span.parent.span_id if span.parent is not None else None,
        "status": span.status.status_code.name,
    }


def main() -> int:
    url, prefix, rpc_id = sys.argv[1:4]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    kiwipy.observe.add_listener(Tracing(provider))  # every communicator of this process
    tracer = provider.get_tracer("observed-peer")

    def work(_comm: Any, message: Any) -> Any:
        with tracer.start_as_current_span("work"):
            if message == "fail":
                raise ValueError("asked to fail")
            return message * 2

    options = {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.tasks",
        "testing_mode": True,
    }
    with kiwipy.connect(url, **options) as comm:
        comm.add_task_subscriber(work)
        comm.add_rpc_subscriber(work, rpc_id)
        print("READY", flush=True)
        sys.stdin.read()
    print(json.dumps([span_record(span) for span in exporter.get_finished_spans()]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
