"""One frozen settings object, parsed once from a URL plus keyword options.

Both facades (asyncio and blocking) and every transport read the same :class:`Settings`; nothing
relays a dozen keyword arguments through several layers.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

__all__ = ("DEFAULT_URL", "LOCAL_URL", "Settings", "mask_url", "resolve_url")

#: kiwipy 0.9's default broker: what its entry points (``kiwipy.rmq``, ``kiwipy.connect``) and
#: a bare ``Settings()`` still use.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"
#: The default of ``kiwipy.aio.connect()``, ``kiwipy.sync.connect()`` and the ``kiwipy`` command
#: when neither a URL nor ``$KIWIPY_URL`` is given: the local broker, nothing to install.
LOCAL_URL = "local://"
#: The environment variable every entry point reads for its URL when none is given.
URL_VARIABLE = "KIWIPY_URL"

MESSAGE_EXCHANGE = "kiwipy.messages"
TASK_EXCHANGE = "kiwipy.tasks"
TASK_QUEUE = "kiwipy.tasks"
# Queue arguments must equal those kiwipy 0.9 declared, or RabbitMQ refuses the redeclaration.
TASK_MESSAGE_TTL_MS = 604_800_000
TESTING_QUEUE_EXPIRES_MS = 10_000
QUEUE_EXPIRES_MS = 60_000
MESSAGE_TTL_MS = 66_000

_SCHEMES = ("amqp", "amqps", "memory", "local")
# Options that may also be given as URL query parameters, with their parsers.
_QUERY_OPTIONS: dict[str, Callable[[str], Any]] = {
    "heartbeat": int,
    "task_queue_type": str,
    "connection_timeout": lambda text: float(text) / 1000.0,  # RabbitMQ URI spec: milliseconds
}
#: TLS query parameters of RabbitMQ's URI spec (https://www.rabbitmq.com/docs/uri-query-parameters)
#: and the settings they fill. They are only allowed in ``amqps://`` URLs.
_TLS_QUERY_OPTIONS: dict[str, str] = {
    "cacertfile": "ssl_cafile",
    "certfile": "ssl_certfile",
    "keyfile": "ssl_keyfile",
    "verify": "ssl_verify",
    "server_name_indication": "ssl_server_hostname",
}
_TLS_FILE_FIELDS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_server_hostname")


def _parse_verify(text: str) -> bool:
    """``verify=verify_peer`` (the default) or ``verify=verify_none``, as the URI spec has it."""
    if text == "verify_peer":
        return True
    if text == "verify_none":
        return False
    raise ValueError(f"verify must be verify_peer or verify_none, not {text!r}")


def _tls_query_options(query: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, field_name in _TLS_QUERY_OPTIONS.items():
        if name not in query:
            continue
        value = query[name]
        if name == "verify":
            options[field_name] = _parse_verify(value)
        elif name == "server_name_indication":
            # "disable" turns SNI off in the Erlang client; Python always sends the host
            # name it checks, so we keep the URL's host then.
            options[field_name] = None if value == "disable" else value
        else:
            options[field_name] = value
    return options


# ``scheme:`` (and ``//``), then everything up to the last ``@``: the credentials of a URL too
# malformed to split. Masking too much is safe; a password may hold ``/``.
_CREDENTIALS = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.-]*:(?://)?).*@", re.DOTALL)


def _mask_loosely(url: str) -> str:
    """Mask everything between the scheme's ``:`` and the last ``@`` of the authority."""
    match = _CREDENTIALS.match(url)
    if match is None:
        return url
    return f"{match.group(1)}****@{url[match.end() :]}"


