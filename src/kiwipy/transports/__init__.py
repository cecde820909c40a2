"""Transports: the RabbitMQ one (:mod:`.amqp`) and the in-memory one (:mod:`.memory`).

The AMQP client library is imported only when a RabbitMQ transport is created.
"""

import typing as _typing

from kiwipy.transports.base import Delivery, Message, Subscription, Transport

if _typing.TYPE_CHECKING:
    from kiwipy.settings import Settings

__all__ = ("Delivery", "Message", "Subscription", "Transport", "create_transport")


def create_transport(settings: "Settings") -> Transport:
    """Return an unconnected transport for ``settings.url`` (``amqp://``, ``amqps://``, ``memory://``)."""
    if settings.scheme == "local":
        from kiwipy.transports.local import LocalTransport

        return LocalTransport(settings)
    if settings.scheme == "memory":
        from kiwipy.transports.memory import MemoryTransport

        return MemoryTransport(settings)
    from kiwipy.transports.amqp import AmqpTransport

    transport: Transport = AmqpTransport(settings)
    return transport
