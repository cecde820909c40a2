"""The behaviour every kiwipy communicator and transport must show, as pytest tests.

Subclass :class:`CommunicatorConformance` in a test module and provide a ``connect`` fixture: an
async callable ``connect(**options)`` that returns a new, connected communicator with the
asyncio API (``await comm.task_send(...)`` ...), every call sharing one broker and one set of
exchange and queue names, all closed by the fixture at teardown. kiwipy runs this suite over
{memory, amqp} x {asyncio, blocking}; a new transport should pass it unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kiwipy.aio._incoming import current_incoming_task
from kiwipy.aio._rejections import ORIGIN_HEADER, REASON_HEADER
from kiwipy.exceptions import (
    CommunicatorClosed,
    DeadlineExceeded,
    DuplicateSubscriberIdentifier,
    MessageTooLarge,
    QueueEmpty,
    RemoteException,
    TaskRejected,
    UnroutableError,
)
from kiwipy.filters import BroadcastFilter
from kiwipy.transports.base import Message

__all__ = ("CommunicatorConformance", "Connect")

Connect = Callable[..., Awaitable[Any]]
WAIT = 10.0  # seconds: generous, a hang fails the test rather than the whole run


async def settle(future: Any, timeout: float = WAIT) -> Any:
    """The result of an asyncio or concurrent future, within ``timeout``."""
    if isinstance(future, concurrent.futures.Future):
        future = asyncio.wrap_future(future)
    return await asyncio.wait_for(asyncio.shield(future), timeout)


async def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _next_raw_task(comm: Any, queue: str) -> Any:
    """The next delivery in ``queue``, read through the transport (not decoded)."""
    await comm.transport.declare_task_queue(queue)
    deadline = asyncio.get_running_loop().time() + WAIT
    while (delivery := await comm.transport.get_task(queue)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"nothing arrived in {queue}"
        await asyncio.sleep(0.02)
    return delivery


def held(comm: Any) -> Any:
    """The communicator object the user holds (a test driver may wrap it)."""
    return getattr(comm, "wrapped", comm)


class Boom(Exception):
    pass


class CommunicatorConformance:
    """Behaviour tests; the ``connect`` fixture decides transport and facade."""

    # -- tasks ---------------------------------------------------------------------------------

    async def test_task_result_reaches_sender(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()
        await worker.add_task_subscriber(lambda comm, task: task * 2)
        future = await client.task_send(21)
        assert await settle(future) == 42

    async def test_task_subscriber_receives_the_communicator_the_user_holds(
        self, connect: Connect
    ) -> None:
        worker = await connect()
        seen: list[Any] = []
        await worker.add_task_subscriber(lambda comm, task: seen.append(comm))
        await settle(await worker.task_send("x"))
        assert seen == [held(worker)]

    async def test_task_send_no_reply_returns_none_and_runs_the_task(
        self, connect: Connect
    ) -> None:
        worker, client = await connect(), await connect()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        await worker.add_task_subscriber(lambda comm, task: loop.call_soon_threadsafe(done.set))
        assert await client.task_send("fire", no_reply=True) is None
        await asyncio.wait_for(done.wait(), WAIT)

    async def test_task_exception_arrives_as_remote_exception_with_type_and_traceback(
        self, connect: Connect
    ) -> None:
        worker, client = await connect(), await connect()

        def fail(comm: Any, task: Any) -> None:
            raise Boom(f"bad task {task}")

        await worker.add_task_subscriber(fail)
        with pytest.raises(RemoteException) as excinfo:
            await settle(await client.task_send(7))
        assert excinfo.value.remote_type == "Boom"
        assert excinfo.value.remote_message == "bad task 7"
        assert "in fail" in excinfo.value.remote_traceback

    async def test_coroutine_task_subscriber_is_awaited(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()

        async def double(comm: Any, task: int) -> int:
            await asyncio.sleep(0)
            return task * 2

        await worker.add_task_subscriber(double)
        assert await settle(await client.task_send(4)) == 8

    async def test_task_returning_a_future_gives_a_nested_future(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()
        inner: concurrent.futures.Future[Any] = concurrent.futures.Future()
        await worker.add_task_subscriber(lambda comm, task: inner)
        outer = await client.task_send("later")
        nested = await settle(outer)
        assert not nested.done()
        inner.set_result("done")
        assert await settle(nested) == "done"

    async def test_task_is_redelivered_when_its_worker_closes_before_finishing(
        self, connect: Connect
    ) -> None:
        first, second, client = await connect(), await connect(), await connect()
        started = concurrent.futures.Future[Any]()
        never: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def hold(comm: Any, task: Any) -> Any:
            started.set_result(task)
            return never

        await first.add_task_subscriber(hold)
        outcome = await client.task_send("job")
        assert await settle(started) == "job"
        await first.close()
        await second.add_task_subscriber(lambda comm, task: f"{task} done elsewhere")
        result = await settle(outcome)
        if isinstance(result, asyncio.Future | concurrent.futures.Future):
            result = await settle(result)  # the first worker had announced "pending"
        assert result == "job done elsewhere"

    async def test_task_rejected_passes_to_the_next_subscriber(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()

        def reject(comm: Any, task: Any) -> None:
            raise TaskRejected()

        await worker.add_task_subscriber(reject)
        await worker.add_task_subscriber(lambda comm, task: "second")
        assert await settle(await client.task_send("t")) == "second"

    async def test_task_rejected_by_every_subscriber_goes_to_another_worker(
        self, connect: Connect
    ) -> None:
        picky, willing, client = await connect(), await connect(), await connect()

        def reject(comm: Any, task: Any) -> None:
            raise TaskRejected()

        await picky.add_task_subscriber(reject)
        outcome = await client.task_send("t")
        await willing.add_task_subscriber(lambda comm, task: "taken")
        assert await settle(outcome) == "taken"

    async def test_task_waits_in_queue_after_last_subscriber_is_removed(
        self, connect: Connect
    ) -> None:
        worker, client = await connect(), await connect()
        identifier = await worker.add_task_subscriber(lambda comm, task: task)
        await worker.remove_task_subscriber(identifier)
        future = await client.task_send("waiting")
        with pytest.raises(asyncio.TimeoutError):
            await settle(future, timeout=0.3)
        await worker.add_task_subscriber(lambda comm, task: task)
        assert await settle(future) == "waiting"

    async def test_task_subscriber_identifiers_are_checked(self, connect: Connect) -> None:
        worker = await connect()
        assert await worker.add_task_subscriber(lambda c, t: t, "mine") == "mine"
        with pytest.raises(DuplicateSubscriberIdentifier):
            await worker.add_task_subscriber(lambda c, t: t, "mine")
        with pytest.raises(ValueError, match="Unknown"):
            await worker.remove_task_subscriber("nobody")

    async def test_named_task_queues_are_separate(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()
        name = f"{worker.settings.task_queue}.extra"
        worker_queue = await worker.task_queue(name)
        client_queue = await client.task_queue(name)
        await worker_queue.add_task_subscriber(lambda comm, task: f"named {task}")
        await worker.add_task_subscriber(lambda comm, task: f"default {task}")
        assert await settle(await client_queue.task_send(1)) == "named 1"
        assert await settle(await client.task_send(2)) == "default 2"

    async def test_prefetch_limits_unfinished_tasks_per_worker(self, connect: Connect) -> None:
        busy, idle, client = await connect(), await connect(), await connect()
        name = f"{busy.settings.task_queue}.prefetch"
        busy_queue = await busy.task_queue(name, prefetch_count=1)
        blocker: concurrent.futures.Future[Any] = concurrent.futures.Future()
        started = concurrent.futures.Future[Any]()

        def hold(comm: Any, task: Any) -> Any:
            started.set_result(task)
            return blocker

        await busy_queue.add_task_subscriber(hold)
        first = await (await client.task_queue(name)).task_send("first")
        await settle(started)
        second = await (await client.task_queue(name)).task_send("second")
        idle_queue = await idle.task_queue(name, prefetch_count=1)
        await idle_queue.add_task_subscriber(lambda comm, task: f"idle took {task}")
        assert await settle(second) == "idle took second"
        blocker.set_result("busy finished")
        assert await settle(await settle(first)) == "busy finished"

    async def test_many_tasks_sent_concurrently_are_all_confirmed_and_done(
        self, connect: Connect
    ) -> None:
        worker, client = await connect(), await connect()
        await worker.add_task_subscriber(lambda comm, task: task + 1)
        futures = await asyncio.gather(*(client.task_send(i) for i in range(200)))
        results = await asyncio.gather(*(settle(f, 30) for f in futures))
        assert results == [i + 1 for i in range(200)]

    async def test_undecodable_task_is_rejected_once_and_worker_goes_on(
        self, connect: Connect, caplog: pytest.LogCaptureFixture
    ) -> None:
        worker, client = await connect(), await connect()
        seen: list[Any] = []

        def record(comm: Any, task: Any) -> Any:
            seen.append(task)
            return task

        await worker.add_task_subscriber(record)
        queue = worker.settings.task_queue
        await client.transport.declare_task_queue(queue)
        poison = Message(b"\xff\xfe not json", "application/json", persistent=True)
        with caplog.at_level(logging.WARNING, logger="kiwipy"):
            await client.transport.publish_task(queue, poison)
            assert await settle(await client.task_send("valid")) == "valid"
            await asyncio.sleep(0.3)
        rejected = [r for r in caplog.records if "undecodable task" in r.getMessage()]
        assert len(rejected) == 1
        assert seen == ["valid"]

    async def test_task_to_an_unknown_queue_is_unroutable(self, connect: Connect) -> None:
        client = await connect()
        missing = f"{client.settings.task_queue}.missing-{uuid.uuid4().hex}"
        with pytest.raises(UnroutableError):
            await client.transport.publish_task(missing, Message(b"[1, false]", persistent=True))

    async def test_undecodable_task_is_dead_lettered_with_its_reason(
        self, connect: Connect
    ) -> None:
        dead_letters = f"{uuid.uuid4().hex}.dead"
        worker = await connect(dead_letter_queue=dead_letters)
        client = await connect()
        await worker.add_task_subscriber(lambda comm, task: task)
        queue = worker.settings.task_queue
        await client.transport.declare_task_queue(queue)
        poison = Message(b"{truncated", "application/json", persistent=True)
        await client.transport.publish_task(queue, poison)
        dead = await _next_raw_task(client, dead_letters)
        assert dead.message.body == b"{truncated"
        assert dead.message.headers[REASON_HEADER].startswith("undecodable")
        assert dead.message.headers[ORIGIN_HEADER] == queue

    async def test_task_every_subscriber_rejects_is_retried_then_dead_lettered(
        self, connect: Connect
    ) -> None:
        dead_letters = f"{uuid.uuid4().hex}.dead"
        options = {"task_max_rejections": 3, "task_rejection_pause": 0.01}
        worker = await connect(dead_letter_queue=dead_letters, **options)
        client = await connect()
        attempts: list[Any] = []

        def reject(comm: Any, task: Any) -> None:
            attempts.append(task)
            raise TaskRejected()

        await worker.add_task_subscriber(reject)
        with pytest.raises(RemoteException) as excinfo:
            await settle(await client.task_send("nobody wants me"))
        assert excinfo.value.remote_type == "TaskRejected"
        assert attempts == ["nobody wants me"] * 3
        dead = await _next_raw_task(client, dead_letters)
        assert dead.message.headers[REASON_HEADER] == "rejected 3 times"

    async def test_a_task_whose_connection_dies_is_known_as_lost(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()
        seen: concurrent.futures.Future[Any] = concurrent.futures.Future()
        lost = threading.Event()

        def hold(comm: Any, task: Any) -> Any:
            incoming = current_incoming_task()
            assert incoming is not None and incoming.body == task
            incoming.add_lost_callback(lambda _task: lost.set())
            seen.set_result(incoming)
            return concurrent.futures.Future()  # never finishes

        await worker.add_task_subscriber(hold)
        await client.task_send("long job")
        incoming = await settle(seen)
        assert not incoming.lost
        await worker.close()
        await eventually(lost.is_set)
        assert incoming.lost

    # -- pulling tasks -------------------------------------------------------------------------

    async def test_next_task_processes_a_task_and_replies(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()
        queue = await worker.task_queue(worker.settings.task_queue)
        outcome = await client.task_send("pull me")
        async with queue.next_task() as task:
            assert task.body == "pull me"
            task.process().set_result("pulled")
        assert await settle(outcome) == "pulled"

    async def test_next_task_on_an_empty_queue(self, connect: Connect) -> None:
        worker = await connect()
        queue = await worker.task_queue(worker.settings.task_queue)
        with pytest.raises(QueueEmpty):
            async with queue.next_task(timeout=0.1):
                pass
        async with queue.next_task(timeout=0.1, fail=False) as task:
            assert task is None

    async def test_task_left_pending_in_next_task_is_requeued(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()
        queue = await worker.task_queue(worker.settings.task_queue)
        outcome = await client.task_send("again")
        async with queue.next_task() as task:
            assert task.body == "again"
        async with queue.next_task() as task:
            assert task.body == "again"
            assert task.redelivered
            task.process().set_result("second time")
        assert await settle(outcome) == "second time"

    async def test_exception_in_processing_block_reaches_sender(self, connect: Connect) -> None:
        worker, client = await connect(), await connect()
        queue = await worker.task_queue(worker.settings.task_queue)
        outcome = await client.task_send("x")
        with pytest.raises(Boom):
            async with queue.next_task() as task, task.processing():
                raise Boom("in block")
        with pytest.raises(RemoteException, match="in block"):
            await settle(outcome)
        async with queue.next_task(timeout=0.2, fail=False) as again:
            assert again is None

    async def test_iterating_a_queue_sees_every_task_and_requeues_the_rest(
        self, connect: Connect
    ) -> None:
        worker, client = await connect(), await connect()
        queue = await worker.task_queue(worker.settings.task_queue)
        outcomes = [await client.task_send(i) for i in range(3)]
        bodies = []
        async for task in queue:
            bodies.append(task.body)
            if task.body == 1:
                task.process().set_result("one")
        assert sorted(bodies) == [0, 1, 2]
        assert await settle(outcomes[1]) == "one"
        remaining = [task.body async for task in queue]
        assert sorted(remaining) == [0, 2]

    # -- rpc -----------------------------------------------------------------------------------

    async def test_rpc_round_trip(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        assert await server.add_rpc_subscriber(lambda comm, msg: msg * 2, "doubler") == "doubler"
        assert await settle(await client.rpc_send("doubler", 21)) == 42

    async def test_rpc_identifier_is_generated_when_not_given(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        identifier = await server.add_rpc_subscriber(lambda comm, msg: "hi")
        assert identifier
        assert await settle(await client.rpc_send(identifier, None)) == "hi"

    async def test_rpc_with_an_int_identifier(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        await server.add_rpc_subscriber(lambda comm, msg: f"process {msg}", 42)
        assert await settle(await client.rpc_send(42, "pk")) == "process pk"

    async def test_rpc_to_nobody_raises_unroutable_at_once(self, connect: Connect) -> None:
        client = await connect()
        with pytest.raises(UnroutableError):
            await asyncio.wait_for(client.rpc_send("nobody-" + uuid.uuid4().hex, 1), 5)

    async def test_rpc_exception_arrives_as_remote_exception(self, connect: Connect) -> None:
        server, client = await connect(), await connect()

        def fail(comm: Any, msg: Any) -> None:
            raise ValueError("no such thing")

        await server.add_rpc_subscriber(fail, "failing")
        with pytest.raises(RemoteException) as excinfo:
            await settle(await client.rpc_send("failing", 1))
        assert excinfo.value.remote_type == "ValueError"
        assert "no such thing" in str(excinfo.value)
        assert "ValueError: no such thing" in excinfo.value.remote_traceback

    async def test_rpc_identifier_is_unique_across_communicators(self, connect: Connect) -> None:
        first, second = await connect(), await connect()
        await first.add_rpc_subscriber(lambda comm, msg: "first", "owner")
        with pytest.raises(DuplicateSubscriberIdentifier):
            await first.add_rpc_subscriber(lambda comm, msg: "again", "owner")
        with pytest.raises(DuplicateSubscriberIdentifier):
            await second.add_rpc_subscriber(lambda comm, msg: "second", "owner")
        assert await settle(await second.rpc_send("owner", None)) == "first"

    async def test_rpc_identifier_is_free_once_its_owner_closes(self, connect: Connect) -> None:
        first, second = await connect(), await connect()
        await first.add_rpc_subscriber(lambda comm, msg: "first", "handover")
        await first.close()
        await second.add_rpc_subscriber(lambda comm, msg: "second", "handover")
        assert await settle(await second.rpc_send("handover", None)) == "second"

    async def test_removed_rpc_subscriber_is_unroutable(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        await server.add_rpc_subscriber(lambda comm, msg: msg, "temp")
        await server.remove_rpc_subscriber("temp")
        with pytest.raises(UnroutableError):
            await client.rpc_send("temp", 1)
        with pytest.raises(ValueError):
            await server.remove_rpc_subscriber("temp")
        await server.add_rpc_subscriber(lambda comm, msg: "back", "temp")
        assert await settle(await client.rpc_send("temp", 1)) == "back"

    async def test_rpc_returning_nested_futures(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        inner: concurrent.futures.Future[Any] = concurrent.futures.Future()
        middle: concurrent.futures.Future[Any] = concurrent.futures.Future()
        middle.set_result(inner)
        await server.add_rpc_subscriber(lambda comm, msg: middle, "nested")
        outer = await client.rpc_send("nested", None)
        level1 = await settle(outer)
        level2 = await settle(level1)
        inner.set_result("deep")
        assert await settle(level2) == "deep"

    async def test_coroutine_rpc_subscriber_is_awaited(self, connect: Connect) -> None:
        server, client = await connect(), await connect()

        async def answer(comm: Any, msg: Any) -> str:
            await asyncio.sleep(0)
            return f"async {msg}"

        await server.add_rpc_subscriber(answer, "async")
        assert await settle(await client.rpc_send("async", 1)) == "async 1"

    async def test_rpc_cancelled_future_cancels_the_callers_future(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        inner: concurrent.futures.Future[Any] = concurrent.futures.Future()
        await server.add_rpc_subscriber(lambda comm, msg: inner, "cancelling")
        nested = await settle(await client.rpc_send("cancelling", None))
        inner.cancel()
        with pytest.raises((asyncio.CancelledError, concurrent.futures.CancelledError)):
            await settle(nested)

    async def test_rpc_without_answer_times_out_at_its_deadline(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        await server.add_rpc_subscriber(lambda comm, msg: concurrent.futures.Future(), "slow")
        outer = await client.rpc_send("slow", None, deadline=0.3)
        nested = await settle(outer)
        with pytest.raises(DeadlineExceeded):
            await settle(nested)

    # -- broadcasts ----------------------------------------------------------------------------

    async def test_broadcast_reaches_subscribers_with_its_fields(self, connect: Connect) -> None:
        listener, sender = await connect(), await connect()
        got: list[tuple[Any, ...]] = []
        await listener.add_broadcast_subscriber(
            lambda comm, body, sender, subject, cid: got.append((body, sender, subject, cid))
        )
        assert await sender.broadcast_send({"n": 1}, sender=42, subject="a.b", correlation_id="c")
        await eventually(lambda: len(got) == 1)
        assert got == [({"n": 1}, 42, "a.b", "c")]

    async def test_broadcast_reaches_every_communicator(self, connect: Connect) -> None:
        first, second, sender = await connect(), await connect(), await connect()
        got: list[str] = []
        await first.add_broadcast_subscriber(lambda c, body, *rest: got.append(f"1:{body}"))
        await second.add_broadcast_subscriber(lambda c, body, *rest: got.append(f"2:{body}"))
        await sender.broadcast_send("hello")
        await eventually(lambda: sorted(got) == ["1:hello", "2:hello"])

    async def test_broadcast_filter_by_subject_glob_and_int_sender(self, connect: Connect) -> None:
        listener, sender = await connect(), await connect()
        got: list[tuple[Any, Any]] = []

        def record(comm: Any, body: Any, sender: Any, subject: Any, cid: Any) -> None:
            got.append((sender, subject))

        filtered = BroadcastFilter(record, subject="state_changed.*.finished", sender=42)
        await listener.add_broadcast_subscriber(filtered)
        await sender.broadcast_send(None, sender=42, subject="state_changed.running.finished")
        await sender.broadcast_send(None, sender=43, subject="state_changed.running.finished")
        await sender.broadcast_send(None, sender=42, subject="state_changed.running.killed")
        await sender.broadcast_send(None, sender=42, subject="state_changed.running.finishedX")
        await sender.broadcast_send("end", sender=42, subject="state_changed.x.finished")
        await eventually(lambda: len(got) == 2)
        await asyncio.sleep(0.1)
        assert got == [(42, "state_changed.running.finished"), (42, "state_changed.x.finished")]

    async def test_broadcasts_from_one_sender_arrive_in_order(self, connect: Connect) -> None:
        listener, sender = await connect(), await connect()
        got: list[int] = []

        async def record(comm: Any, body: int, *rest: Any) -> None:
            await asyncio.sleep(0)
            got.append(body)

        await listener.add_broadcast_subscriber(record)
        for i in range(100):
            await sender.broadcast_send(i)
        await eventually(lambda: len(got) == 100)
        assert got == list(range(100))

    async def test_removed_broadcast_subscriber_gets_nothing_more(self, connect: Connect) -> None:
        listener, sender = await connect(), await connect()
        got: list[Any] = []
        identifier = await listener.add_broadcast_subscriber(lambda c, body, *r: got.append(body))
        await sender.broadcast_send(1)
        await eventually(lambda: got == [1])
        await listener.remove_broadcast_subscriber(identifier)
        await sender.broadcast_send(2)
        await asyncio.sleep(0.2)
        assert got == [1]
        with pytest.raises(ValueError):
            await listener.remove_broadcast_subscriber(identifier)

    async def test_failing_broadcast_subscriber_does_not_stop_the_others(
        self, connect: Connect, caplog: pytest.LogCaptureFixture
    ) -> None:
        listener, sender = await connect(), await connect()
        got: list[Any] = []

        def fail(comm: Any, body: Any, *rest: Any) -> None:
            raise Boom("listener broke")

        await listener.add_broadcast_subscriber(fail)
        await listener.add_broadcast_subscriber(lambda c, body, *r: got.append(body))
        with caplog.at_level(logging.ERROR, logger="kiwipy"):
            await sender.broadcast_send("a")
            await sender.broadcast_send("b")
            await eventually(lambda: got == ["a", "b"])
            # Each subscriber has its own mailbox: the failure may be logged a moment later.
            await eventually(
                lambda: any("broadcast subscriber" in r.getMessage() for r in caplog.records)
            )

    # -- lifecycle and limits ------------------------------------------------------------------

    async def test_close_is_idempotent_and_later_calls_fail(self, connect: Connect) -> None:
        comm = await connect()
        await comm.close()
        await comm.close()
        assert comm.is_closed()
        with pytest.raises(CommunicatorClosed):
            await comm.task_send(1)
        with pytest.raises(CommunicatorClosed):
            await comm.rpc_send("x", 1)
        with pytest.raises(CommunicatorClosed):
            await comm.broadcast_send(1)

    async def test_request_sent_just_before_close_is_still_handled(self, connect: Connect) -> None:
        for attempt in range(5):
            comm = await connect()
            got: concurrent.futures.Future[Any] = concurrent.futures.Future()
            await comm.add_rpc_subscriber(
                lambda c, msg, got=got: got.set_result(msg), f"last-{attempt}"
            )
            await comm.rpc_send(f"last-{attempt}", attempt)
            await comm.close()
            assert await settle(got, timeout=5) == attempt

    async def test_close_fails_futures_that_wait_for_replies(self, connect: Connect) -> None:
        server, client = await connect(), await connect()
        await server.add_rpc_subscriber(lambda comm, msg: concurrent.futures.Future(), "hang")
        nested = await settle(await client.rpc_send("hang", None))
        await client.close()
        with pytest.raises(CommunicatorClosed):
            await settle(nested)

    async def test_oversized_message_is_refused_before_sending(self, connect: Connect) -> None:
        client = await connect(max_message_bytes=1024)
        with pytest.raises(MessageTooLarge, match=re.escape("1024")):
            await client.task_send("x" * 2048)
