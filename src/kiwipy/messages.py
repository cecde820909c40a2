"""The shapes of kiwipy messages on the wire, compatible with kiwipy 0.9 peers.

* a task body is the pair ``[task, no_reply]`` (kiwipy 0.9 sends a YAML tuple);
* a broadcast body is ``{'body', 'sender', 'subject', 'correlation_id'}``;
* a reply is a mapping with one of the keys ``cancelled``, ``exception``, ``result``, ``pending``
  (checked in that order, as kiwipy 0.9 does). Exception replies also carry the remote type name
  and traceback text under keys kiwipy 0.9 peers ignore.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import traceback
from collections.abc import Mapping
from typing import Any

from kiwipy.exceptions import DecodeError, RemoteException

__all__ = (
    "BroadcastEnvelope",
    "Reply",
    "broadcast_body",
    "cancelled_reply",
    "exception_reply",
    "parse_broadcast",
    "parse_reply",
    "parse_task",
    "pending_reply",
    "result_reply",
    "task_body",
)

RESULT_KEY = "result"
EXCEPTION_KEY = "exception"
CANCELLED_KEY = "cancelled"
PENDING_KEY = "pending"
HOST_KEY = "host"
EXCEPTION_TYPE_KEY = "exception_type"
EXCEPTION_MESSAGE_KEY = "exception_message"
TRACEBACK_KEY = "traceback"

_HOST_INFO: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}


def host_info() -> dict[str, Any]:
    """Who answered: kiwipy 0.9 adds this to task replies."""
    if _HOST_INFO["pid"] != os.getpid():  # after a fork
        _HOST_INFO["pid"] = os.getpid()
    return dict(_HOST_INFO)


# -- tasks -------------------------------------------------------------------------------------


def task_body(task: Any, no_reply: bool) -> list[Any]:
    return [task, no_reply]


def parse_task(value: Any) -> tuple[Any, bool]:
    """Return ``(task, no_reply)`` from a decoded task body, or raise :class:`DecodeError`."""
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[1], bool):
        return value[0], value[1]
    raise DecodeError(
        f"Not a kiwipy task body: expected [task, no_reply], got {type(value).__name__}"
    )


# -- broadcasts --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BroadcastEnvelope:
    body: Any
    sender: Any = None
    subject: Any = None
    correlation_id: Any = None


def broadcast_body(envelope: BroadcastEnvelope) -> dict[str, Any]:
    return dataclasses.asdict(envelope)


def parse_broadcast(value: Any) -> BroadcastEnvelope:
    if not isinstance(value, Mapping) or "body" not in value:
        raise DecodeError("Not a kiwipy broadcast: expected a mapping with a 'body' key")
    return BroadcastEnvelope(
        body=value["body"],
        sender=value.get("sender"),
        subject=value.get("subject"),
        correlation_id=value.get("correlation_id"),
    )


# -- replies -----------------------------------------------------------------------------------


def result_reply(result: Any) -> dict[str, Any]:
    return {RESULT_KEY: result}


def pending_reply() -> dict[str, Any]:
    return {PENDING_KEY: None}


def cancelled_reply(message: str | None = None) -> dict[str, Any]:
    return {CANCELLED_KEY: message}


def exception_reply(exc: BaseException) -> dict[str, Any]:
    """Describe ``exc`` as data: kiwipy 0.9 peers read the ``exception`` string."""
    type_name = type(exc).__name__
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        EXCEPTION_KEY: f"{type_name}: {exc}",
        EXCEPTION_TYPE_KEY: type_name,
        EXCEPTION_MESSAGE_KEY: str(exc),
        TRACEBACK_KEY: text,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A parsed reply: exactly one of the kinds is meaningful."""

    kind: str  # 'result' | 'exception' | 'cancelled' | 'pending'
    value: Any = None
    error: RemoteException | None = None


def parse_reply(value: Any) -> Reply:
    if not isinstance(value, Mapping):
        raise DecodeError(f"Not a kiwipy reply: expected a mapping, got {type(value).__name__}")
    if CANCELLED_KEY in value:
        return Reply(CANCELLED_KEY, value[CANCELLED_KEY])
    if EXCEPTION_KEY in value:
        return Reply(EXCEPTION_KEY, error=_remote_exception(value))
    if RESULT_KEY in value:
        return Reply(RESULT_KEY, value[RESULT_KEY])
    if PENDING_KEY in value:
        return Reply(PENDING_KEY)
    raise DecodeError("Not a kiwipy reply: none of result/exception/cancelled/pending")


def _remote_exception(value: Mapping[str, Any]) -> RemoteException:
    text = str(value[EXCEPTION_KEY])
    return RemoteException(
        text,
        remote_type=str(value.get(EXCEPTION_TYPE_KEY, "")),
        remote_message=str(value.get(EXCEPTION_MESSAGE_KEY, text)),
        remote_traceback=str(value.get(TRACEBACK_KEY, "")),
    )
