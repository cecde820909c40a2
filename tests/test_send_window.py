"""The window of sends in progress: bounded, in order, and no turn lost to a cancelled wait."""

from __future__ import annotations

import asyncio

from kiwipy.aio._core import _in_window
from kiwipy.aio._window import SendWindow


async def _nothing() -> None:
    return None


async def test_at_most_size_in_progress_and_the_others_start_in_order() -> None:
    window = SendWindow(2)
    started: list[int] = []
    release = asyncio.Event()
    in_progress = 0
    most = 0

    async def send(i: int) -> None:
        nonlocal in_progress, most
        started.append(i)
        in_progress += 1
        most = max(most, in_progress)
        await release.wait()
        in_progress -= 1

    tasks = [asyncio.ensure_future(_in_window(window, send, (i,))) for i in range(6)]
    await asyncio.sleep(0.01)
    assert started == [0, 1]
    assert window.waiting == 4
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert started == list(range(6))
    assert most == 2
    assert window.waiting == 0


async def test_a_waiter_cancelled_after_its_turn_came_passes_the_turn_on() -> None:
    window = SendWindow(1)
    assert window.turn() is None  # the one place is taken
    first = asyncio.ensure_future(_in_window(window, _nothing, ()))
    second = asyncio.ensure_future(_in_window(window, _nothing, ()))
    await asyncio.sleep(0)
    window.leave()  # the turn goes to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    await asyncio.wait_for(second, 5)  # the turn was passed on, not lost
    assert first.cancelled()
    assert window.turn() is None  # and the place is free again afterwards


async def test_a_waiter_cancelled_before_its_turn_is_skipped() -> None:
    window = SendWindow(1)
    assert window.turn() is None
    gone = asyncio.ensure_future(_in_window(window, _nothing, ()))
    later = asyncio.ensure_future(_in_window(window, _nothing, ()))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    window.leave()
    await asyncio.wait_for(later, 5)
    assert gone.cancelled()
    assert window.turn() is None
