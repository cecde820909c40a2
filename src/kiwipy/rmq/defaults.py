"""kiwipy 0.9's default names and numbers (``kiwipy.rmq.defaults``). Times are in milliseconds.

The queue arguments equal those kiwipy 0.9 declares, so old and new peers share one broker.

``ENCODER`` and ``DECODER`` differ on purpose: kiwipy 0.9 used ``yaml.dump`` and
``yaml.load(Loader=FullLoader)``, which builds Python objects from the network. Here they are
kiwipy's safe codec: ``ENCODER`` writes JSON bytes; ``DECODER`` reads JSON, and YAML through a
safe loader that accepts only the ``!!python/tuple`` tag kiwipy 0.9 peers write. Passing them
(the default) means "kiwipy's default codec", which also announces its content type.
"""

from __future__ import annotations

from typing import Any

from kiwipy import codecs
from kiwipy.exceptions import DecodeError

__all__ = ()

SECONDS_TO_MILLISECONDS = 1000

TASK_EXCHANGE = "kiwipy.tasks"
TASK_QUEUE = "kiwipy.tasks"
MESSAGE_EXCHANGE = "kiwipy.messages"
BROADCAST_TOPIC = "[broadcast]"
RPC_TOPIC = "[rpc]"
# Above 65535: aio-pika issue #165 broke smaller values on RabbitMQ 3.5.
MESSAGE_TTL = 66 * SECONDS_TO_MILLISECONDS
TEST_QUEUE_EXPIRES = 10 * SECONDS_TO_MILLISECONDS
QUEUE_EXPIRES = 60 * SECONDS_TO_MILLISECONDS
REPLY_QUEUE_EXPIRES = 60 * SECONDS_TO_MILLISECONDS
TASK_MESSAGE_TTL = 7 * 24 * 60 * 60 * SECONDS_TO_MILLISECONDS  # 7 days
TASK_PREFETCH_SIZE = 0
#: 0 asks for kiwipy's finite default prefetch (``Settings.task_prefetch_count``), not "unlimited".
TASK_PREFETCH_COUNT = 0
TASK_FETCH_TIMEOUT = 5.0


def encode(value: Any) -> bytes:
    """``value`` as compact JSON bytes; raises :class:`~kiwipy.exceptions.EncodeError`."""
    return codecs.JSON.encode(value)


def decode(body: bytes) -> Any:
    """The value in a JSON or (safe) YAML ``body``; raises :class:`~kiwipy.exceptions.DecodeError`.

    JSON is tried first (fast); anything else, such as a kiwipy 0.9 body, is read as YAML.
    """
    try:
        return codecs.JSON.decode(body)
    except DecodeError:
        return codecs.YAML_SAFE.decode(body)


ENCODER = encode
DECODER = decode


def connect_robust(*args: Any, **kwargs: Any) -> Any:
    """Stands for aio-pika's ``connect_robust``, kiwipy 0.9's default ``connection_factory``.

    kiwipy no longer uses aio-pika: its own transport opens the connection from the URL, so
    this factory is only a marker and is never called.
    """
    raise NotImplementedError("kiwipy builds its connection itself; this factory is a marker")


CONNECTION_FACTORY = connect_robust
