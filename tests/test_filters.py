"""Tests for kiwipy.filters.BroadcastFilter (kiwipy 0.9 compatible, whole-string globs)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from kiwipy.filters import BroadcastFilter

Call = tuple[Any, Any, Any, Any, Any]


class Recorder:
    """A broadcast subscriber that records its calls and returns a fixed value."""

    def __init__(self, result: Any = "handled") -> None:
        self.calls: list[Call] = []
        self.result = result

    def __call__(
        self, communicator: Any, body: Any, sender: Any, subject: Any, correlation_id: Any
    ) -> Any:
        self.calls.append((communicator, body, sender, subject, correlation_id))
        return self.result


def subject_filter(pattern: object) -> BroadcastFilter:
    return BroadcastFilter(Recorder(), subject=pattern)


def sender_filter(pattern: object) -> BroadcastFilter:
    return BroadcastFilter(Recorder(), sender=pattern)


# --- calling -------------------------------------------------------------------------------------


def test_unfiltered_broadcast_reaches_subscriber_positionally() -> None:
    recorder = Recorder()
    broadcast_filter = BroadcastFilter(recorder)
    result = broadcast_filter("comm", "body", sender="alice", subject="hi", correlation_id=7)
    assert result == "handled"
    assert recorder.calls == [("comm", "body", "alice", "hi", 7)]


def test_filtered_broadcast_returns_none_and_skips_subscriber() -> None:
    recorder = Recorder()
    broadcast_filter = BroadcastFilter(recorder, subject="state_changed.*")
    assert broadcast_filter("comm", "body", subject="other") is None
    assert recorder.calls == []


def test_optional_arguments_default_to_none() -> None:
    recorder = Recorder()
    BroadcastFilter(recorder)("comm", "body")
    assert recorder.calls == [("comm", "body", None, None, None)]


async def test_awaitable_result_is_returned_as_is_for_the_caller_to_await() -> None:
    async def subscriber(*args: Any) -> str:
        return "async result"

    result = BroadcastFilter(subscriber, subject="x")("comm", "body", subject="x")
    assert asyncio.iscoroutine(result)
    assert await result == "async result"


def test_kiwipy_09_style_subject_glob() -> None:
    recorder = Recorder()
    broadcast_filter = BroadcastFilter(recorder, subject="state_changed.*")
    assert broadcast_filter(None, "b", sender="pk1", subject="state_changed.running") == "handled"
    assert broadcast_filter(None, "b", sender="pk1", subject="other.running") is None
    assert len(recorder.calls) == 1


def test_name_and_subscriber_are_exposed() -> None:
    recorder = Recorder()
    broadcast_filter = BroadcastFilter(recorder)
    assert broadcast_filter.__name__ == "BroadcastFilter"
    assert broadcast_filter.subscriber is recorder


# --- is_filtered semantics -----------------------------------------------------------------------


def test_no_filters_filter_nothing() -> None:
    broadcast_filter = BroadcastFilter(Recorder())
    assert not broadcast_filter.is_filtered("anyone", "anything")
    assert not broadcast_filter.is_filtered(None, None)


def test_none_subject_and_sender_always_pass() -> None:
    broadcast_filter = BroadcastFilter(Recorder(), subject="only.this", sender="only.me")
    assert not broadcast_filter.is_filtered(None, None)
    assert not broadcast_filter.is_filtered("only.me", None)
    assert not broadcast_filter.is_filtered(None, "only.this")


def test_subject_filters_are_ored() -> None:
    broadcast_filter = subject_filter("a")
    broadcast_filter.add_subject_filter("b")
    assert not broadcast_filter.is_filtered(None, "a")
    assert not broadcast_filter.is_filtered(None, "b")
    assert broadcast_filter.is_filtered(None, "c")


def test_sender_filters_are_ored() -> None:
    broadcast_filter = sender_filter("alice")
    broadcast_filter.add_sender_filter("bob")
    assert not broadcast_filter.is_filtered("alice", None)
    assert not broadcast_filter.is_filtered("bob", None)
    assert broadcast_filter.is_filtered("carol", None)


def test_subject_and_sender_filters_are_anded() -> None:
    broadcast_filter = BroadcastFilter(Recorder(), subject="news.*", sender="alice")
    assert not broadcast_filter.is_filtered("alice", "news.today")
    assert broadcast_filter.is_filtered("bob", "news.today")
    assert broadcast_filter.is_filtered("alice", "sport.today")
    assert broadcast_filter.is_filtered("bob", "sport.today")


# --- glob filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "value", "matches"),
    [
        ("alice.jones", "alice.jones", True),
        ("alice.jones", "alice.jonesX", False),
        ("alice.jones", "Xalice.jones", False),
        ("alice.jones", "aliceXjones", False),
        ("state_changed.*", "state_changed.running", True),
        ("state_changed.*", "state_changed.", True),
        ("state_changed.*", "state_changed", False),
        ("state_changed.*.finished", "state_changed.running.finished", True),
        ("state_changed.*.finished", "state_changed.a.b.finished", True),
        ("state_changed.*.finished", "state_changed.running.finishedX", False),
        ("*", "", True),
        ("*", "anything.at.all", True),
        ("*", "multi\nline", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "acb", False),
        ("", "", True),
        ("", "x", False),
    ],
)
def test_glob_matches_whole_string(glob: str, value: str, matches: bool) -> None:
    assert subject_filter(glob).is_filtered(None, value) is not matches
    assert sender_filter(glob).is_filtered(value, None) is not matches


@pytest.mark.parametrize(
    ("glob", "literal", "non_matches"),
    [
        ("a+b", "a+b", ["ab", "aab", "aaab"]),
        ("a.b", "a.b", ["aXb"]),
        ("a?b", "a?b", ["ab", "b"]),
        ("(a|b)", "(a|b)", ["a", "b"]),
        ("[ab]", "[ab]", ["a", "b"]),
        ("a{2}", "a{2}", ["aa"]),
        ("^a$", "^a$", ["a"]),
        ("a\\d", "a\\d", ["a1"]),
    ],
)
def test_regex_metacharacters_in_globs_are_literal(
    glob: str, literal: str, non_matches: list[str]
) -> None:
    broadcast_filter = subject_filter(glob)
    assert not broadcast_filter.is_filtered(None, literal)
    for value in non_matches:
        assert broadcast_filter.is_filtered(None, value), value


@pytest.mark.parametrize("value", [42, 4.2, b"state_changed.x", ("state_changed.x",), object()])
def test_glob_never_matches_non_str_values(value: object) -> None:
    assert subject_filter("*").is_filtered(None, value)
    assert sender_filter("*").is_filtered(value, None)


def test_globs_are_compiled_once_when_added(monkeypatch: pytest.MonkeyPatch) -> None:
    broadcast_filter = subject_filter("state_changed.*")
    compiled: list[object] = []
    original_compile = re.compile

    def spy(*args: Any, **kwargs: Any) -> Any:
        compiled.append(args)
        return original_compile(*args, **kwargs)

    monkeypatch.setattr(re, "compile", spy)
    for index in range(5):
        broadcast_filter.is_filtered(None, f"state_changed.{index}")
    assert compiled == []
    broadcast_filter.add_subject_filter("other.*")
    assert len(compiled) == 1


# --- compiled regex filters ----------------------------------------------------------------------


def test_compiled_regex_uses_match_semantics_like_kiwipy_09() -> None:
    broadcast_filter = subject_filter(re.compile(r"state_changed\.\w+"))
    assert not broadcast_filter.is_filtered(None, "state_changed.running")
    assert not broadcast_filter.is_filtered(None, "state_changed.running.more")  # prefix match
    assert broadcast_filter.is_filtered(None, "Xstate_changed.running")


def test_compiled_regex_anchored_by_user_matches_whole_string() -> None:
    broadcast_filter = subject_filter(re.compile(r"state_changed\.\w+$"))
    assert not broadcast_filter.is_filtered(None, "state_changed.running")
    assert broadcast_filter.is_filtered(None, "state_changed.running.more")


def test_compiled_regex_never_matches_non_str_values() -> None:
    broadcast_filter = sender_filter(re.compile(".*"))
    assert broadcast_filter.is_filtered(42, None)
    assert broadcast_filter.is_filtered(b"bytes", None)


def test_compiled_bytes_regex_matches_bytes_only() -> None:
    broadcast_filter = sender_filter(re.compile(b"ali"))
    assert not broadcast_filter.is_filtered(b"alice", None)
    assert broadcast_filter.is_filtered("alice", None)


# --- equality filters ----------------------------------------------------------------------------


def test_int_sender_matches_int_filter() -> None:
    broadcast_filter = sender_filter(42)
    assert not broadcast_filter.is_filtered(42, None)
    assert broadcast_filter.is_filtered(43, None)


def test_str_sender_does_not_match_int_filter() -> None:
    assert sender_filter(42).is_filtered("42", None)


def test_int_sender_does_not_match_str_glob() -> None:
    assert sender_filter("42").is_filtered(42, None)


def test_other_filter_values_compare_with_equality() -> None:
    broadcast_filter = subject_filter(("a", 1))
    assert not broadcast_filter.is_filtered(None, ("a", 1))
    assert broadcast_filter.is_filtered(None, ("a", 2))


def test_equality_that_raises_is_no_match() -> None:
    class Awkward:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("cannot compare")

        __hash__ = object.__hash__

    assert sender_filter(Awkward()).is_filtered("alice", None)


def test_mixed_filter_kinds_are_ored() -> None:
    broadcast_filter = sender_filter(42)
    broadcast_filter.add_sender_filter("alice.*")
    broadcast_filter.add_sender_filter(re.compile("bob"))
    assert not broadcast_filter.is_filtered(42, None)
    assert not broadcast_filter.is_filtered("alice.jones", None)
    assert not broadcast_filter.is_filtered("bobby", None)
    assert broadcast_filter.is_filtered("carol", None)
    assert broadcast_filter.is_filtered(43, None)
