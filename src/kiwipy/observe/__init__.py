"""See what kiwipy is doing: events from the asyncio core, for metrics, traces and logs.

A *listener* receives events about the messages one communicator (or every communicator of the
process) sends and receives::

    class Printer(kiwipy.observe.Listener):
        def failed(self, message, error):
            print(f"{message.kind} from {message.destination} failed: {error!r}")

    kiwipy.observe.add_listener(Printer())      # every communicator of the process
    communicator.add_listener(Printer())        # or one communicator

The events come from the core, so every transport has them. Each is a method of
:class:`Listener` (all do nothing there: override the ones you need). They are called on the
communicator's event loop thread, must be quick, and must not block; an exception in one is
logged and otherwise ignored.

Sending side (``message`` is an :class:`Outgoing`):

* ``sending``: a task, RPC request or broadcast is about to be published. A listener may add
  entries to ``message.headers`` (they travel with the message: trace context, for example).
* ``confirmed``: the broker has it (publisher confirm for tasks; routed for RPC requests).
* ``send_failed``: the publish failed (unroutable, connection lost, timed out).
* ``answered``: the reply to a task or RPC arrived (``error`` is ``None`` for a result; else
  the remote exception, ``DeadlineExceeded``, ``ReplyLost`` ...).

Receiving side (``message`` is an :class:`Incoming`):

* ``delivered``: a task, RPC request or broadcast arrived; ``redelivered`` follows it for a
  task the broker gave out before.
* ``started``: the subscriber (or the code that pulled the task) starts on it.
* then one of ``finished`` (result), ``failed`` (exception) or ``requeued`` (given back to the
  queue, or rejected by every subscriber): each started message gets exactly one; a task given
  back before it started gets ``requeued`` alone.
* ``lost``: the connection that received the task died before it was acknowledged (another
  worker gets it).

Connection: ``connection_lost(error)`` and ``connection_restored()``.

With nothing listening, the core pays one ``is not None`` check per event
(``bench/hooks_bench.py`` measures it). Ready-made listeners, in optional extras:
:mod:`kiwipy.observe.otel` (OpenTelemetry traces, extra ``otel``) and
:mod:`kiwipy.observe.prometheus` (Prometheus metrics, extra ``prometheus``).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = (
    "Incoming",
    "Listener",
    "Outgoing",
    "add_listener",
    "global_listeners",
    "remove_listener",
)

#: Kinds of messages.
TASK = "task"
RPC = "rpc"
BROADCAST = "broadcast"


class Outgoing:
    """A task, RPC request or broadcast that this process sends.

    ``destination`` is the queue name (tasks), the recipient's identifier (RPC) or ``None``
    (broadcasts). ``headers`` may be extended in ``sending``. ``state`` is for listeners to
    keep what they need until the next event of this message (key it by the listener).
    """

    __slots__ = ("correlation_id", "destination", "headers", "kind", "sent_at", "state")

    def __init__(self, kind: str, destination: str | None, correlation_id: str | None) -> None:
        self.kind = kind
        self.destination = destination
        self.correlation_id = correlation_id
        self.headers: dict[str, Any] = {}
        #: ``time.perf_counter()`` when ``sending`` was called.
        self.sent_at = time.perf_counter()
        self.state: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"Outgoing({self.kind!r}, {self.destination!r}, {self.correlation_id!r})"


class Incoming:
    """A task, RPC request or broadcast that this process received.

    ``headers`` are the message's headers as they arrived (values may be ``bytes``).
    ``pulled`` is true for a task taken with the pull API (``next_task``, iteration), whose
    ``started`` and end may come from different asyncio tasks.
    """

    __slots__ = (
        "correlation_id",
        "delivered_at",
        "destination",
        "headers",
        "kind",
        "pulled",
        "redelivered",
        "started_at",
        "state",
    )

    def __init__(
        self,
        kind: str,
        destination: str | None,
        correlation_id: str | None,
        headers: Mapping[str, Any],
        *,
        redelivered: bool = False,
        pulled: bool = False,
    ) -> None:
        self.kind = kind
        self.destination = destination
        self.correlation_id = correlation_id
        self.headers = headers
        self.redelivered = redelivered
        self.pulled = pulled
        self.delivered_at = time.perf_counter()
        #: ``time.perf_counter()`` when ``started`` was called (``None`` before).
        self.started_at: float | None = None
        self.state: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"Incoming({self.kind!r}, {self.destination!r}, {self.correlation_id!r})"


class Listener:
    """Receives kiwipy's events; every method does nothing here. See the module docstring."""

    def sending(self, message: Outgoing) -> None:
        """About to publish ``message``; entries added to ``message.headers`` travel along."""

    def confirmed(self, message: Outgoing) -> None:
        """The broker has ``message``."""

    def send_failed(self, message: Outgoing, error: BaseException) -> None:
        """Publishing ``message`` failed with ``error`` (raised to the sender too)."""

    def answered(self, message: Outgoing, error: BaseException | None) -> None:
        """The reply to the task or RPC ``message`` arrived (``error`` is ``None`` if it is a
        result), or can no longer arrive (``error`` says why)."""

    def delivered(self, message: Incoming) -> None:
        """``message`` arrived."""

    def redelivered(self, message: Incoming) -> None:
        """The task ``message`` was given out before (its earlier worker died or gave it back)."""

    def started(self, message: Incoming) -> None:
        """Work on ``message`` starts."""

    def finished(self, message: Incoming) -> None:
        """Work on ``message`` ended with a result."""

    def failed(self, message: Incoming, error: BaseException) -> None:
        """Work on ``message`` ended with ``error``."""

    def requeued(self, message: Incoming) -> None:
        """The task ``message`` went back to its queue unfinished."""

    def lost(self, message: Incoming) -> None:
        """The task ``message`` was lost: its connection died before it was acknowledged."""

    def connection_lost(self, error: BaseException | None) -> None:
        """The link to the broker went down (kiwipy reconnects unless it was for good)."""

    def connection_restored(self) -> None:
        """The link to the broker is back after a loss."""


