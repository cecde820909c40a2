"""kiwipy 0.9's broadcast message helper (``kiwipy.rmq.messages.BroadcastMessage``)."""

from __future__ import annotations

from typing import Any

from kiwipy import messages

__all__ = ("BroadcastMessage",)


class BroadcastMessage:
    """The body of a broadcast on the wire: ``{'body', 'sender', 'subject', 'correlation_id'}``."""

    BODY = "body"
    SENDER = "sender"
    SUBJECT = "subject"
    CORRELATION_ID = "correlation_id"

    @staticmethod
    def create(
        body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None
    ) -> dict[str, Any]:
        envelope = messages.BroadcastEnvelope(body, sender, subject, correlation_id)
        return messages.broadcast_body(envelope)
