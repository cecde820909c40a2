"""The local broker's loop polls before it sleeps while its events come close together
(``kiwipy.broker._poll``), and ``poll_us`` reaches the broker a client starts."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kiwipy.aio
from kiwipy.broker._poll import DEFAULT_POLL_US, PROBE_EVERY, PollingSelector
from tests.conftest import stop_local_broker

pytestmark = pytest.mark.timeout(60)

#: Far apart from the budget below, so that the machine's load cannot blur short and long.
BUDGET = 0.05
LONG = 0.4


@pytest.fixture
def readable() -> Iterator[tuple[PollingSelector, socket.socket]]:
    """A selector watching one end of a socket pair; the other end to write to."""
    reader, writer = socket.socketpair()
    selector = PollingSelector(BUDGET)
    selector.register(reader, 1)  # EVENT_READ
    yield selector, writer
    selector.close()
    reader.close()
    writer.close()


def write_later(writer: socket.socket, delay: float) -> threading.Thread:
    thread = threading.Timer(delay, writer.send, args=(b"x",))
    thread.start()
    return thread


def drain(selector: PollingSelector) -> None:
    for key, _ in selector.select(0):
        key.fileobj.recv(100)  # type: ignore[union-attr]


def start_polling(selector: PollingSelector, writer: socket.socket) -> None:
    """A byte ready at once: a wait well within the budget, after which the selector polls."""
    writer.send(b"x")
    assert selector.select(None)
    drain(selector)
    assert selector.polling


def test_a_short_wait_turns_polling_on_and_a_long_one_off(
    readable: tuple[PollingSelector, socket.socket],
) -> None:
    selector, writer = readable
    assert not selector.polling
    start_polling(selector, writer)

    late = write_later(writer, LONG)
    assert selector.select(None)  # polled for the budget, then slept until the byte came
    late.join()
    assert not selector.polling
    drain(selector)

    writer.send(b"x")
    assert selector.select(None)
    assert selector.polling


def test_a_wait_that_times_out_turns_polling_off_and_keeps_its_timeout(
    readable: tuple[PollingSelector, socket.socket],
) -> None:
    selector, writer = readable
    start_polling(selector, writer)
    started = time.monotonic()
    assert selector.select(LONG) == []
    assert time.monotonic() - started >= LONG * 0.9  # the poll did not shorten the wait
    assert not selector.polling


def test_a_look_without_waiting_leaves_polling_as_it_was(
    readable: tuple[PollingSelector, socket.socket],
) -> None:
    selector, writer = readable
    start_polling(selector, writer)
    assert selector.select(0) == []  # asyncio's look when callbacks are ready
    assert selector.polling


def test_a_selector_that_stopped_polling_probes_every_so_many_waits(
    readable: tuple[PollingSelector, socket.socket],
) -> None:
    selector, writer = readable
    for _ in range(PROBE_EVERY):
        assert selector.select(0.001) == []  # waits that time out: no polling, no probe yet
    assert not selector.polling
    assert selector.without_polling == PROBE_EVERY
    writer.send(b"x")
    assert selector.select(None)  # this wait is a probe, and it finds the byte
    assert selector.without_polling == 0
    assert selector.polling


def test_a_budget_of_zero_never_polls() -> None:
    reader, writer = socket.socketpair()
    with PollingSelector(0) as selector, reader, writer:
        selector.register(reader, 1)
        writer.send(b"x")
        assert selector.select(None)
        assert not selector.polling


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "state"
    yield directory
    stop_local_broker(directory)


@pytest.mark.parametrize(("query", "expected"), [("", DEFAULT_POLL_US), ("&poll_us=0", 0)])
async def test_poll_us_in_the_url_reaches_the_broker_the_client_starts(
    state: Path, query: str, expected: int
) -> None:
    url = f"local://{state}?idle_timeout=30{query}"
    communicator = await kiwipy.aio.connect(url, testing_mode=True)
    try:
        assert communicator.server_properties["poll_us"] == expected
        await communicator.add_task_subscriber(lambda _comm, task: task * 2)
        assert await (await communicator.task_send(21)) == 42  # serves as before
    finally:
        await communicator.close()


@pytest.mark.parametrize("value", ["-1", "abc", "10001"])
def test_a_poll_us_out_of_range_is_refused_before_anything_starts(state: Path, value: str) -> None:
    async def connect() -> None:
        await kiwipy.aio.connect(f"local://{state}?poll_us={value}", testing_mode=True)

    with pytest.raises(ValueError, match="poll_us"):
        asyncio.run(connect())
    assert not state.exists()  # no broker was started for it


def test_the_broker_command_refuses_a_poll_us_out_of_range(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kiwipy.broker", "--dir", str(tmp_path), "--poll-us", "-5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--poll-us" in done.stderr
