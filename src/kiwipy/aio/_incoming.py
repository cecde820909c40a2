"""A task taken from a queue: process it, requeue it, and know when it was lost.

A task belongs to the worker that received it only while the connection (and channel) it came
on lives. When that dies before the task is acknowledged, the broker gives the task to another
worker; this copy is then *lost*: :attr:`IncomingTask.lost` turns true and the callbacks given
to :meth:`IncomingTask.add_lost_callback` run, so the code working on it can stop. Its ack is
dropped (never sent on a new channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from kiwipy import messages
from kiwipy.aio._core import Core
from kiwipy.aio._hooks import Hooks
from kiwipy.exceptions import InvalidStateError
from kiwipy.observe import TASK, Incoming
from kiwipy.transports.base import Delivery

__all__ = ("IncomingTask", "TaskState", "current_incoming_task", "reset_current_incoming_task")

_LOGGER = logging.getLogger(__name__)

_CURRENT: contextvars.ContextVar[IncomingTask | None] = contextvars.ContextVar(
    "kiwipy_incoming_task", default=None
)


def reset_current_incoming_task(token: contextvars.Token[IncomingTask | None]) -> None:
    _CURRENT.reset(token)


def current_incoming_task() -> IncomingTask | None:
    """The task whose subscriber is running now (in that subscriber and what it calls).

    Task subscribers receive only the task's body, as in kiwipy 0.9; this gives them the task
    itself, for example to check :attr:`IncomingTask.lost` during long work.
    """
    return _CURRENT.get()


class TaskState:
    PENDING = "pending"
    PROCESSING = "processing"
    FINISHED = "finished"
    REQUEUED = "requeued"


class IncomingTask:
    """A task taken from a queue, to process (``process()`` / ``processing()``) or requeue."""

    def __init__(
        self,
        core: Core,
        delivery: Delivery,
        body: Any,
        no_reply: bool,
        *,
        queue: str | None = None,
        pulled: bool = False,
    ) -> None:
        self._core = core
        self._delivery = delivery
        self._body = body
        self._no_reply = no_reply
        self._state = TaskState.PENDING
        self._lost = False
        self._acknowledged = False
        self._lost_callbacks: list[Callable[[IncomingTask], Any]] = []
        #: Warns if processing outlives the broker's consumer_timeout; cancelled once settled.
        self._outlive_timer: asyncio.TimerHandle | None = None
        #: The listeners (kiwipy.observe) and this task's event object, while anyone listens.
        self._observed: tuple[Hooks, Incoming] | None = None
        if (hooks := core.hooks) is not None:
            incoming = hooks.received(TASK, queue, delivery.message, pulled=pulled)
            self._observed = (hooks, incoming)
        delivery.add_stale_callback(self._on_stale)

    def __repr__(self) -> str:
        return f"IncomingTask(state={self._state!r}, body={self._body!r})"

    @property
    def body(self) -> Any:
        return self._body

    @property
    def no_reply(self) -> bool:
        return self._no_reply

    @property
    def state(self) -> str:
        return self._state

    @property
    def redelivered(self) -> bool:
        """The broker delivered this task before (to a worker that died or gave it back)."""
        return self._delivery.message.redelivered

    @property
    def lost(self) -> bool:
        """The connection that received this task died before it was acknowledged.

        The broker has given the task back to the queue (another worker may run it now); an
        outcome set on this copy is still replied, but its ack is dropped.
        """
        return self._lost

    def add_lost_callback(self, callback: Callable[[IncomingTask], Any]) -> None:
        """Call ``callback(task)`` (on the event loop) if this task is lost; at once if it is.

        Keep it short and thread safe: for example set an event the worker's code watches.
        """
        if self._lost:
            _call_lost_callback(callback, self)
        else:
            self._lost_callbacks.append(callback)

    def _on_stale(self) -> None:
        if self._acknowledged or self._state == TaskState.REQUEUED or self._lost:
            return
        self._lost = True
        _LOGGER.warning(
            "Lost task %r: its connection died before the task was acknowledged; the broker "
            "gives it to another worker",
            self._body,
        )
        if (observed := self._observed) is not None:
            observed[0].emit("lost", observed[1])
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            _call_lost_callback(callback, self)

    def bind_to_context(self) -> contextvars.Token[IncomingTask | None]:
        """Make this the :func:`current_incoming_task` of the running context."""
        return _CURRENT.set(self)

    def process(self) -> asyncio.Future[Any]:
        """Start processing: resolve the returned future to finish (and acknowledge) the task.

        If the future is dropped unresolved (garbage collected), the task is requeued, as in
        kiwipy 0.9; resolve it, or call :meth:`requeue`, rather than rely on that.
        """
        outcome = self._start()
        outcome.add_done_callback(
            lambda done: self._core.spawn(self.finish(done), "Finishing a task")
        )
        loop = outcome.get_loop()
        weakref.finalize(outcome, self._abandoned, loop).atexit = False
        return outcome

    def _abandoned(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called by the garbage collector, in whichever thread dropped the last reference.
        with contextlib.suppress(RuntimeError):  # the loop is closed: the broker requeues it
            loop.call_soon_threadsafe(self._requeue_abandoned)

    def _requeue_abandoned(self) -> None:
        if self._state == TaskState.PROCESSING and not self._lost and not self._core.closed:
            _LOGGER.warning("Requeuing task %r: its outcome was dropped unresolved", self._body)
            self._core.spawn(self.requeue(), "Requeuing an abandoned task")

    @contextlib.asynccontextmanager
    async def processing(self) -> AsyncIterator[asyncio.Future[Any]]:
        """Yield the outcome future; an exception in the block becomes the task's outcome.

        When the block ends with the outcome set, the task is finished (replied to and
        acknowledged); with the outcome unset, it is requeued.
        """
        outcome = self._start()
        try:
            yield outcome
        except Exception as exc:
            if not outcome.done():
                outcome.set_exception(exc)
            raise
        finally:
            if outcome.done():
                await self.finish(outcome)
            elif self._state == TaskState.PROCESSING:
                await self.requeue()

    async def requeue(self) -> None:
        """Give the task back to the queue for another worker."""
        if self._state not in (TaskState.PENDING, TaskState.PROCESSING):
            raise InvalidStateError(f"Cannot requeue a task that is {self._state}")
        self._settle(TaskState.REQUEUED)
        await self._delivery.reject(requeue=True)

    async def finish(self, outcome: asyncio.Future[Any]) -> None:
        """Reply with the outcome (unless ``no_reply``), then acknowledge the task."""
        if self._state in (TaskState.FINISHED, TaskState.REQUEUED):
            return
        self._settle(TaskState.FINISHED, outcome)
        await self._core.protect(self._reply_and_ack(_outcome_reply(outcome)))

    async def _reply_and_ack(self, reply: dict[str, Any]) -> None:
        # Reply first: if we die in between, the task runs again (at least once), but its
        # sender is never left without an answer.
        if not self._no_reply:
            await self._core.reply_and_ack(self._delivery, reply)
        else:
            if messages.EXCEPTION_KEY in reply:
                _LOGGER.warning("Task without reply failed: %s", reply[messages.EXCEPTION_KEY])
            await self._delivery.ack()
        self._acknowledged = not self._delivery.stale

    def _start(self) -> asyncio.Future[Any]:
        """Mark the task processing; return its outcome future (held only by the caller)."""
        if self._state != TaskState.PENDING:
            raise InvalidStateError(f"The task is {self._state}, not pending")
        self._state = TaskState.PROCESSING
        if (observed := self._observed) is not None:
            observed[0].started(observed[1])
        loop = asyncio.get_running_loop()
        limit = self._core.transport.consumer_timeout
        if limit is not None:
            self._outlive_timer = loop.call_later(limit, self._outlived, limit)
        return loop.create_future()

    def _settle(self, state: str, outcome: asyncio.Future[Any] | None = None) -> None:
        """Leave processing for ``state`` (finished with ``outcome``, or requeued): the timer
        goes, and with it the loop's last reference to this task."""
        self._state = state
        if (observed := self._observed) is not None:
            _report_settled(observed[0], observed[1], outcome)
        if self._outlive_timer is not None:
            self._outlive_timer.cancel()
            self._outlive_timer = None

    def _outlived(self, limit: float) -> None:
        if self._state == TaskState.PROCESSING and not self._lost:
            self._core.warn_once(
                "consumer_timeout",
                f"A task has run for {limit:g} s without being acknowledged, as long as the "
                "broker's consumer_timeout allows: RabbitMQ will now close the channel and give "
                "the task to another worker (this worker will be told it lost the task). For "
                "longer tasks raise the limit: consumer_timeout = <milliseconds> in "
                "rabbitmq.conf, or, on RabbitMQ 3.11.15 and later, kiwipy's consumer_timeout "
                'option (seconds, or "none").',
            )


def _outcome_reply(outcome: asyncio.Future[Any]) -> dict[str, Any]:
    if outcome.cancelled():
        return messages.cancelled_reply("The task was cancelled")
    exc = outcome.exception()
    if exc is not None:
        return messages.exception_reply(exc)
    reply = messages.result_reply(outcome.result())
    reply[messages.HOST_KEY] = messages.host_info()
    return reply


def _report_settled(hooks: Hooks, incoming: Incoming, outcome: asyncio.Future[Any] | None) -> None:
    if outcome is None:
        hooks.emit("requeued", incoming)
    elif outcome.cancelled():
        hooks.ended(incoming, asyncio.CancelledError())
    else:
        hooks.ended(incoming, outcome.exception())


def _call_lost_callback(callback: Callable[[IncomingTask], Any], task: IncomingTask) -> None:
    try:
        callback(task)
    except Exception:
        _LOGGER.exception("Lost-task callback %r failed", callback)
