"""kiwipy: robust, high-volume messaging (tasks, RPC, broadcasts) for scientific workflows.

The names kiwipy 0.9 exported are all here, so its users switch without edits::

    import kiwipy

    with kiwipy.connect("amqp://guest:guest@127.0.0.1/") as comm:
        comm.add_rpc_subscriber(lambda comm, msg: msg * 2, "doubler")
        assert comm.rpc_send("doubler", 21).result(timeout=5) == 42

``import kiwipy`` is light: the broker client and :mod:`kiwipy.rmq` load on first use, and
:mod:`kiwipy.aio` (the asyncio API) and :mod:`kiwipy.sync` (the blocking one) load when touched.
"""

import importlib as _importlib
import logging as _logging
import typing as _typing

# The submodules kiwipy 0.9 had as attributes of the package.
from kiwipy import communicate, communications, exceptions, filters, futures, local, utils  # noqa: F401
from kiwipy.communicate import connect
from kiwipy.communications import Communicator, CommunicatorHelper
from kiwipy.exceptions import (
    BrokerError,
    BrokerRefused,
    CommunicatorClosed,
    ConnectionLost,
    DeadlineExceeded,
    DecodeError,
    DeliveryFailed,
    DuplicateSubscriberIdentifier,
    EncodeError,
    InvalidStateError,
    KiwipyError,
    MessageError,
    MessageTooLarge,
    QueueEmpty,
    RemoteException,
    ReplyLost,
    TaskRejected,
    TimeoutError,
    TLSError,
    UnroutableError,
)
from kiwipy.filters import BroadcastFilter
from kiwipy.futures import (
    CancelledError,
    Future,
    as_completed,
    capture_exceptions,
    chain,
    copy_future,
    wait,
)
from kiwipy.local import LocalCommunicator
from kiwipy.settings import Settings
from kiwipy.utils import EventHelper

__version__ = "1.0.0.dev0"

# kiwipy 0.9's names in its order, then ours.
__all__ = (  # noqa: RUF022
    "RemoteException",
    "DeliveryFailed",
    "TaskRejected",
    "UnroutableError",
    "TimeoutError",
    "DuplicateSubscriberIdentifier",
    "CommunicatorClosed",
    "InvalidStateError",
    "QueueEmpty",
    "Future",
    "chain",
    "copy_future",
    "CancelledError",
    "capture_exceptions",
    "wait",
    "as_completed",
    "Communicator",
    "CommunicatorHelper",
    "EventHelper",
    "LocalCommunicator",
    "BroadcastFilter",
    "connect",
    "KiwipyError",
    "ConnectionLost",
    "DeadlineExceeded",
    "ReplyLost",
    "BrokerError",
    "BrokerRefused",
    "MessageError",
    "DecodeError",
    "EncodeError",
    "MessageTooLarge",
    "TLSError",
    "Settings",
    "NullHandler",
    "Worker",
)

# Submodules loaded on first attribute access (``kiwipy.aio``, ``kiwipy.rmq`` ...).
_LAZY_SUBMODULES = frozenset(
    {"aio", "sync", "rmq", "settings", "codecs", "messages", "transports", "worker"}
)


def __getattr__(name: str) -> _typing.Any:
    if name == "Worker":  # loads the asyncio core and the blocking facade: on first use only
        from kiwipy.worker import Worker

        return Worker
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: kiwipy 0.9 defined its own do-nothing handler class; the standard library's is the same thing.
NullHandler = _logging.NullHandler

# The library configures no logging; this only keeps "no handler" noise away (stdlib advice).
_logging.getLogger("kiwipy").addHandler(NullHandler())
