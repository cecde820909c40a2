"""kiwipy: robust, high-volume messaging (tasks, RPC, broadcasts) for scientific workflows."""

from kiwipy.exceptions import (
    CommunicatorClosed,
    DeliveryFailed,
    DuplicateSubscriberIdentifier,
    InvalidStateError,
    KiwipyError,
    QueueEmpty,
    RemoteException,
    TaskRejected,
    TimeoutError,
    UnroutableError,
)

__version__ = "1.0.0.dev0"

__all__ = (
    "CommunicatorClosed",
    "DeliveryFailed",
    "DuplicateSubscriberIdentifier",
    "InvalidStateError",
    "KiwipyError",
    "QueueEmpty",
    "RemoteException",
    "TaskRejected",
    "TimeoutError",
    "UnroutableError",
)
