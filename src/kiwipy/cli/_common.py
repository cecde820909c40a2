"""What every subcommand shares: connection options, JSON arguments and one-line errors."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

import kiwipy.sync
from kiwipy.settings import LOCAL_URL, URL_VARIABLE, Settings, mask_url, resolve_url

__all__ = (
    "BadInput",
    "CliError",
    "ConnectionOptions",
    "connection_options",
    "dump_json",
    "parse_json",
    "read_json_argument",
    "scrub",
)

F = TypeVar("F", bound=Callable[..., Any])

URL_ENV = URL_VARIABLE
#: click settings every command shares.
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CliError(click.ClickException):
    """An expected failure: printed as one line, exit code 1."""

    exit_code = 1


class BadInput(CliError):
    """What the user gave cannot work (a malformed URL, a broken worker module, an unknown
    queue): printed as one line, exit code 2."""

    exit_code = 2


def default_url() -> str:
    """``kiwipy --url URL COMMAND``'s URL, else ``$KIWIPY_URL``, else the local broker."""
    context = click.get_current_context(silent=True)
    given = context.find_root().params.get("url") if context is not None else None
    return resolve_url(given if isinstance(given, str) else None)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password (and any URL spelling it) masked, on one line."""
    text = text.replace(url, mask_url(url))
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "****")
        unquoted = urllib.parse.unquote(password)
        if unquoted:
            text = text.replace(unquoted, "****")
    return " ".join(text.split())


class ConnectionOptions:
    """The connection options a subcommand was given, and how to connect with them."""

    def __init__(
        self,
        url: str,
        exchange_prefix: str | None,
        testing_mode: bool,
        connect_timeout: float,
    ) -> None:
        self.url = url
        self.exchange_prefix = exchange_prefix
        self.testing_mode = testing_mode
        self.connect_timeout = connect_timeout

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def options(self, **extra: Any) -> dict[str, Any]:
        """Keyword options for :func:`kiwipy.sync.connect`."""
        options: dict[str, Any] = {"connection_timeout": self.connect_timeout}
        if self.exchange_prefix:
            options["message_exchange"] = f"{self.exchange_prefix}.messages"
            options["task_exchange"] = f"{self.exchange_prefix}.tasks"
            options["task_queue"] = f"{self.exchange_prefix}.tasks"
        if self.testing_mode:
            options["testing_mode"] = True
        options.update(extra)
        return options

    @property
    def default_task_queue(self) -> str:
        if self.exchange_prefix:
            return f"{self.exchange_prefix}.tasks"
        return "kiwipy.tasks"

    def connect(self, **extra: Any) -> kiwipy.sync.Communicator:
        """Connect, turning every expected failure into a one-line :class:`CliError`."""
        with self.errors():
            return kiwipy.sync.connect(self.url, **self.options(**extra))

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn kiwipy's errors into one-line CLI errors, never showing the password."""
        try:
            yield
        except click.ClickException:
            raise
        except kiwipy.RemoteException as exc:
            kind = exc.remote_type or "an exception"
            message = exc.remote_message or str(exc)
            raise CliError(scrub(f"The remote side raised {kind}: {message}", self.url)) from exc
        except kiwipy.UnroutableError as exc:
            raise CliError(scrub(str(exc), self.url)) from exc
        except kiwipy.exceptions.ConnectionLost as exc:
            text = str(exc) or "the connection to the broker was lost"
            if not text.startswith("Cannot connect"):
                text = f"Connection to {self.masked_url} lost: {text}"
            raise CliError(scrub(text, self.url)) from exc
        except TimeoutError as exc:  # DeadlineExceeded and concurrent.futures' own
            raise CliError(
                scrub(f"Timed out: {exc}" if str(exc) else "Timed out", self.url)
            ) from exc
        except (kiwipy.KiwipyError, ValueError, TypeError) as exc:
            name = type(exc).__name__
            raise CliError(scrub(f"{name}: {exc}", self.url)) from exc


def connection_options(function: F) -> F:
    """Add ``--url``, ``--exchange-prefix``, ``--testing-mode`` and ``--connect-timeout``; the
    command receives them as one ``connection`` argument."""

    @click.option(
        "--url",
        default=default_url,
        show_default=f"${URL_ENV}, else {LOCAL_URL} (the local broker)",
        help="Broker URL (amqp://, amqps:// or memory://).",
    )
    @click.option(
        "--exchange-prefix",
        default=None,
        envvar="KIWIPY_PREFIX",
        metavar="PREFIX",
        help="Use PREFIX.messages / PREFIX.tasks instead of kiwipy.messages / kiwipy.tasks "
        "(separate namespaces on one broker). [env: KIWIPY_PREFIX]",
    )
    @click.option(
        "--testing-mode",
        is_flag=True,
        envvar="KIWIPY_TESTING_MODE",
        help="Declare queues that expire when unused (kiwipy's testing mode).",
    )
    @click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0.1),
        default=5.0,
        show_default=True,
        metavar="SECONDS",
        help="Give up connecting after this long.",
    )
    @functools.wraps(function)
    def wrapper(
        *args: Any,
        url: str,
        exchange_prefix: str | None,
        testing_mode: bool,
        connect_timeout: float,
        **kwargs: Any,
    ) -> Any:
        try:
            Settings.from_url(url)  # the one URL check, before anything connects
        except ValueError as exc:
            raise BadInput(scrub(str(exc), url)) from None
        connection = ConnectionOptions(url, exchange_prefix, testing_mode, connect_timeout)
        with connection.errors():
            return function(*args, connection=connection, **kwargs)

    return wrapper  # type: ignore[return-value]


def parse_json(text: str, what: str = "JSON") -> Any:
    """Parse a JSON argument; a bad one is a one-line :class:`CliError`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): {text!r}"
            " (quote strings: '\"text\"')"
        ) from exc


def read_json_argument(text: str) -> Any:
    """A JSON argument; ``-`` reads it from standard input."""
    if text == "-":
        return parse_json(sys.stdin.read(), "The JSON read from stdin")
    return parse_json(text)


def dump_json(value: Any) -> str:
    """One line of JSON (values JSON cannot hold are shown with ``repr``)."""
    return json.dumps(value, default=repr, ensure_ascii=False)


def configure_logging(verbose: int) -> None:
    """Warnings (kiwipy's own: lost tasks, consumer timeouts) go to stderr, one line each.

    The AMQP client logs every failed connection attempt with a traceback; the CLI reports
    those itself in one line, so it stays quiet unless asked (``-vv``).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="kiwipy: %(levelname)s: %(message)s")
    if verbose < 2:
        logging.getLogger("aiormq").setLevel(logging.CRITICAL)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
