"""Small helpers kiwipy 0.9 exported: :class:`EventHelper`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ("EventHelper",)

_LOGGER = logging.getLogger(__name__)


class EventHelper:
    """Keeps a set of listeners of one type and calls a named method on each of them.

    ``fire_event(Listener.on_change, value)`` calls ``listener.on_change(value)`` on every
    listener; an exception in one listener is logged and does not stop the others.
    """

    def __init__(self, listener_type: type[Any]) -> None:
        assert listener_type is not None, "Must provide valid listener type"
        self._listener_type = listener_type
        self._listeners: set[Any] = set()

    def add_listener(self, listener: Any) -> None:
        assert isinstance(listener, self._listener_type), "Listener is not of right type"
        self._listeners.add(listener)

    def remove_listener(self, listener: Any) -> None:
        """Forget ``listener``; a listener that was never added is ignored."""
        self._listeners.discard(listener)

    def remove_all_listeners(self) -> None:
        self._listeners.clear()

    @property
    def listeners(self) -> set[Any]:
        return self._listeners

    def fire_event(
        self, event_function: Callable[..., Any] | None, *args: Any, **kwargs: Any
    ) -> None:
        """Call the method named like ``event_function`` on every listener."""
        if event_function is None:
            raise ValueError("Must provide valid event method")
        name = event_function.__name__
        for listener in list(self._listeners):
            try:
                getattr(listener, name)(*args, **kwargs)
            except Exception:
                _LOGGER.exception("Listener %r failed to handle event %s", listener, name)
