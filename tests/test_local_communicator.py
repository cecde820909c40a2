"""The in-process pieces of kiwipy 0.9's API: LocalCommunicator, futures helpers, EventHelper.

LocalCommunicator keeps kiwipy 0.9's synchronous semantics, with its bugs fixed: a task nobody
takes stays queued instead of leaving a future that never resolves, task identifiers are checked
against task subscribers, and remote errors carry type, message and traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import kiwipy
from kiwipy import CommunicatorHelper, LocalCommunicator


class Boom(Exception):
    pass


@pytest.fixture
def comm() -> Any:
    communicator = LocalCommunicator()
    yield communicator
    communicator.close()


def fail_with_boom(comm: Any, msg: Any) -> Any:
    raise Boom(f"no {msg}")


def reject(comm: Any, msg: Any) -> Any:
    raise kiwipy.TaskRejected


# -- interface ---------------------------------------------------------------------------------


def test_local_communicator_is_a_kiwipy_communicator(comm: LocalCommunicator) -> None:
    assert isinstance(comm, kiwipy.Communicator)
    assert isinstance(comm, CommunicatorHelper)


def test_context_manager_closes() -> None:
    with LocalCommunicator() as comm:
        assert not comm.is_closed()
    assert comm.is_closed()


# -- rpc ---------------------------------------------------------------------------------------


def test_rpc_runs_synchronously_and_passes_the_communicator(comm: LocalCommunicator) -> None:
    comm.add_rpc_subscriber(lambda c, msg: (c is comm, msg * 2), "double")
    future = comm.rpc_send("double", 21)
    assert future.done()
    assert future.result() == (True, 42)


def test_rpc_to_unknown_id_raises_unroutable_synchronously(comm: LocalCommunicator) -> None:
    with pytest.raises(kiwipy.UnroutableError, match="nobody"):
        comm.rpc_send("nobody", 1)


def test_rpc_exception_is_a_remote_exception_with_type_message_and_traceback(
    comm: LocalCommunicator,
) -> None:
    comm.add_rpc_subscriber(fail_with_boom, "boom")
    with pytest.raises(kiwipy.RemoteException) as info:
        comm.rpc_send("boom", "luck").result()
    error = info.value
    assert (error.remote_type, error.remote_message) == ("Boom", "no luck")
    assert "fail_with_boom" in error.remote_traceback
    assert str(error) == "Boom: no luck"
    assert isinstance(error.__cause__, Boom)


def test_rpc_identifiers_generated_unique_and_removable(comm: LocalCommunicator) -> None:
    generated = comm.add_rpc_subscriber(lambda c, m: m)
    assert generated is not None
    assert comm.add_rpc_subscriber(lambda c, m: m, 0) == 0  # a falsy identifier is kept
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        comm.add_rpc_subscriber(lambda c, m: m, generated)
    comm.remove_rpc_subscriber(generated)
    with pytest.raises(ValueError, match="Unknown subscriber"):
        comm.remove_rpc_subscriber(generated)
    with pytest.raises(kiwipy.UnroutableError):
        comm.rpc_send(generated, 1)


def test_rpc_returning_a_future_gives_a_nested_future(comm: LocalCommunicator) -> None:
    inner: kiwipy.Future[Any] = kiwipy.Future()
    comm.add_rpc_subscriber(lambda c, m: inner, "later")
    nested = comm.rpc_send("later", None).result()
    assert nested is inner
    inner.set_result("done")
    assert nested.result() == "done"


def test_rpc_raising_task_rejected_is_a_remote_exception(comm: LocalCommunicator) -> None:
    comm.add_rpc_subscriber(reject, "rejecting")
    with pytest.raises(kiwipy.RemoteException, match="TaskRejected"):
        comm.rpc_send("rejecting", None).result()


def test_rpc_raising_cancelled_error_cancels_the_future(comm: LocalCommunicator) -> None:
    def cancel(c: Any, m: Any) -> Any:
        raise kiwipy.CancelledError

    comm.add_rpc_subscriber(cancel, "cancel")
    assert comm.rpc_send("cancel", None).cancelled()


def test_async_subscriber_is_refused_clearly(comm: LocalCommunicator) -> None:
    async def answer(c: Any, m: Any) -> Any:
        return m

    comm.add_rpc_subscriber(answer, "async")
    with pytest.raises(kiwipy.RemoteException, match="async subscriber"):
        comm.rpc_send("async", 1).result()


# -- tasks -------------------------------------------------------------------------------------


def test_task_goes_to_first_subscriber_that_does_not_reject(comm: LocalCommunicator) -> None:
    comm.add_task_subscriber(reject)
    comm.add_task_subscriber(lambda c, task: f"took {task}")
    comm.add_task_subscriber(lambda c, task: "never")
    assert comm.task_send("job").result() == "took job"


def test_task_exception_stops_at_the_failing_subscriber(comm: LocalCommunicator) -> None:
    later: list[Any] = []
    comm.add_task_subscriber(fail_with_boom)
    comm.add_task_subscriber(lambda c, task: later.append(task))
    with pytest.raises(kiwipy.RemoteException, match="Boom"):
        comm.task_send("job").result()
    assert later == []


def test_task_no_reply_returns_none_and_runs(comm: LocalCommunicator) -> None:
    ran: list[Any] = []
    comm.add_task_subscriber(lambda c, task: ran.append(task))
    assert comm.task_send("job", no_reply=True) is None
    assert ran == ["job"]


def test_task_without_subscriber_waits_and_runs_when_one_is_added(
    comm: LocalCommunicator,
) -> None:
    future = comm.task_send("early")
    with pytest.raises(kiwipy.TimeoutError):
        future.result(timeout=0.01)
    comm.add_task_subscriber(lambda c, task: f"ran {task}")
    assert future.result(timeout=0) == "ran early"


def test_task_every_subscriber_rejects_stays_queued_for_the_next_one(
    comm: LocalCommunicator,
) -> None:
    comm.add_task_subscriber(reject)
    future = comm.task_send("picky")
    assert not future.done()
    comm.add_task_subscriber(lambda c, task: "accepted")
    assert future.result(timeout=0) == "accepted"


def test_queued_tasks_keep_their_order_and_no_reply_tasks_run_too(
    comm: LocalCommunicator,
) -> None:
    ran: list[Any] = []
    first = comm.task_send(1)
    assert comm.task_send(2, no_reply=True) is None
    comm.add_task_subscriber(lambda c, task: ran.append(task) or task)
    assert ran == [1, 2]
    assert first.result(timeout=0) == 1


def test_task_waits_after_its_last_subscriber_is_removed(comm: LocalCommunicator) -> None:
    identifier = comm.add_task_subscriber(lambda c, task: task)
    comm.remove_task_subscriber(identifier)
    with pytest.raises(kiwipy.TimeoutError):
        comm.task_send(1).result(timeout=0.01)


def test_cancelled_queued_task_is_dropped(comm: LocalCommunicator) -> None:
    ran: list[Any] = []
    assert comm.task_send("unwanted").cancel()
    comm.add_task_subscriber(lambda c, task: ran.append(task))
    assert ran == []


def test_close_fails_the_futures_of_queued_tasks(comm: LocalCommunicator) -> None:
    future = comm.task_send("orphan")
    comm.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        future.result(timeout=0)


def test_task_identifiers_are_checked_against_task_subscribers(comm: LocalCommunicator) -> None:
    comm.add_rpc_subscriber(lambda c, m: m, "shared")
    assert comm.add_task_subscriber(lambda c, t: t, "shared") == "shared"  # 0.9 refused this
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        comm.add_task_subscriber(lambda c, t: t, "shared")
    comm.remove_task_subscriber("shared")
    with pytest.raises(ValueError, match="Unknown subscriber"):
        comm.remove_task_subscriber("shared")


def test_subscriber_that_adds_a_subscriber_does_not_run_a_task_twice(
    comm: LocalCommunicator,
) -> None:
    runs: list[str] = []
    future = comm.task_send("once")

    def add_another(c: Any, task: Any) -> Any:
        runs.append("first")
        c.add_task_subscriber(lambda c2, t: runs.append("second"))
        return "done"

    comm.add_task_subscriber(add_another)
    assert future.result(timeout=0) == "done"
    assert runs == ["first"]


# -- broadcasts --------------------------------------------------------------------------------


def test_broadcast_reaches_every_subscriber_positionally(comm: LocalCommunicator) -> None:
    heard: list[Any] = []

    def listener(_comm: Any, _body: Any, _sender: Any, _subject: Any, _cid: Any) -> None:
        heard.append((_comm, _body, _sender, _subject, _cid))

    comm.add_broadcast_subscriber(listener)
    comm.add_broadcast_subscriber(lambda *args: heard.append(args[1]))
    assert comm.broadcast_send("hi", sender=1, subject="s", correlation_id=9) is True
    assert heard == [(comm, "hi", 1, "s", 9), "hi"]


def test_broadcast_filter_works_with_the_local_communicator(comm: LocalCommunicator) -> None:
    heard: list[Any] = []
    subscriber = kiwipy.BroadcastFilter(lambda *args: heard.append(args), subject="state.*")
    subscriber.add_sender_filter(42)
    comm.add_broadcast_subscriber(subscriber)
    comm.broadcast_send("no", sender=42, subject="other")
    comm.broadcast_send("no", sender=41, subject="state.done")
    comm.broadcast_send("yes", sender=42, subject="state.done")
    assert heard == [(comm, "yes", 42, "state.done", None)]


def test_failing_broadcast_subscriber_is_logged_and_others_still_hear(
    comm: LocalCommunicator, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[Any] = []
    comm.add_broadcast_subscriber(lambda *args: 1 / 0)
    comm.add_broadcast_subscriber(lambda *args: heard.append(args[1]))
    with caplog.at_level(logging.ERROR, logger="kiwipy"):
        assert comm.broadcast_send("still") is True
    assert heard == ["still"]
    assert "ZeroDivisionError" in caplog.text


def test_broadcast_subscribers_are_removable(comm: LocalCommunicator) -> None:
    heard: list[Any] = []
    identifier = comm.add_broadcast_subscriber(lambda *args: heard.append(args[1]), "b")
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        comm.add_broadcast_subscriber(lambda *args: None, "b")
    comm.remove_broadcast_subscriber(identifier)
    comm.broadcast_send("gone")
    assert heard == []
    with pytest.raises(ValueError, match="unknown"):
        comm.remove_broadcast_subscriber(identifier)


# -- closing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        lambda comm: comm.rpc_send("x", 1),
        lambda comm: comm.task_send(1),
        lambda comm: comm.broadcast_send(1),
        lambda comm: comm.add_rpc_subscriber(lambda c, m: m),
        lambda comm: comm.remove_rpc_subscriber("x"),
        lambda comm: comm.add_task_subscriber(lambda c, m: m),
        lambda comm: comm.add_broadcast_subscriber(lambda *args: None),
    ],
)
def test_close_is_idempotent_and_operations_then_fail(operation: Any) -> None:
    comm = LocalCommunicator()
    comm.close()
    comm.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        operation(comm)


# -- futures helpers ---------------------------------------------------------------------------


def test_capture_exceptions_sets_the_exception_on_the_future() -> None:
    future: kiwipy.Future[Any] = kiwipy.Future()
    exc = Boom("captured")
    with kiwipy.capture_exceptions(future):
        raise exc
    assert future.exception() is exc


def test_capture_exceptions_reraises_ignored_types() -> None:
    future: kiwipy.Future[Any] = kiwipy.Future()
    with pytest.raises(Boom), kiwipy.capture_exceptions(future, ignore=(Boom,)):
        raise Boom
    assert not future.done()


def test_copy_future_copies_result_exception_and_cancellation() -> None:
    source: kiwipy.Future[Any] = kiwipy.Future()
    source.set_result(5)
    target: kiwipy.Future[Any] = kiwipy.Future()
    kiwipy.copy_future(source, target)
    assert target.result() == 5

    failed: kiwipy.Future[Any] = kiwipy.Future()
    failed.set_exception(Boom("x"))
    target = kiwipy.Future()
    kiwipy.copy_future(failed, target)
    assert isinstance(target.exception(), Boom)

    cancelled: kiwipy.Future[Any] = kiwipy.Future()
    cancelled.cancel()
    target = kiwipy.Future()
    kiwipy.copy_future(cancelled, target)
    assert target.cancelled()


def test_copy_future_leaves_a_done_target_alone() -> None:
    source: kiwipy.Future[Any] = kiwipy.Future()
    source.set_result("new")
    target: kiwipy.Future[Any] = kiwipy.Future()
    target.set_result("old")
    kiwipy.copy_future(source, target)
    assert target.result() == "old"


def test_chain_copies_when_the_source_finishes() -> None:
    source: kiwipy.Future[Any] = kiwipy.Future()
    target: kiwipy.Future[Any] = kiwipy.Future()
    kiwipy.chain(source, target)
    assert not target.done()
    source.set_result("chained")
    assert target.result(timeout=0) == "chained"


def test_wait_and_as_completed_are_concurrent_futures_ones() -> None:
    done: kiwipy.Future[Any] = kiwipy.Future()
    done.set_result(1)
    assert kiwipy.wait([done], timeout=0).done == {done}
    assert list(kiwipy.as_completed([done], timeout=0)) == [done]


# -- EventHelper -------------------------------------------------------------------------------


class Listener:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, *args: Any, **kwargs: Any) -> None:
        self.events.append((args, kwargs))


class BrokenListener(Listener):
    def on_event(self, *args: Any, **kwargs: Any) -> None:
        raise Boom("listener broke")


def test_event_helper_calls_the_named_method_on_every_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    helper = kiwipy.EventHelper(Listener)
    good, broken = Listener(), BrokenListener()
    helper.add_listener(good)
    helper.add_listener(broken)
    assert helper.listeners == {good, broken}
    with caplog.at_level(logging.ERROR, logger="kiwipy"):
        helper.fire_event(Listener.on_event, 1, key="v")
    assert good.events == [((1,), {"key": "v"})]
    assert "listener broke" in caplog.text


def test_event_helper_checks_types_and_removes_listeners() -> None:
    helper = kiwipy.EventHelper(Listener)
    with pytest.raises(AssertionError):
        helper.add_listener(object())
    listener = Listener()
    helper.add_listener(listener)
    helper.remove_listener(listener)
    helper.remove_listener(listener)  # unknown: ignored
    helper.add_listener(listener)
    helper.remove_all_listeners()
    assert helper.listeners == set()
    with pytest.raises(ValueError):
        helper.fire_event(None)
