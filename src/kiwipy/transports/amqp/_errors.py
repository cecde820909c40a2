"""AMQP library errors translated into kiwipy's, at the transport's boundary."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Iterator

import aiormq
import pamqp.exceptions

from kiwipy.exceptions import (
    BrokerError,
    ConnectionLost,
    DeliveryFailed,
    KiwipyError,
    UnroutableError,
)

__all__ = (
    "AmqpConnectionLost",
    "AmqpUnroutableError",
    "amqp_errors",
    "is_fatal",
    "scrub",
    "translate",
)


class AmqpUnroutableError(UnroutableError, aiormq.exceptions.DeliveryError):
    """The broker could not route a message; also aio-pika's ``DeliveryError``, which kiwipy
    0.9's task queues raised and its users catch."""

    def __init__(self, text: str) -> None:
        Exception.__init__(self, text)
        self.message = None
        self.frame = None  # type: ignore[assignment]  # no frame: we made this error

    __str__ = Exception.__str__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class AmqpConnectionLost(
    ConnectionLost, aiormq.exceptions.ConnectionClosed, aiormq.exceptions.ChannelInvalidStateError
):
    """The broker connection is gone.

    Also an ``aio_pika.exceptions.ConnectionClosed`` and ``ChannelInvalidStateError`` (aio-pika
    re-exports aiormq's classes), because kiwipy 0.9 users such as plumpy catch those around
    ``broadcast_send``.
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


_PRECONDITION_HINT = (
    " (an exchange or queue of that name already exists with other flags or arguments, for"
    " example one declared by another kiwipy version or with other settings; RabbitMQ refuses"
    " to redeclare it differently: use the same settings, or delete it first)"
)
_CONNECTION_ERRORS = (
    aiormq.AMQPConnectionError,
    aiormq.ChannelInvalidStateError,
    ConnectionError,
    OSError,  # includes the builtin TimeoutError (= asyncio.TimeoutError on 3.11+)
    asyncio.TimeoutError,
)


def _reply_text(exc: BaseException) -> str:
    return " ".join(str(arg) for arg in exc.args if arg is not None) or type(exc).__name__


def translate(exc: Exception, what: str) -> Exception:
    """Return the kiwipy exception for ``exc`` raised while doing ``what``.

    kiwipy's own errors and errors that are not the AMQP library's come back unchanged.
    """
    if isinstance(exc, KiwipyError):
        return exc
    if isinstance(exc, aiormq.PublishError):
        reason = getattr(exc.frame, "reply_text", None) or "NO_ROUTE"
        return AmqpUnroutableError(f"Cannot {what}: the broker could not route it ({reason})")
    if isinstance(exc, aiormq.DeliveryError):
        return DeliveryFailed(f"Cannot {what}: the broker refused the message (basic.nack)")
    if isinstance(exc, aiormq.ChannelPreconditionFailed):
        return BrokerError(f"Cannot {what}: {_reply_text(exc)}{_PRECONDITION_HINT}")
    if isinstance(exc, aiormq.AMQPChannelError):
        return BrokerError(f"Cannot {what}: the broker refused: {_reply_text(exc)}")
    # aiormq fails what is still pending on a closing connection with a bare ``Exception``.
    if isinstance(exc, _CONNECTION_ERRORS) or type(exc) is Exception:
        return AmqpConnectionLost(f"Cannot {what}: the broker connection is gone ({exc!r})")
    if isinstance(exc, (aiormq.AMQPError, pamqp.exceptions.PAMQPException)):
        return BrokerError(f"Cannot {what}: AMQP error {exc!r}")
    return exc


@contextlib.contextmanager
def amqp_errors(what: str) -> Iterator[None]:
    """Translate AMQP library errors raised in the block (``raise ... from exc``)."""
    try:
        yield
    except Exception as exc:
        translated = translate(exc, what)
        if translated is exc:
            raise
        raise translated from exc


def is_fatal(exc: BaseException) -> bool:
    """Whether a connect error will not go away by trying again (bad credentials, no vhost)."""
    return isinstance(
        exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.ConnectionNotAllowed
    )


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from ``text`` (an error message), just in case."""
    password = urllib.parse.urlsplit(url).password
    return text.replace(password, "****") if password else text
