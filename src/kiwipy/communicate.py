"""``kiwipy.connect(uri)``: a blocking communicator for a broker URL (kiwipy 0.9 entry point)."""

from __future__ import annotations

import os
import urllib.parse
from typing import TYPE_CHECKING, Any

from kiwipy.settings import URL_VARIABLE, mask_url

if TYPE_CHECKING:
    from kiwipy.rmq.threadcomms import RmqThreadCommunicator

__all__ = ("connect",)

DEFAULT_COMM_URI = "amqp://guest:guest@127.0.0.1/"

_SCHEMES = ("amqp", "amqps", "memory", "local")


def connect(uri: str = DEFAULT_COMM_URI, **kwargs: Any) -> RmqThreadCommunicator:
    """Connect to ``uri`` and return a blocking communicator (a :class:`kiwipy.Communicator`).

    ``uri`` is ``amqp://``, ``amqps://``, ``local://`` (the local broker) or ``memory://NAME``
    (an in-process broker shared by every communicator of this process that uses the same
    name). ``kwargs`` are those of :func:`kiwipy.rmq.connect` (``message_exchange``,
    ``task_queue``, ``testing_mode``, ...) and any field of :class:`kiwipy.Settings`
    (``heartbeat``, ``rpc_timeout``, ``task_queue_type`` ...); an unknown one is a
    ``TypeError``.

    With no ``uri``: ``$KIWIPY_URL`` when set, else kiwipy 0.9's default (RabbitMQ on this
    host).
    """
    if uri is DEFAULT_COMM_URI:  # not given (the default object itself)
        uri = os.environ.get(URL_VARIABLE) or DEFAULT_COMM_URI
    if urllib.parse.urlsplit(uri).scheme not in _SCHEMES:
        raise ValueError(f"Unknown communicator uri '{mask_url(uri)}'")
    from kiwipy import rmq  # imported on first use: ``import kiwipy`` stays light
    from kiwipy.rmq._arguments import settings_from_arguments

    return rmq.connect(connection_params=settings_from_arguments(uri, **kwargs))
