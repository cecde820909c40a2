"""Broadcast filters: pass a broadcast on to a subscriber only if its subject and sender match.

Compatible with kiwipy 0.9's ``BroadcastFilter``, with one fix: a ``str`` filter is a glob that
must match the *whole* value (kiwipy 0.9 matched a prefix, so ``'alice.jones'`` also let
``'alice.jonesX'`` through, and regex metacharacters other than ``.`` were not escaped).

Filter kinds:

* ``str``: a glob; ``*`` matches any run of characters (dots included), every other character
  is literal. ``'state_changed.*'`` matches ``'state_changed.running'``.
* compiled :class:`re.Pattern`: used with ``.match`` as in kiwipy 0.9 (anchor the end yourself
  with ``$`` or ``\\Z``).
* anything else: compared with ``==`` (an ``int`` sender matches an ``int`` filter; the string
  ``'42'`` does not match ``42``).

A glob or pattern never matches a value of another type (no exception). A ``None`` subject or
sender always passes. Filters of one kind are OR-ed; subject and sender filters are AND-ed.
Filters are compiled once, when added.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ("BroadcastFilter",)

_Matcher = Callable[[object], bool]


def _glob_to_regex(glob: str) -> re.Pattern[str]:
    """``'a.*+b'`` -> a regex matching ``a.``, any run of characters, then ``+b``."""
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")), re.DOTALL)


def _glob_matcher(glob: str) -> _Matcher:
    regex = _glob_to_regex(glob)

    def matches(value: object) -> bool:
        return isinstance(value, str) and regex.fullmatch(value) is not None

    return matches


def _pattern_matcher(pattern: re.Pattern[Any]) -> _Matcher:
    kind = type(pattern.pattern)  # str or bytes: a pattern cannot match the other

    def matches(value: object) -> bool:
        return isinstance(value, kind) and pattern.match(value) is not None

    return matches


def _equality_matcher(expected: object) -> _Matcher:
    def matches(value: object) -> bool:
        try:
            return bool(value == expected)
        except Exception:  # an odd __eq__ (e.g. element-wise) is simply no match
            return False

    return matches


def _make_matcher(filter_: object) -> _Matcher:
    if isinstance(filter_, str):
        return _glob_matcher(filter_)
    if isinstance(filter_, re.Pattern):
        return _pattern_matcher(filter_)
    return _equality_matcher(filter_)


def _passes(value: object, matchers: list[_Matcher]) -> bool:
    return value is None or not matchers or any(matches(value) for matches in matchers)


class BroadcastFilter:
    """Wrap a broadcast subscriber so it only sees broadcasts whose subject and sender match.

    ``BroadcastFilter(subscriber, subject='state_changed.*')`` is a subscriber itself: it returns
    ``None`` for a filtered broadcast, else whatever ``subscriber`` returns (an awaitable is
    returned as is, for the caller to await).
    """

    __slots__ = ("_sender_filters", "_subject_filters", "_subscriber")

    def __init__(
        self, subscriber: Callable[..., Any], subject: object = None, sender: object = None
    ) -> None:
        self._subscriber = subscriber
        self._subject_filters: list[_Matcher] = []
        self._sender_filters: list[_Matcher] = []
        if subject is not None:
            self.add_subject_filter(subject)
        if sender is not None:
            self.add_sender_filter(sender)

    @property
    def __name__(self) -> str:
        return "BroadcastFilter"

    @property
    def subscriber(self) -> Callable[..., Any]:
        """The wrapped subscriber."""
        return self._subscriber

    def __call__(
        self,
        communicator: Any,
        body: Any,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> Any:
        if self.is_filtered(sender, subject):
            return None
        return self._subscriber(communicator, body, sender, subject, correlation_id)

    def is_filtered(self, sender: object, subject: object) -> bool:
        """Whether a broadcast from ``sender`` about ``subject`` is kept from the subscriber."""
        return not (
            _passes(subject, self._subject_filters) and _passes(sender, self._sender_filters)
        )

    def add_subject_filter(self, subject_filter: object) -> None:
        """Also let through subjects matching ``subject_filter`` (glob, pattern or value)."""
        self._subject_filters.append(_make_matcher(subject_filter))

    def add_sender_filter(self, sender_filter: object) -> None:
        """Also let through senders matching ``sender_filter`` (glob, pattern or value)."""
        self._sender_filters.append(_make_matcher(sender_filter))

    def __repr__(self) -> str:
        return (
            f"BroadcastFilter({self._subscriber!r}, subject_filters={len(self._subject_filters)}, "
            f"sender_filters={len(self._sender_filters)})"
        )
