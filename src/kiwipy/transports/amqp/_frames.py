"""Between kiwipy's :class:`~kiwipy.transports.base.Message` and AMQP's properties and frames."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from typing import Any

from pamqp.commands import Basic

from kiwipy.transports.base import Message

__all__ = ("PERSISTENT", "TRANSIENT", "plain", "to_message", "to_properties")

PERSISTENT = 2
TRANSIENT = 1


def plain(value: Any, *, decode: bool = True) -> Any:
    """Turn an AMQP field value into plain Python dicts and lists (bytes to text if ``decode``)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace") if decode else bytes(value)
    if isinstance(value, Mapping):
        return {str(plain(key)): plain(item, decode=decode) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, decode=decode) for item in value]
    return value


def to_properties(message: Message, *, delivery_mode: int) -> Any:
    """The AMQP properties for ``message``; a unique ``message_id`` lets returns be matched."""
    return Basic.Properties(
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        headers=dict(message.headers) if message.headers else None,
        delivery_mode=delivery_mode,
        message_id=f"{_MESSAGE_ID_PREFIX}{next(_MESSAGE_NUMBERS)}",
    )


# Unique per process (returns are matched per channel): cheaper than a uuid4 per message.
_MESSAGE_ID_PREFIX = f"{uuid.uuid4().hex[:16]}-"
_MESSAGE_NUMBERS = itertools.count()


def to_message(raw: Any) -> Message:
    """The kiwipy :class:`Message` for an aiormq ``DeliveredMessage``."""
    properties = raw.header.properties
    return Message(
        body=bytes(raw.body),
        content_type=properties.content_type,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        headers=plain(properties.headers or {}, decode=False),
        persistent=properties.delivery_mode == PERSISTENT,
        redelivered=bool(getattr(raw.delivery, "redelivered", False)),
    )
