"""The exported members of each public module, pinned (as httpx and trio do).

A name added to or removed from a public module fails here, so the change is a decision made
on purpose (and noted in docs/migration.md when it touches kiwipy 0.9's names).
"""

from __future__ import annotations

import importlib
import types

import pytest

pytestmark = pytest.mark.timeout(30)

ERRORS = {
    "BrokerError",
    "BrokerRefused",
    "CommunicatorClosed",
    "ConnectionLost",
    "DeadlineExceeded",
    "DecodeError",
    "DeliveryFailed",
    "DuplicateSubscriberIdentifier",
    "EncodeError",
    "InvalidStateError",
    "KiwipyError",
    "MessageError",
    "MessageTooLarge",
    "QueueEmpty",
    "RemoteException",
    "ReplyLost",
    "TLSError",
    "TaskRejected",
    "TimeoutError",
    "UnroutableError",
}

EXPORTS: dict[str, set[str]] = {
    "kiwipy": ERRORS
    | {
        "BroadcastFilter",
        "CancelledError",
        "Communicator",
        "CommunicatorHelper",
        "EventHelper",
        "Future",
        "LocalCommunicator",
        "NullHandler",
        "Settings",
        "Worker",
        "as_completed",
        "capture_exceptions",
        "chain",
        "connect",
        "copy_future",
        "wait",
    },
    "kiwipy.aio": {
        "AsyncCommunicator",
        "AsyncTaskQueue",
        "IncomingTask",
        "TaskState",
        "Worker",
        "connect",
        "current_incoming_task",
    },
    "kiwipy.sync": {
        "BlockingIncomingTask",
        "Communicator",
        "TaskQueue",
        "connect",
        "current_incoming_task",
    },
    "kiwipy.exceptions": ERRORS,
    "kiwipy.rmq": {
        "RmqCommunicator",
        "RmqIncomingTask",
        "RmqTaskPublisher",
        "RmqTaskQueue",
        "RmqTaskSubscriber",
        "RmqThreadCommunicator",
        "RmqThreadTaskQueue",
        "async_connect",
        "connect",
    },
    "kiwipy.transports": {"Delivery", "Message", "Subscription", "Transport", "create_transport"},
    "kiwipy.transports.base": {
        "CloseCallback",
        "Delivery",
        "DeliveryHandler",
        "LinkCallback",
        "Message",
        "Subscription",
        "Transport",
    },
    "kiwipy.filters": {"BroadcastFilter"},
    "kiwipy.codecs": {"Codec", "JSON", "MSGPACK", "MessageCodec", "YAML_SAFE", "custom_codec"},
    "kiwipy.settings": {"DEFAULT_URL", "LOCAL_URL", "Settings", "mask_url", "resolve_url"},
    "kiwipy.testing.conformance": {"CommunicatorConformance", "Connect"},
    "kiwipy.testing.drivers": {"BlockingDriver", "connect_blocking"},
}

#: Packages whose namespace is their API: nothing public may sit there beyond ``__all__``
#: and submodules (no ``Any``, ``logging`` or ``annotations`` leaking from their imports).
NAMESPACES = ("kiwipy", "kiwipy.aio", "kiwipy.sync", "kiwipy.rmq", "kiwipy.transports")


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_all_is_the_pinned_set(name: str) -> None:
    module = importlib.import_module(name)
    assert set(module.__all__) == EXPORTS[name]
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [member for member in module.__all__ if not hasattr(module, member)]
    assert missing == []


@pytest.mark.parametrize("name", NAMESPACES)
def test_namespaces_hold_nothing_else(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        member
        for member in dir(module)
        if not member.startswith("_") and not isinstance(getattr(module, member), types.ModuleType)
    }
    assert public - set(module.__all__) == set()


def test_the_error_tree_has_one_root() -> None:
    import kiwipy

    # kiwipy 0.9's TimeoutError is the standard library's (asyncio's and concurrent's alike).
    for name in ERRORS - {"KiwipyError", "TimeoutError"}:
        assert issubclass(getattr(kiwipy, name), kiwipy.KiwipyError), name
