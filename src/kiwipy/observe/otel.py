"""OpenTelemetry traces for kiwipy (extra ``otel``: ``pip install 'kiwipy[otel]'``).

::

    kiwipy.observe.add_listener(kiwipy.observe.otel.Tracing())

Each task, RPC request and broadcast sent gets a *producer* span (``<queue> publish``, from the
publish to the broker's confirm); its W3C trace context travels in the message headers
(``traceparent``, ``tracestate``, with the propagators OpenTelemetry is configured with). The
worker's *consumer* span (``<queue> process``, from the start of the subscriber to its outcome)
is a child of the producer span, so one task is one trace across processes. While a
subscriber runs, its consumer span is the current span: spans the subscriber starts are its
children. Broadcasts received get a short consumer span each. kiwipy 0.9 peers ignore the
headers.

Only this module imports ``opentelemetry``; ``import kiwipy`` does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter

from kiwipy.observe import BROADCAST, RPC, Incoming, Listener, Outgoing

__all__ = ("Tracing",)

_SYSTEM = "rabbitmq"


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads trace context from AMQP headers, whose values may arrive as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", errors="replace")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def _destination(message: Outgoing | Incoming) -> str:
    if message.kind == BROADCAST:
        return "[broadcast]"
    if message.kind == RPC:
        return f"[rpc].{message.destination}"
    return message.destination or ""


def _attributes(message: Outgoing | Incoming, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": _SYSTEM,
        "messaging.operation": operation,
        "messaging.destination.name": _destination(message),
        "kiwipy.kind": message.kind,
    }
    if message.correlation_id:
        attributes["messaging.message.conversation_id"] = message.correlation_id
    return attributes


class Tracing(Listener):
    """Producer and consumer spans for kiwipy messages (see the module docstring).

    ``tracer_provider`` defaults to OpenTelemetry's global one.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        from kiwipy import __version__

        self._tracer = trace.get_tracer("kiwipy", __version__, tracer_provider=tracer_provider)

    # -- sending -------------------------------------------------------------------------------

    def sending(self, message: Outgoing) -> None:
        span = self._tracer.start_span(
            f"{_destination(message)} publish",
            kind=trace.SpanKind.PRODUCER,
            attributes=_attributes(message, "publish"),
        )
        propagate.inject(message.headers, context=trace.set_span_in_context(span))
        message.state[self] = span

    def confirmed(self, message: Outgoing) -> None:
        span = message.state.pop(self, None)
        if span is not None:
            span.end()

    def send_failed(self, message: Outgoing, error: BaseException) -> None:
        span = message.state.pop(self, None)
        if span is not None:
            _record_error(span, error)
            span.end()

    # -- receiving -----------------------------------------------------------------------------

    def delivered(self, message: Incoming) -> None:
        if message.kind == BROADCAST:
            self._consumer_span(message, "receive").end()

    def started(self, message: Incoming) -> None:
        span = self._consumer_span(message, "process")
        token = None
        if not message.pulled:
            # The subscriber runs in this asyncio task (or a copy of its context): the span
            # is current there. A pulled task's code may end it elsewhere: not attached then.
            token = context.attach(trace.set_span_in_context(span))
        message.state[self] = (span, token, _current_task())

    def finished(self, message: Incoming) -> None:
        self._end(message, None)

    def failed(self, message: Incoming, error: BaseException) -> None:
        self._end(message, error)

    def requeued(self, message: Incoming) -> None:
        self._end(message, None, requeued=True)

    def lost(self, message: Incoming) -> None:
        started = message.state.get(self)
        if started is not None:
            started[0].add_event("kiwipy.lost", {"reason": "connection died before the ack"})

    def _consumer_span(self, message: Incoming, operation: str) -> trace.Span:
        parent = propagate.extract(message.headers, getter=_GETTER)
        attributes = _attributes(message, operation)
        attributes["messaging.rabbitmq.redelivered"] = message.redelivered
        return self._tracer.start_span(
            f"{_destination(message)} {operation}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
        )

    def _end(self, message: Incoming, error: BaseException | None, requeued: bool = False) -> None:
        started = message.state.pop(self, None)
        if started is None:  # given back before it started
            return
        span, token, task = started
        if requeued:
            span.set_attribute("kiwipy.requeued", True)
        if error is not None:
            _record_error(span, error)
        span.end()
        # Detach only where attached: an RPC answered later ends in a task of its own (the
        # context that had the span ended with its handler's task).
        if token is not None and _current_task() is task:
            context.detach(token)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _record_error(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
