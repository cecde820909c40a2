"""The one exception tree of kiwipy.

::

    KiwipyError
    ├── RemoteException              a remote subscriber raised; carries type, message, traceback
    ├── DeliveryFailed               a message could not be delivered
    │   └── UnroutableError          nobody is bound to receive it (unknown RPC id, no task queue)
    ├── TaskRejected                 raised by a task subscriber to pass the task on
    ├── DuplicateSubscriberIdentifier
    ├── CommunicatorClosed           the communicator was closed
    ├── QueueEmpty                   ``next_task()`` found nothing
    ├── DeadlineExceeded             also ``TimeoutError`` (builtin, concurrent.futures, asyncio)
    ├── InvalidStateError            also ``asyncio.InvalidStateError``
    ├── ConnectionLost               also ``ConnectionError``: the broker connection went away
    │   ├── ReplyLost                a reply can no longer arrive (its reply queue died)
    │   └── TLSError                 the TLS handshake failed (unknown CA, host name, expired...)
    ├── BrokerError                  the broker refused an operation (access, precondition...)
    │   └── BrokerRefused            the broker refused the connection (no vhost, access
    │                                refused, not allowed); also a ConnectionLost
    └── MessageError                 also ``ValueError``: a message we cannot handle
        ├── EncodeError              a value cannot be encoded with the chosen codec
        ├── DecodeError              a body does not decode
        └── MessageTooLarge          a body is over the size cap

Names kiwipy 0.9 exported are kept, so ``except kiwipy.UnroutableError`` code keeps working.
``TimeoutError`` stays what it was in kiwipy 0.9, ``concurrent.futures.TimeoutError``; what
kiwipy raises on a timeout, :class:`DeadlineExceeded`, is a subclass of it.
Errors of the AMQP library are translated at the transport boundary (``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import sys

__all__ = (
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
)


class KiwipyError(Exception):
    """Root of every error kiwipy raises on purpose."""


class RemoteException(KiwipyError):
    """A remote subscriber raised an exception while handling our message.

    ``remote_type`` is the name of the remote exception class, ``remote_message`` its message and
    ``remote_traceback`` the formatted remote traceback (empty when the peer did not send one,
    as kiwipy 0.9 peers do not).
    """

    def __init__(
        self,
        *args: object,
        remote_type: str = "",
        remote_message: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(*args)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class DeliveryFailed(KiwipyError):
    """A message could not be delivered."""


class UnroutableError(DeliveryFailed):
    """The broker had nowhere to route the message (no RPC subscriber, no task queue)."""


class TaskRejected(KiwipyError):
    """Raised by a task subscriber to hand the task to the next subscriber."""


class DuplicateSubscriberIdentifier(KiwipyError):
    """The identifier is already in use (for RPC: anywhere on the broker)."""


class CommunicatorClosed(KiwipyError):
    """The communicator is closed; no further operations are possible."""


class QueueEmpty(KiwipyError):
    """No task was waiting in the queue."""


#: kiwipy 0.9's ``TimeoutError``: the one of :mod:`concurrent.futures` (the builtin one since
#: Python 3.11), so ``except kiwipy.TimeoutError`` also catches ``future.result(timeout=...)``.
TimeoutError = concurrent.futures.TimeoutError


if sys.version_info >= (3, 11):
    # builtins.TimeoutError, concurrent.futures.TimeoutError and asyncio.TimeoutError are one.
    class DeadlineExceeded(KiwipyError, builtins.TimeoutError):
        """An operation or a reply did not arrive before its deadline."""

else:

    class DeadlineExceeded(
        KiwipyError, builtins.TimeoutError, concurrent.futures.TimeoutError, asyncio.TimeoutError
    ):
        """An operation or a reply did not arrive before its deadline.

        Caught by ``except TimeoutError`` (builtin), ``except concurrent.futures.TimeoutError``
        and ``except asyncio.TimeoutError`` on every supported Python.
        """


class InvalidStateError(
    KiwipyError, asyncio.InvalidStateError, concurrent.futures.InvalidStateError
):
    """An operation is not allowed in the object's current state."""


class ConnectionLost(KiwipyError, ConnectionError):
    """The connection to the broker was lost (or could not be made)."""


class ReplyLost(ConnectionLost):
    """The reply to a request can no longer arrive."""


class TLSError(ConnectionLost):
    """No connection: the TLS handshake with the broker failed.

    The message names the cause (unknown certificate authority, host name mismatch, expired
    certificate, client certificate required, protocol version, not a TLS port...).
    Nothing was sent: the password never left the client.
    """


class BrokerError(KiwipyError):
    """The broker refused an operation (access refused, precondition failed, not found...)."""


class BrokerRefused(BrokerError, ConnectionLost):
    """The broker refused the connection: unknown virtual host, access refused (credentials,
    or no permission on the virtual host), not allowed.

    ``reply_code`` and ``reply_text`` are the broker's reason (``530``, ``"NOT_ALLOWED - vhost
    x not found"``). Trying again does not help until the broker's configuration changes, so
    kiwipy does not reconnect after it: the communicator is closed. Also a
    :class:`ConnectionLost` (no connection could be made), as kiwipy 0.9's callers expect.
    """

    def __init__(
        self, message: str, *, reply_code: int | None = None, reply_text: str = ""
    ) -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.reply_text = reply_text


class MessageError(KiwipyError, ValueError):
    """A message that kiwipy cannot handle."""


class EncodeError(MessageError):
    """A value could not be encoded with the chosen codec."""

    @classmethod
    def unsupported(cls, value: object, codec_name: str) -> EncodeError:
        """The error for a value of a type that ``codec_name`` cannot write."""
        return cls(f"Values of type {type_name(value)} cannot be encoded as {codec_name}")


class DecodeError(MessageError):
    """A message body could not be decoded."""


class MessageTooLarge(MessageError):
    """A message body is larger than the configured cap."""


def type_name(value: object) -> str:
    """``value``'s type as errors name it: ``int``, or ``module.Class`` outside the builtins."""
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
