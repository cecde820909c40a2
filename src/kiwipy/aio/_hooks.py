"""The listeners of one communicator, called by the core at each event (see kiwipy.observe).

The core holds a :class:`Hooks` only while somebody listens, and ``None`` otherwise: every
event site is ``if (hooks := core.hooks) is not None:``, one check when nothing listens.
(``bench/hooks_bench.py`` relies on that shape to compile the hooks out for its baseline.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kiwipy.observe import EVENTS, Incoming, Listener, Outgoing
from kiwipy.transports.base import Message

__all__ = ("Hooks",)

_LOGGER = logging.getLogger(__name__)


class Hooks:
    """Calls the listeners' methods; a listener that raises is logged and skipped."""

    def __init__(self, listeners: Iterable[Any]) -> None:
        self.listeners = tuple(listeners)
        # Per event, the bound methods that do something (not Listener's no-ops).
        self._methods: dict[str, tuple[Callable[..., Any], ...]] = {}
        for event in EVENTS:
            methods = (_overridden(listener, event) for listener in self.listeners)
            self._methods[event] = tuple(method for method in methods if method is not None)

    def emit(self, event: str, *args: Any) -> None:
        for method in self._methods[event]:
            try:
                method(*args)
            except Exception:
                _LOGGER.exception("Listener %r failed on %s", method, event)

    async def publish(
        self,
        outgoing: Outgoing,
        send: Callable[[Message], Awaitable[None]],
        message: Message,
        reply: asyncio.Future[Any] | None = None,
    ) -> None:
        """``send(message)`` between ``sending`` and ``confirmed`` / ``send_failed``; then
        ``answered`` when ``reply`` resolves."""
        self.emit("sending", outgoing)
        if outgoing.headers:
            message = dataclasses.replace(message, headers={**message.headers, **outgoing.headers})
        try:
            await send(message)
        except BaseException as exc:
            self.emit("send_failed", outgoing, exc)
            raise
        self.emit("confirmed", outgoing)
        if reply is not None:
            self._watch_reply(outgoing, reply)

    def _watch_reply(self, outgoing: Outgoing, reply: asyncio.Future[Any]) -> None:
        def on_reply(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                self.emit("answered", outgoing, asyncio.CancelledError())
                return
            error = done.exception()
            if error is None and isinstance(done.result(), asyncio.Future):
                self._watch_reply(outgoing, done.result())  # "pending": the answer comes later
                return
            self.emit("answered", outgoing, error)

        reply.add_done_callback(on_reply)

    def received(
        self,
        kind: str,
        destination: str | None,
        message: Message,
        *,
        pulled: bool = False,
    ) -> Incoming:
        incoming = Incoming(
            kind,
            destination,
            message.correlation_id,
            message.headers,
            redelivered=message.redelivered,
            pulled=pulled,
        )
        self.emit("delivered", incoming)
        if message.redelivered:
            self.emit("redelivered", incoming)
        return incoming

    def started(self, incoming: Incoming) -> None:
        incoming.started_at = time.perf_counter()
        self.emit("started", incoming)

    def ended(self, incoming: Incoming, error: BaseException | None) -> None:
        if error is None:
            self.emit("finished", incoming)
        else:
            self.emit("failed", incoming, error)


def _overridden(listener: Any, event: str) -> Callable[..., Any] | None:
    method = getattr(listener, event, None)
    if method is None or getattr(type(listener), event, None) is getattr(Listener, event):
        return None
    return method  # type: ignore[no-any-return]
