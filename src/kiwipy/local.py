"""An in-process communicator with no broker and no threads (kiwipy 0.9's ``LocalCommunicator``).

Everything happens synchronously in the caller's thread: ``rpc_send`` and ``task_send`` run the
subscriber before they return, and ``broadcast_send`` calls every broadcast subscriber. It is
meant for tests and single-process tools; it is not thread-safe.

Differences from kiwipy 0.9's ``LocalCommunicator`` (the bugs are fixed, the API is kept):

* a task nobody takes (no subscriber, or only rejecting ones) stays queued and is delivered
  when a task subscriber is added, as a broker would; closing fails the futures of tasks still
  queued with :class:`~kiwipy.exceptions.CommunicatorClosed` (0.9 left them unresolved forever);
* duplicate *task* identifiers raise ``DuplicateSubscriberIdentifier`` (0.9 checked the RPC ones);
* a subscriber's exception arrives as a :class:`~kiwipy.exceptions.RemoteException` carrying the
  type name, message and traceback text, as over RabbitMQ (0.9 passed an ``exc_info`` tuple);
* broadcast subscribers are called positionally, ``(comm, body, sender, subject,
  correlation_id)``, as over RabbitMQ (0.9 used keywords), and one that raises is logged
  without stopping the others or failing ``broadcast_send``;
* an ``async def`` subscriber is refused with a ``TypeError`` (0.9 silently kept the coroutine).
"""

from __future__ import annotations

from typing import Any

from kiwipy import futures
from kiwipy.communications import CommunicatorHelper

__all__ = ("LocalCommunicator",)


class LocalCommunicator(CommunicatorHelper):
    """A communicator that delivers in process; subscribers receive this communicator."""

    def __repr__(self) -> str:
        state = "closed" if self.is_closed() else "open"
        return f"LocalCommunicator({state})"

    def task_send(self, task: Any, no_reply: bool = False) -> futures.Future[Any] | None:
        return self.fire_task(task, no_reply)

    def rpc_send(self, recipient_id: Any, msg: Any) -> futures.Future[Any]:
        return self.fire_rpc(recipient_id, msg)

    def broadcast_send(
        self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> bool:
        return self.fire_broadcast(
            body, sender=sender, subject=subject, correlation_id=correlation_id
        )
