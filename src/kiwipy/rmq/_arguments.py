"""kiwipy 0.9's communicator arguments, mapped onto :class:`kiwipy.settings.Settings`."""

from __future__ import annotations

import logging
import os
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from kiwipy.rmq import defaults
from kiwipy.settings import DEFAULT_URL, URL_VARIABLE, Settings

__all__ = ("ConnectionParams", "settings_from_arguments", "settings_from_call")

_LOGGER = logging.getLogger(__name__)

_FACTORY_WARNED = False
ConnectionParams = str | dict[str, Any] | None


# -- kiwipy 0.9 arguments -> Settings ----------------------------------------------------------


def settings_from_arguments(
    connection_params: ConnectionParams,
    connection_factory: Callable[..., Any] = defaults.CONNECTION_FACTORY,
    *,
    encoder: Callable[[Any], bytes] = defaults.ENCODER,
    decoder: Callable[[bytes], Any] = defaults.DECODER,
    queue_expires: int = defaults.QUEUE_EXPIRES,
    task_prefetch_count: int = defaults.TASK_PREFETCH_COUNT,
    async_task_timeout: float | None = None,
    **options: Any,
) -> Settings:
    """Map kiwipy 0.9's communicator arguments onto :class:`Settings`.

    ``queue_expires`` becomes ``queue_expires_ms`` and ``async_task_timeout`` becomes
    ``operation_timeout``. ``task_prefetch_count=0`` means kiwipy's finite default (kiwipy 0.9
    read it as "unlimited", letting one worker hoard every task). The ``defaults.ENCODER`` /
    ``DECODER`` pair means kiwipy's default codec; any other pair is used as given.
    """
    _check_factory(connection_factory)
    url, from_params = _url_and_options(connection_params)
    options = {**from_params, **options, "queue_expires_ms": queue_expires}
    if task_prefetch_count:
        options["task_prefetch_count"] = task_prefetch_count
    if encoder is not defaults.ENCODER or decoder is not defaults.DECODER:
        options.update(encoder=encoder, decoder=decoder)
    if async_task_timeout is not None:
        options["operation_timeout"] = float(async_task_timeout)
    return Settings.from_url(url, **options)


#: Names in an entry point's ``locals()`` that are not kiwipy 0.9 arguments.
_NOT_ARGUMENTS = ("self", "cls", "__class__")


def settings_from_call(arguments: Mapping[str, Any]) -> Settings:
    """The settings of one call to a kiwipy 0.9 entry point, built once.

    ``arguments`` is the entry point's ``locals()``, taken first thing, so that its signature
    stays kiwipy 0.9's while the eleven keywords are mapped in one place. A
    :class:`Settings` given as the connection is used as it is.
    """
    options = {name: value for name, value in arguments.items() if name not in _NOT_ARGUMENTS}
    connection = options.pop("connection_params", None) or options.pop("connection", None)
    if isinstance(connection, Settings):
        return connection
    return settings_from_arguments(connection, **options)


def _check_factory(factory: Callable[..., Any]) -> None:
    """Warn once if a custom connection factory is given: kiwipy cannot call it."""
    global _FACTORY_WARNED
    is_aio_pika_default = getattr(factory, "__name__", "") == "connect_robust" and getattr(
        factory, "__module__", ""
    ).startswith("aio_pika")
    if factory is defaults.CONNECTION_FACTORY or is_aio_pika_default or _FACTORY_WARNED:
        return
    _FACTORY_WARNED = True
    warnings.warn(
        f"kiwipy opens its connection itself; the connection_factory {factory!r} is ignored",
        UserWarning,
        stacklevel=5,
    )


# aio-pika connect() keywords that have a Settings counterpart or shape the URL.
_URL_PARTS = ("host", "port", "login", "password", "virtualhost", "ssl")
_OPTION_NAMES = {"heartbeat": "heartbeat", "timeout": "connection_timeout"}


def _url_and_options(params: ConnectionParams) -> tuple[str, dict[str, Any]]:
    """The URL and Settings options in kiwipy 0.9's ``connection_params``.

    A string is the URL; a dict holds aio-pika ``connect`` keywords: ``url`` or the URL parts
    (``host``, ``port``, ``login``, ``password``, ``virtualhost``, ``ssl``), plus ``heartbeat``
    and ``timeout``. Other keywords are ignored with a warning.
    """
    if params is None:  # as kiwipy 0.9, unless $KIWIPY_URL says otherwise
        return os.environ.get(URL_VARIABLE) or DEFAULT_URL, {}
    if isinstance(params, str):
        return params, {}
    if not isinstance(params, dict):
        raise TypeError(f"connection_params must be a str, dict or None, not {type(params)}")
    unknown = set(params) - {"url", *_URL_PARTS, *_OPTION_NAMES}
    if unknown:
        warnings.warn(
            f"connection_params keys ignored by kiwipy: {', '.join(sorted(unknown))}",
            UserWarning,
            stacklevel=5,
        )
    options = {_OPTION_NAMES[key]: params[key] for key in _OPTION_NAMES if key in params}
    url = params.get("url") or _build_url(params)
    return str(url), options


def _build_url(params: dict[str, Any]) -> str:
    scheme = "amqps" if params.get("ssl") else "amqp"
    login = urllib.parse.quote(str(params.get("login", "guest")), safe="")
    password = urllib.parse.quote(str(params.get("password", "guest")), safe="")
    host = str(params.get("host", "localhost"))
    port = params.get("port", 5671 if params.get("ssl") else 5672)
    vhost = str(params.get("virtualhost", "/"))
    path = "/" if vhost == "/" else "/" + urllib.parse.quote(vhost, safe="")
    return f"{scheme}://{login}:{password}@{host}:{port}{path}"


# -- the communicator --------------------------------------------------------------------------