#: The names of the events, in the order of :class:`Listener`'s methods.
EVENTS = (
    "sending",
    "confirmed",
    "send_failed",
    "answered",
    "delivered",
    "redelivered",
    "started",
    "finished",
    "failed",
    "requeued",
    "lost",
    "connection_lost",
    "connection_restored",
)


class _Watcher(Protocol):
    def listeners_changed(self) -> None: ...


_LOCK = threading.Lock()
_GLOBAL: tuple[Any, ...] = ()
_WATCHERS: weakref.WeakSet[Any] = weakref.WeakSet()


def add_listener(listener: Any) -> None:
    """Give every communicator of this process (existing and future) to ``listener``.

    ``listener`` is a :class:`Listener` or any object with some of its methods.
    """
    global _GLOBAL
    with _LOCK:
        if any(known is listener for known in _GLOBAL):
            return
        _GLOBAL = (*_GLOBAL, listener)
    _notify()


def remove_listener(listener: Any) -> None:
    """Stop giving events to ``listener`` (added with :func:`add_listener`); no error if not."""
    global _GLOBAL
    with _LOCK:
        _GLOBAL = tuple(known for known in _GLOBAL if known is not listener)
    _notify()


def global_listeners() -> tuple[Any, ...]:
    """The listeners added with :func:`add_listener`."""
    return _GLOBAL


def watch_global_listeners(watcher: _Watcher) -> None:
    """Call ``watcher.listeners_changed()`` whenever the global listeners change (weakly held).

    For the core of each communicator; not needed by listeners.
    """
    with _LOCK:
        _WATCHERS.add(watcher)


def _notify() -> None:
    with _LOCK:
        watchers = list(_WATCHERS)
    for watcher in watchers:
        watcher.listeners_changed()
