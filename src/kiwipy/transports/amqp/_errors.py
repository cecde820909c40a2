"""AMQP library errors translated into kiwipy's, at the transport's boundary."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Callable, Iterator

import aiormq
import pamqp.exceptions

from kiwipy.exceptions import (
    BrokerError,
    BrokerRefused,
    ConnectionLost,
    DeliveryFailed,
    KiwipyError,
    UnroutableError,
)

__all__ = (
    "AmqpBrokerRefused",
    "AmqpConnectionLost",
    "AmqpUnroutableError",
    "ClosedByBroker",
    "amqp_errors",
    "cancelled_by_caller",
    "refusal",
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


class AmqpBrokerRefused(BrokerRefused, AmqpConnectionLost):
    """The broker refused the connection (no such vhost, access refused, not allowed)."""


class ClosedByBroker(aiormq.exceptions.ConnectionClosed):
    """The broker answered the connection handshake with ``connection.close``: its reply code
    and text, which aiormq would report as an unexpected frame without them."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(reply_code, reply_text)
        self.reply_code = reply_code
        self.reply_text = reply_text

    def __str__(self) -> str:
        return f"{self.reply_code} {self.reply_text}"

    def __repr__(self) -> str:
        return f"ClosedByBroker({self.reply_code}, {self.reply_text!r})"


#: Connection-level reply codes that say "not with these credentials, on this vhost": trying
#: again cannot help until an operator changes the broker (ACCESS_REFUSED, NOT_ALLOWED,
#: INVALID_PATH).
_REFUSAL_CODES = frozenset({403, 530, 402})
_REFUSAL_HINTS = {
    403: "the user name or password is wrong, or the user may not log in",
    530: "the virtual host does not exist, or the user has no permission on it",
    402: "the virtual host name is invalid",
}


def refusal(exc: BaseException, lead: str) -> AmqpBrokerRefused | None:
    """The :class:`AmqpBrokerRefused` for ``exc`` if it is the broker refusing the connection,
    else ``None``. ``lead`` starts the message (``"The broker at <masked address> refused the
    connection"``); the broker's reply code and text and a hint follow."""
    code: int | None
    text: str
    if isinstance(exc, ClosedByBroker):
        code, text = exc.reply_code, exc.reply_text
    elif isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        code, text = 403, _reply_text(exc)
    elif isinstance(exc, aiormq.ConnectionNotAllowed):
        code, text = 530, _reply_text(exc)
    else:
        return None
    if code not in _REFUSAL_CODES:
        return None
    hint = _REFUSAL_HINTS[code]
    message = f"{lead}: {code} {text} ({hint})"
    return AmqpBrokerRefused(message, reply_code=code, reply_text=text)


def cancelled_by_caller(gone: Callable[[], bool] | None = None) -> bool:
    """Whether a ``CancelledError`` caught in the running task is a cancellation of the task
    (to let through), not one that aiormq raised from a dropped connection.

    aiormq fails what waits on a connection it drops for missed heartbeats with a
    ``CancelledError``. On Python 3.11+ the task says whether it is being cancelled; on 3.10
    ``gone()`` (the channel or connection is closed) decides, else it is the caller's.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if task is None:
        return True
    if cancelling is None:
        return gone is None or not gone()
    return bool(cancelling())


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
    refused = refusal(exc, f"Cannot {what}: the broker refused the connection")
    if refused is not None:
        return refused
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
def amqp_errors(what: str, gone: Callable[[], bool] | None = None) -> Iterator[None]:
    """Translate AMQP library errors raised in the block (``raise ... from exc``).

    A ``CancelledError`` that aiormq raised because the connection dropped (not a cancellation
    of the running task, see :func:`cancelled_by_caller`) becomes ``ConnectionLost``.
    """
    try:
        yield
    except asyncio.CancelledError as exc:
        if cancelled_by_caller(gone):
            raise
        raise AmqpConnectionLost(
            f"Cannot {what}: the broker connection is gone (dropped by the AMQP client)"
        ) from exc
    except Exception as exc:
        translated = translate(exc, what)
        if translated is exc:
            raise
        raise translated from exc


def scrub(text: str, *urls: str) -> str:
    """Remove the URLs' passwords from ``text`` (an error message), just in case."""
    for url in urls:
        try:
            password = urllib.parse.urlsplit(url).password
        except ValueError:
            continue
        if password:
            text = text.replace(password, "****")
            unquoted = urllib.parse.unquote(password)
            if unquoted:
                text = text.replace(unquoted, "****")
    return text
