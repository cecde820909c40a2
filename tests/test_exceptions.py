"""The exception tree: one root, builtin meanings where they match."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures

import pytest

from kiwipy import exceptions


@pytest.mark.parametrize(
    "caught_as",
    [builtins.TimeoutError, concurrent.futures.TimeoutError, asyncio.TimeoutError],
)
def test_deadline_exceeded_is_caught_as_every_timeout_error(caught_as: type) -> None:
    with pytest.raises(caught_as):
        raise exceptions.DeadlineExceeded("late")


def test_every_exception_kiwipy_defines_has_one_root() -> None:
    defined = [
        value
        for name, value in vars(exceptions).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and name in exceptions.__all__
    ]
    own = [cls for cls in defined if cls.__module__ == "kiwipy.exceptions"]
    assert len(own) >= 15
    assert all(issubclass(cls, exceptions.KiwipyError) for cls in own)


def test_meanings_match_builtins() -> None:
    assert issubclass(exceptions.ConnectionLost, ConnectionError)
    assert issubclass(exceptions.MessageError, ValueError)
    assert issubclass(exceptions.UnroutableError, exceptions.DeliveryFailed)
    assert issubclass(exceptions.InvalidStateError, asyncio.InvalidStateError)
    assert issubclass(exceptions.InvalidStateError, concurrent.futures.InvalidStateError)


def test_remote_exception_carries_the_remote_description() -> None:
    error = exceptions.RemoteException(
        "ValueError: bad", remote_type="ValueError", remote_message="bad", remote_traceback="tb"
    )
    assert str(error) == "ValueError: bad"
    assert (error.remote_type, error.remote_message, error.remote_traceback) == (
        "ValueError",
        "bad",
        "tb",
    )
