"""Erlang expressions that ``rabbitmqctl eval`` runs on a private node."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["parse_ok_integer", "reset_env_expression", "set_env_expression"]

_ATOM = re.compile(r"[a-z][a-z0-9_]*")
_OK_INTEGER = re.compile(r"\{ok,\s*(\d+)\}")
# Before its first runtime change, each key's value (``{ok, V}`` or ``undefined``) is
# saved in a persistent term, so it can be restored; a restart forgets both.
_SAVED = "{kiwipy_faults_saved, K}"
_SET_ENV = (
    "[begin "
    f"case persistent_term:get({_SAVED}, none) of "
    f"none -> persistent_term:put({_SAVED}, application:get_env(rabbit, K)); _ -> ok end, "
    "case V of unset -> application:unset_env(rabbit, K); "
    "{value, X} -> application:set_env(rabbit, K, X) end "
    "end || {K, V} <- [PAIRS]], ok."
)
_RESET_ENV = (
    "[begin "
    f"case persistent_term:get({_SAVED}, none) of "
    "{ok, X} -> application:set_env(rabbit, K, X); "
    "undefined -> application:unset_env(rabbit, K); none -> ok end, "
    f"persistent_term:erase({_SAVED}) "
    "end || K <- [KEYS]], ok."
)


def atom(key: str) -> str:
    """``key`` if it is a plain lower-case Erlang atom; ``ValueError`` otherwise."""
    if not _ATOM.fullmatch(key):
        raise ValueError(f"not a plain Erlang atom: {key!r}")
    return key


def _value(value: int | str | None) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "{value, true}" if value else "{value, false}"
    return f"{{value, {value}}}"


def set_env_expression(values: Mapping[str, int | str | None]) -> str:
    """Set (``None``: unset) ``rabbit`` settings, saving their first old values."""
    pairs = ", ".join(f"{{{atom(key)}, {_value(value)}}}" for key, value in values.items())
    return _SET_ENV.replace("PAIRS", pairs)


def reset_env_expression(keys: Iterable[str]) -> str:
    """Restore the saved values of ``keys`` (see :func:`set_env_expression`)."""
    return _RESET_ENV.replace("KEYS", ", ".join(atom(key) for key in keys))


def parse_ok_integer(answer: str) -> int | None:
    """The integer in an ``{ok,N}`` answer; ``None`` for anything else (``undefined``)."""
    match = _OK_INTEGER.fullmatch(answer.strip())
    return int(match.group(1)) if match else None
