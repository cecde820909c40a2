"""Reply futures on the caller's side: one reply address, futures keyed by correlation id."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from kiwipy import messages
from kiwipy.codecs import MessageCodec
from kiwipy.exceptions import DeadlineExceeded, KiwipyError, MessageError
from kiwipy.transports.base import Message, Transport

__all__ = ("ReplyFutures",)

_LOGGER = logging.getLogger(__name__)

#: At most one warning about unmatched replies per this many seconds (a flood must not flood
#: the log too).
UNMATCHED_LOG_INTERVAL = 10.0


class ReplyFutures:
    """Owns the reply address and every future that waits for a reply.

    Each future resolves with the reply, fails at its deadline (``DeadlineExceeded``) or with the
    error given to :meth:`fail_all` (connection lost, communicator closed). A ``pending`` reply
    resolves the future with a *new* future that waits for the next reply under the same
    correlation id, as kiwipy 0.9 does.
    """

    def __init__(self, transport: Transport, codec: MessageCodec) -> None:
        self._transport = transport
        self._codec = codec
        self._address: str | None = None
        self._opening = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: Replies that matched no waiting future (late, duplicated or forged).
        self.unmatched = 0
        self._unmatched_logged = 0  # the count at the last warning
        self._unmatched_warned_at: float | None = None

    async def address(self) -> str:
        if self._address is None:
            async with self._opening:
                if self._address is None:
                    self._address = await self._transport.open_reply_queue(self._on_reply)
        return self._address

    def register(self, timeout: float | None) -> tuple[str, asyncio.Future[Any]]:
        """A fresh correlation id and the future its reply resolves."""
        correlation_id = uuid.uuid4().hex
        future = self._watch(correlation_id, asyncio.get_running_loop().create_future())
        if timeout is not None:
            self._timers[correlation_id] = asyncio.get_running_loop().call_later(
                timeout, self._expire, correlation_id, timeout
            )
        return correlation_id, future

    def discard(self, correlation_id: str) -> None:
        """Forget a registration whose request was never sent."""
        self._waiting.pop(correlation_id, None)
        timer = self._timers.pop(correlation_id, None)
        if timer is not None:
            timer.cancel()

    def abandon(self, correlation_id: str, future: asyncio.Future[Any] | None) -> None:
        """Forget a request whose send failed: its caller gets the send's error, not this."""
        self.discard(correlation_id)
        if future is not None and future.done() and not future.cancelled():
            future.exception()  # its deadline may have passed meanwhile: nobody will read it

    def fail_all(self, error: KiwipyError) -> None:
        waiting = list(self._waiting.items())
        for correlation_id, future in waiting:
            self.discard(correlation_id)
            if not future.done():
                future.set_exception(error)
                future.exception()  # nobody may wait for it: do not log it as never retrieved

    @property
    def outstanding(self) -> int:
        return len(self._waiting)

    def _watch(self, correlation_id: str, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self._waiting[correlation_id] = future

        def forget_if_abandoned(done: asyncio.Future[Any]) -> None:
            # The caller cancelled (or we resolved) it: nothing more will be delivered to it.
            if self._waiting.get(correlation_id) is done:
                self.discard(correlation_id)

        future.add_done_callback(forget_if_abandoned)
        return future

    def _expire(self, correlation_id: str, timeout: float) -> None:
        self._timers.pop(correlation_id, None)
        future = self._waiting.pop(correlation_id, None)
        if future is not None and not future.done():
            future.set_exception(DeadlineExceeded(f"No reply within {timeout:g} s"))

    async def _on_reply(self, message: Message) -> None:
        # No await in here: the transport may run this inline (Transport.open_reply_queue).
        correlation_id = message.correlation_id or ""
        future = self._waiting.get(correlation_id)
        if future is None or future.done():
            self.unmatched += 1
            self._log_unmatched()
            return
        try:
            reply = messages.parse_reply(self._codec.decode(message.body, message.content_type))
        except MessageError as exc:
            self.discard(correlation_id)
            future.set_exception(exc)
            return
        self._resolve(correlation_id, future, reply)

    def _log_unmatched(self) -> None:
        """One warning per :data:`UNMATCHED_LOG_INTERVAL` at most, with the count since."""
        now = time.monotonic()
        last = self._unmatched_warned_at
        if last is not None and now - last < UNMATCHED_LOG_INTERVAL:
            return
        self._unmatched_warned_at = now
        dropped = self.unmatched - self._unmatched_logged
        self._unmatched_logged = self.unmatched
        _LOGGER.warning(
            "Dropped %d repl%s that matched no waiting request (late, duplicated or forged; "
            "%d in all); at most one such warning every %g s",
            dropped,
            "y" if dropped == 1 else "ies",
            self.unmatched,
            UNMATCHED_LOG_INTERVAL,
        )

    def _resolve(
        self, correlation_id: str, future: asyncio.Future[Any], reply: messages.Reply
    ) -> None:
        if reply.kind == messages.PENDING_KEY:
            # Keep the deadline timer: it covers the whole chain.
            nested = self._watch(correlation_id, future.get_loop().create_future())
            future.set_result(nested)
            return
        self.discard(correlation_id)
        if reply.kind == messages.RESULT_KEY:
            future.set_result(reply.value)
        elif reply.kind == messages.EXCEPTION_KEY:
            assert reply.error is not None
            future.set_exception(reply.error)
        else:
            future.cancel()