# A ``;`` that starts the next address of a URL list: one followed by ``scheme://``. A ``;``
# anywhere else (in a password, say) is no separator.
# Spaces around it are allowed.
_LIST_SEPARATOR = re.compile(r"[ \t]*;[ \t]*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``****`` (safe for logs and reprs).

    A URL list (``amqp://u:p@h1/v;amqp://h2``) has every address masked. It never raises: a URL
    too malformed to split has everything between its scheme's ``:`` and ``@`` masked.
    """
    addresses = _LIST_SEPARATOR.split(url)
    if len(addresses) > 1:
        return ";".join(_mask_one(address) for address in addresses)
    return _mask_one(url)


def _mask_one(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        if not url.partition(":")[2].startswith("//"):
            return _mask_loosely(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return _mask_loosely(url)
    netloc = f"{user}:****@{host}{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _check_url(url: str) -> None:
    """Raise a ``ValueError`` naming what is wrong with ``url`` (its password masked).

    The one check of a communicator URL: a known scheme, ``//`` after it, no spaces or
    control characters, and a port (if any) from 0 to 65535.
    """
    masked = mask_url(url)
    if any(char.isspace() or not char.isprintable() for char in url):
        raise ValueError(
            f"Malformed communicator URL {masked!r}: it holds a space or control character "
            "(a stray space at either end?)"
        )
    scheme, colon, rest = url.partition(":")
    if not colon:
        raise ValueError(f"Malformed communicator URL {masked!r}: no scheme (such as amqp://)")
    if scheme.lower() not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ValueError(
            f"Unknown communicator URL scheme {scheme!r} in {masked!r} (known: {known})"
        )
    if not rest.startswith("//"):
        raise ValueError(
            f"Malformed communicator URL {masked!r}: '//' missing after '{scheme}:' "
            f"(write {scheme}://...)"
        )
    netloc = rest[2:].partition("/")[0].partition("?")[0]
    if ";" in netloc.rpartition("@")[2] or url.endswith(";"):
        # amqp://h1;h2 (a list whose second address has no scheme), or a trailing ';'.
        raise ValueError(
            f"Malformed communicator URL {masked!r}: ';' separates the complete addresses of "
            "a failover list, each with its scheme "
            "(amqp://user:password@host1/vhost;amqp://host2;amqp://host3)"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- urllib checks the port when it is read
    except ValueError as exc:
        raise ValueError(f"Malformed communicator URL {masked!r}: {exc}") from None


def split_url_list(url: str) -> list[str]:
    """The addresses of ``url``: one, or those of a failover list ``amqp://u:p@h1/v;amqp://h2``.

    Every address is checked (:func:`_check_url`); the failover addresses come back as given,
    not yet completed from the first (:func:`complete_failover_url` does that). A malformed
    entry is a ``ValueError`` that names it, its password masked.
    """
    addresses = _LIST_SEPARATOR.split(url)
    if len(addresses) == 1:
        _check_url(url)
        return addresses
    for number, address in enumerate(addresses, start=1):
        try:
            _check_url(address)
        except ValueError as exc:
            raise ValueError(
                f"In the URL list {mask_url(url)!r}, address {number} of {len(addresses)}: {exc}"
            ) from None
    return addresses


#: Query parameters that a failover address may set to a value of its own: the others are
#: options of the whole communicator, read from the first URL.
_PER_ADDRESS_QUERY = frozenset({"server_name_indication"})


def complete_failover_url(address: str, first: str) -> str:
    """``address`` with what it leaves out taken from ``first``, as kombu does.

    The user name, password, port, virtual host (the path, when ``address`` has none at all:
    ``amqp://h2``; ``amqp://h2/`` names the default virtual host) and the query options come
    from ``first``. The password is taken only with the user name (or when both name the same
    user). A query option other than ``server_name_indication`` must not differ from the first
    URL's: options apply to every address.
    """
    _check_url(address)
    masked = mask_url(address)
    first_parts = urllib.parse.urlsplit(first)
    parts = urllib.parse.urlsplit(address)
    if first_parts.scheme not in ("amqp", "amqps"):
        raise ValueError(
            f"Failover URL {masked!r}: only amqp:// and amqps:// URLs take failover "
            f"addresses, not {first_parts.scheme}://"
        )
    if parts.scheme.lower() != first_parts.scheme.lower():
        raise ValueError(
            f"Failover URL {masked!r}: its scheme {parts.scheme}:// differs from the first "
            f"URL's {first_parts.scheme}:// (every address of a list is TLS, or none is)"
        )
    if not parts.hostname:
        raise ValueError(f"Failover URL {masked!r}: no host")
    netloc = _completed_netloc(parts, first_parts)
    path = parts.path or first_parts.path
    query = _completed_query(parts.query, first_parts.query, masked)
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


def _completed_netloc(parts: urllib.parse.SplitResult, first: urllib.parse.SplitResult) -> str:
    # Raw (still percent-encoded) user and password: rebuilt as they were written.
    has_userinfo = "@" in parts.netloc
    user = parts.username if has_userinfo else first.username
    password = parts.password
    if password is None and (not has_userinfo or parts.username == first.username):
        password = first.password
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port if parts.port is not None else first.port
    userinfo = ""
    if user is not None:
        userinfo = f"{user}:{password}@" if password is not None else f"{user}@"
    return f"{userinfo}{host}:{port}" if port is not None else f"{userinfo}{host}"


def _completed_query(query: str, first_query: str, masked: str) -> str:
    first_options = urllib.parse.parse_qsl(first_query, keep_blank_values=True)
    own = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    inherited = dict(first_options)
    for name, value in own.items():
        if name in _PER_ADDRESS_QUERY:
            continue
        if inherited.get(name) != value:
            raise ValueError(
                f"Failover URL {masked!r}: option {name}={value!r} differs from the first "
                "URL's; options apply to every address and are read from the first URL (only "
                "server_name_indication may differ per address)"
            )
    # The first URL's own server_name_indication names the first host, not this one.
    options = [(n, v) for n, v in first_options if n not in _PER_ADDRESS_QUERY]
    options += [(n, v) for n, v in own.items() if n in _PER_ADDRESS_QUERY]
    return urllib.parse.urlencode(options)


def _failover_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # one URL, or a ';' list of them
        return tuple(split_url_list(value))
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a communicator needs to know, fixed at connect time.

    Build it with :meth:`from_url`; the URL's password never shows in ``repr`` or ``str``.
    """

    url: str = dataclasses.field(default=DEFAULT_URL, repr=False)
    heartbeat: int = 30
    connection_timeout: float = 10.0
    message_exchange: str = MESSAGE_EXCHANGE
    task_exchange: str = TASK_EXCHANGE
    task_queue: str = TASK_QUEUE
    task_prefetch_count: int = 100
    task_prefetch_size: int = 0
    queue_expires_ms: int = QUEUE_EXPIRES_MS
    task_message_ttl_ms: int = TASK_MESSAGE_TTL_MS
    testing_mode: bool = False
    codec: str = "json"
    encoder: Callable[[Any], bytes] | None = dataclasses.field(default=None, repr=False)
    decoder: Callable[[bytes], Any] | None = dataclasses.field(default=None, repr=False)
    max_message_bytes: int = 16 * 1024 * 1024
    #: Default deadline of an RPC's answer, in seconds, over the whole chain of ``pending``
    #: replies: a recipient that dies after answering "pending" cannot be noticed otherwise.
    rpc_timeout: float | None = 60.0
    task_timeout: float | None = None
    #: Default bound, in seconds, on one operation: a send's confirm, a blocking call.
    operation_timeout: float = 30.0
    #: Longest pause between two reconnection attempts (they back off up to it, with jitter).
    reconnect_max_delay: float = 5.0
    #: Where tasks that cannot be run (undecodable, rejected too often) go, with the reason in
    #: their headers; ``None``: rejected without requeue (a broker dead-letter policy applies).
    dead_letter_queue: str | None = None
    #: After this many rounds of every subscriber rejecting a task, it is dead-lettered.
    task_max_rejections: int = 10
    #: Pause before a rejected task goes back to the queue; it doubles with each attempt.
    task_rejection_pause: float = 0.2
    #: Seconds a task may run unacknowledged before RabbitMQ takes it back, or ``"none"``;
    #: set per consumer on RabbitMQ 3.11.15 and later (no queue argument changes). ``None``:
    #: the broker's own setting (30 min by default).
    consumer_timeout: float | str | None = None
    #: ``"classic"`` (kiwipy 0.9's declaration, so that mixed fleets share the queue) or
    #: ``"quorum"``: a replicated queue on a RabbitMQ cluster (RabbitMQ 3.8 and later).
    task_queue_type: str = "classic"
    #: Quorum task queues only: after this many deliveries a task is dead-lettered (or dropped)
    #: by the broker itself, whatever the workers do. RabbitMQ 4.x defaults to 20 when unset;
    #: kiwipy always sets it, so the behaviour is the same on 3.x and 4.x.
    task_delivery_limit: int = 20
    #: TLS (``amqps://`` only; also the URL query parameters ``cacertfile``, ``certfile``,
    #: ``keyfile``, ``verify=verify_peer|verify_none`` and ``server_name_indication``).
    #: CA bundle to trust instead of the system's; ``None``: the system's default CAs.
    ssl_cafile: str | None = None
    #: Client certificate (PEM, may hold the key too) and its key, for brokers that require one.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: Check the broker's certificate chain and host name. Turning it off lets anyone on the
    #: network read and change the traffic (and the password); kiwipy logs a warning.
    ssl_verify: bool = True
    #: Host name to check the broker's certificate against (and to send as SNI) when it is not
    #: the URL's host, e.g. when connecting to an IP address.
    ssl_server_hostname: str | None = None
    #: More addresses of the same broker (cluster nodes), tried in turn when connecting and
    #: reconnecting; what an address leaves out (user, password, port, virtual host, query
    #: options) is taken from ``url``. Also given as a URL list:
    #: ``amqp://u:p@h1/v;amqp://h2;amqp://h3``. Stored complete (passwords masked in ``repr``).
    failover_urls: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    #: Try the addresses in a random order (per communicator), so that clients spread over the
    #: nodes instead of all connecting to the first.
    failover_shuffle: bool = False
    #: Deadline, in seconds, of each declare, bind, consume and channel open: a frozen cluster
    #: member can block a declare for a minute. On expiry kiwipy raises ``DeadlineExceeded``
    #: (or ``ConnectionLost`` when the connection itself no longer answers, and reconnects).
    declare_timeout: float = 10.0

    def __post_init__(self) -> None:
        addresses = split_url_list(self.url)
        first = addresses[0]
        failover = (*addresses[1:], *_failover_tuple(self.failover_urls))
        object.__setattr__(self, "url", first)
        completed = []
        for number, address in enumerate(failover, start=2):
            try:
                completed.append(complete_failover_url(address, first))
            except ValueError as exc:
                raise ValueError(f"Address {number} of {len(failover) + 1}: {exc}") from None
        object.__setattr__(self, "failover_urls", tuple(completed))
        scheme = urllib.parse.urlsplit(self.url).scheme
        if self.declare_timeout <= 0:
            raise ValueError("declare_timeout must be positive (seconds)")
        if self.task_prefetch_count < 0:
            raise ValueError("task_prefetch_count must be >= 0 (0 means unlimited)")
        if self.max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        if self.task_queue_type not in ("classic", "quorum"):
            raise ValueError(
                f'task_queue_type must be "classic" or "quorum", not {self.task_queue_type!r}'
            )
        if self.task_delivery_limit <= 0:
            raise ValueError("task_delivery_limit must be positive")
        if isinstance(self.consumer_timeout, str) and self.consumer_timeout != "none":
            raise ValueError('consumer_timeout must be seconds, "none" or None')
        if (self.encoder is None) != (self.decoder is None):
            raise ValueError("encoder and decoder must be given together")
        tls_options = [name for name in _TLS_FILE_FIELDS if getattr(self, name) is not None]
        if not self.ssl_verify:
            tls_options.append("ssl_verify")
        if tls_options and scheme != "amqps":
            # Fail closed: whoever set them expects an encrypted connection.
            raise ValueError(
                f"TLS option(s) {', '.join(tls_options)} need an amqps:// URL, not "
                f"{mask_url(self.url)}"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate)")

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> Settings:
        """Parse ``url`` (query parameters such as ``?heartbeat=60`` included) and ``options``.

        Keyword options win over query parameters. Unknown options raise ``TypeError``.
        """
        url = url or DEFAULT_URL
        first = split_url_list(url)[0]
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"Unknown communicator option(s): {', '.join(sorted(unknown))}")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(first).query))
        from_query = {
            name: parse(query[name]) for name, parse in _QUERY_OPTIONS.items() if name in query
        }
        from_query.update(_tls_query_options(query))
        return cls(url=url, **{**from_query, **options})

    @property
    def scheme(self) -> str:
        return urllib.parse.urlsplit(self.url).scheme

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address, complete: ``url`` then the ``failover_urls``."""
        return (self.url, *self.failover_urls)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if field.repr
        )
        failover = tuple(mask_url(url) for url in self.failover_urls)
        return f"Settings(url={self.masked_url!r}, {fields}, failover_urls={failover!r})"

    __str__ = __repr__


def resolve_url(url: str | None) -> str:
    """The URL to use: ``url``, else ``$KIWIPY_URL``, else :data:`LOCAL_URL`."""
    return url or os.environ.get(URL_VARIABLE) or LOCAL_URL
