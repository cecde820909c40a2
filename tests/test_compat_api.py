"""kiwipy 0.9's public API: every name, signature and relied-upon behaviour still holds.

The contract is /work/shared/KIWIPY-0.9-API.md. Behaviour tests run through ``kiwipy.connect``
(what kiwipy 0.9 users call) over the in-memory broker and, marked ``amqp``, over RabbitMQ.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import importlib
import inspect
import logging
import operator
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

import kiwipy
import kiwipy.rmq
from kiwipy.rmq import _arguments as rmq_arguments
from kiwipy.rmq import defaults
from kiwipy.rmq.threadcomms import RmqThreadCommunicator

WAIT = 10.0
EMPTY = inspect.Parameter.empty

KIWIPY_09_ALL = (
    "RemoteException",
    "DeliveryFailed",
    "TaskRejected",
    "UnroutableError",
    "TimeoutError",
    "DuplicateSubscriberIdentifier",
    "CommunicatorClosed",
    "InvalidStateError",
    "QueueEmpty",
    "Future",
    "chain",
    "copy_future",
    "CancelledError",
    "capture_exceptions",
    "wait",
    "as_completed",
    "Communicator",
    "CommunicatorHelper",
    "EventHelper",
    "LocalCommunicator",
    "BroadcastFilter",
    "connect",
)

NAMES_BY_MODULE = {
    "kiwipy": (*KIWIPY_09_ALL, "__version__", "NullHandler", "KiwipyError", "ConnectionLost"),
    "kiwipy.exceptions": KIWIPY_09_ALL[:9],
    "kiwipy.communications": (
        "Communicator",
        "CommunicatorHelper",
        "RpcSubscriber",
        "TaskSubscriber",
        "BroadcastSubscriber",
        *KIWIPY_09_ALL[:9],
    ),
    "kiwipy.futures": KIWIPY_09_ALL[9:16],
    "kiwipy.utils": ("EventHelper",),
    "kiwipy.local": ("LocalCommunicator",),
    "kiwipy.filters": ("BroadcastFilter",),
    "kiwipy.communicate": ("connect", "DEFAULT_COMM_URI"),
    "kiwipy.rmq": (
        "RmqTaskSubscriber",
        "RmqTaskPublisher",
        "RmqTaskQueue",
        "RmqIncomingTask",
        "RmqCommunicator",
        "async_connect",
        "RmqThreadCommunicator",
        "RmqThreadTaskQueue",
        "connect",
        "communicator",
        "defaults",
        "messages",
        "tasks",
        "threadcomms",
        "utils",
    ),
    "kiwipy.rmq.communicator": (
        "RmqCommunicator",
        "async_connect",
        "RmqPublisher",
        "RmqSubscriber",
    ),
    "kiwipy.rmq.threadcomms": (
        "RmqThreadCommunicator",
        "RmqThreadTaskQueue",
        "RmqThreadIncomingTask",
        "connect",
    ),
    "kiwipy.rmq.tasks": (
        "RmqTaskSubscriber",
        "RmqTaskPublisher",
        "RmqTaskQueue",
        "RmqIncomingTask",
        "TASK_PENDING",
        "TASK_PROCESSING",
        "TASK_FINISHED",
        "TASK_REQUEUED",
    ),
    "kiwipy.rmq.messages": ("BroadcastMessage",),
    "kiwipy.rmq.defaults": (
        "TASK_EXCHANGE",
        "TASK_QUEUE",
        "MESSAGE_EXCHANGE",
        "BROADCAST_TOPIC",
        "RPC_TOPIC",
        "MESSAGE_TTL",
        "TEST_QUEUE_EXPIRES",
        "QUEUE_EXPIRES",
        "REPLY_QUEUE_EXPIRES",
        "TASK_MESSAGE_TTL",
        "TASK_PREFETCH_SIZE",
        "TASK_PREFETCH_COUNT",
        "TASK_FETCH_TIMEOUT",
        "ENCODER",
        "DECODER",
    ),
    "kiwipy.rmq.utils": (
        "HOST_KEY",
        "RESULT_KEY",
        "EXCEPTION_KEY",
        "CANCELLED_KEY",
        "PENDING_KEY",
        "get_host_info",
        "result_response",
        "exception_response",
        "cancelled_response",
        "pending_response",
        "response_to_future",
        "response_result",
        "future_to_response",
        "ensure_coroutine",
    ),
}


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "names"), NAMES_BY_MODULE.items())
def test_every_kiwipy_09_name_is_importable_at_its_path(module: str, names: tuple[str]) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in names if not hasattr(imported, name)]
    assert missing == []


def test_all_lists_kiwipy_09_names_first_in_their_order() -> None:
    assert kiwipy.__all__[: len(KIWIPY_09_ALL)] == KIWIPY_09_ALL
    assert {"KiwipyError", "ConnectionLost"} <= set(kiwipy.__all__)
    assert all(hasattr(kiwipy, name) for name in kiwipy.__all__)


def test_rmq_all_is_kiwipy_09s() -> None:
    assert kiwipy.rmq.__all__ == NAMES_BY_MODULE["kiwipy.rmq"][:9]
    assert kiwipy.rmq.utils.__all__ == ()


def test_package_attributes_of_kiwipy_09() -> None:
    assert isinstance(kiwipy.__version__, str)
    assert any(isinstance(h, kiwipy.NullHandler) for h in logging.getLogger("kiwipy").handlers)
    for name in ("communicate", "communications", "exceptions", "filters", "futures", "local"):
        assert inspect.ismodule(getattr(kiwipy, name))
    assert kiwipy.communicate.DEFAULT_COMM_URI == "amqp://guest:guest@127.0.0.1/"


def test_kiwipy_09_exception_types_keep_their_meaning() -> None:
    assert issubclass(kiwipy.UnroutableError, kiwipy.DeliveryFailed)
    assert kiwipy.TimeoutError is concurrent.futures.TimeoutError  # catches future.result()
    assert kiwipy.exceptions.TimeoutError is kiwipy.TimeoutError
    assert kiwipy.communications.TimeoutError is kiwipy.TimeoutError
    assert issubclass(kiwipy.exceptions.DeadlineExceeded, kiwipy.TimeoutError)
    assert issubclass(kiwipy.exceptions.DeadlineExceeded, kiwipy.KiwipyError)
    assert kiwipy.CancelledError is concurrent.futures.CancelledError
    assert kiwipy.Future is concurrent.futures.Future
    assert kiwipy.communications.UnroutableError is kiwipy.UnroutableError


def test_import_kiwipy_loads_no_broker_client_and_no_rmq() -> None:
    heavy = ["kiwipy.rmq", "kiwipy.aio", "kiwipy.sync", "kiwipy.transports.amqp"]
    heavy += ["aiormq", "pamqp", "aio_pika"]
    code = (
        f"import sys, kiwipy; print([m for m in {heavy!r} if m in sys.modules]); "
        "print(kiwipy.aio.AsyncCommunicator.__name__, kiwipy.rmq.connect.__name__)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert output.stdout.split("\n")[:2] == ["[]", "AsyncCommunicator connect"]


def test_import_kiwipy_rmq_loads_no_broker_client_and_no_yaml() -> None:
    # PyYAML is loaded when a YAML message (kiwipy 0.9's) first comes or goes, not before.
    heavy = ("aiormq", "pamqp", "yaml")
    code = f"import sys, kiwipy.rmq; print([m for m in {heavy!r} if m in sys.modules])"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert output.stdout.strip() == "[]"


# -- signatures --------------------------------------------------------------------------------

CONNECT_09 = [
    ("connection_params", None),
    ("connection_factory", defaults.CONNECTION_FACTORY),
    ("message_exchange", "kiwipy.messages"),
    ("task_exchange", "kiwipy.tasks"),
    ("task_queue", "kiwipy.tasks"),
    ("task_prefetch_size", 0),
    ("task_prefetch_count", 0),
    ("encoder", defaults.ENCODER),
    ("decoder", defaults.DECODER),
    ("testing_mode", False),
]
INIT_09 = [
    ("self", EMPTY),
    *CONNECT_09[:3],
    ("queue_expires", 60000),
    *CONNECT_09[3:],
]
ASYNC_INIT_09 = [("self", EMPTY), ("connection", EMPTY), *INIT_09[3:]]
ASYNC_CONNECT_09 = [*CONNECT_09[:3], ("queue_expires", 60000), *CONNECT_09[3:]]
TASK_QUEUE_09 = [
    ("self", EMPTY),
    ("queue_name", EMPTY),
    ("prefetch_size", 0),
    ("prefetch_count", 0),
]
INTERFACE_09 = {
    "add_rpc_subscriber": [("self", EMPTY), ("subscriber", EMPTY), ("identifier", None)],
    "remove_rpc_subscriber": [("self", EMPTY), ("identifier", EMPTY)],
    "add_task_subscriber": [("self", EMPTY), ("subscriber", EMPTY), ("identifier", None)],
    "remove_task_subscriber": [("self", EMPTY), ("identifier", EMPTY)],
    "add_broadcast_subscriber": [("self", EMPTY), ("subscriber", EMPTY), ("identifier", None)],
    "remove_broadcast_subscriber": [("self", EMPTY), ("identifier", EMPTY)],
    "task_send": [("self", EMPTY), ("task", EMPTY), ("no_reply", False)],
    "rpc_send": [("self", EMPTY), ("recipient_id", EMPTY), ("msg", EMPTY)],
    "broadcast_send": [
        ("self", EMPTY),
        ("body", EMPTY),
        ("sender", None),
        ("subject", None),
        ("correlation_id", None),
    ],
}


def assert_signature(function: Callable[..., Any], expected: list[tuple[str, Any]]) -> None:
    """kiwipy 0.9's parameters come first, in order, with their defaults; extras are optional."""
    parameters = list(inspect.signature(function).parameters.values())
    assert [(p.name, p.default) for p in parameters[: len(expected)]] == expected
    for extra in parameters[len(expected) :]:
        assert extra.default is not EMPTY or extra.kind in (extra.VAR_KEYWORD, extra.VAR_POSITIONAL)


def test_connect_signatures() -> None:
    assert_signature(kiwipy.connect, [("uri", "amqp://guest:guest@127.0.0.1/")])
    assert inspect.signature(kiwipy.connect).parameters["kwargs"].kind.name == "VAR_KEYWORD"
    assert_signature(kiwipy.rmq.connect, CONNECT_09)
    assert_signature(RmqThreadCommunicator.connect, [*CONNECT_09, ("async_task_timeout", 5.0)])
    assert_signature(kiwipy.rmq.async_connect, ASYNC_CONNECT_09)
    assert inspect.iscoroutinefunction(kiwipy.rmq.async_connect)


def test_communicator_constructor_signatures() -> None:
    assert_signature(RmqThreadCommunicator.__init__, [*INIT_09, ("async_task_timeout", 5.0)])
    assert RmqThreadCommunicator.TASK_TIMEOUT == 5.0
    assert_signature(kiwipy.rmq.RmqCommunicator.__init__, ASYNC_INIT_09)


@pytest.mark.parametrize(
    "cls", [kiwipy.Communicator, kiwipy.LocalCommunicator, RmqThreadCommunicator]
)
def test_blocking_communicator_method_signatures(cls: type) -> None:
    for name, expected in INTERFACE_09.items():
        assert_signature(getattr(cls, name), expected)
    for name in ("is_closed", "close", "__enter__"):
        assert_signature(getattr(cls, name), [("self", EMPTY)])


def test_rmq_communicator_methods_are_coroutines_with_09_signatures() -> None:
    cls = kiwipy.rmq.RmqCommunicator
    for name, expected in INTERFACE_09.items():
        assert inspect.iscoroutinefunction(getattr(cls, name)), name
        assert_signature(getattr(cls, name), expected)
    for name in ("connect", "disconnect", "get_default_task_queue", "task_queue"):
        assert inspect.iscoroutinefunction(getattr(cls, name)), name
    assert_signature(cls.task_queue, TASK_QUEUE_09)
    assert_signature(
        cls.add_close_callback, [("self", EMPTY), ("callback", EMPTY), ("weak", False)]
    )


def test_thread_communicator_extra_method_signatures() -> None:
    cls = RmqThreadCommunicator
    assert_signature(cls.task_queue, TASK_QUEUE_09)
    assert_signature(
        cls.add_close_callback, [("self", EMPTY), ("callback", EMPTY), ("weak", False)]
    )
    assert_signature(cls.loop, [("self", EMPTY)])
    queue = kiwipy.rmq.RmqThreadTaskQueue
    assert_signature(queue.next_task, [("self", EMPTY), ("timeout", 5.0), ("fail", True)])
    assert_signature(queue.task_send, [("self", EMPTY), ("task", EMPTY), ("no_reply", False)])
    assert_signature(queue.add_task_subscriber, [("self", EMPTY), ("subscriber", EMPTY)])
    assert_signature(queue.remove_task_subscriber, [("self", EMPTY), ("identifier", EMPTY)])
    aqueue = kiwipy.rmq.RmqTaskQueue
    next_task = [("self", EMPTY), ("no_ack", False), ("fail", True), ("timeout", 5.0)]
    assert_signature(aqueue.next_task, next_task)


def test_helper_signatures() -> None:
    assert_signature(kiwipy.copy_future, [("source", EMPTY), ("target", EMPTY)])
    assert_signature(kiwipy.chain, [("source", EMPTY), ("target", EMPTY)])
    assert_signature(kiwipy.capture_exceptions, [("future", EMPTY), ("ignore", ())])
    assert_signature(
        kiwipy.BroadcastFilter.__init__,
        [("self", EMPTY), ("subscriber", EMPTY), ("subject", None), ("sender", None)],
    )
    fire_task = [("self", EMPTY), ("msg", EMPTY), ("no_reply", False)]
    assert_signature(kiwipy.CommunicatorHelper.fire_task, fire_task)
    fire_rpc = [("self", EMPTY), ("recipient_id", EMPTY), ("msg", EMPTY)]
    assert_signature(kiwipy.CommunicatorHelper.fire_rpc, fire_rpc)
    assert_signature(kiwipy.rmq.utils.exception_response, [("exception", EMPTY), ("trace", None)])
    assert_signature(kiwipy.rmq.utils.response_to_future, [("response", EMPTY), ("future", None)])
    create = [("body", EMPTY), ("sender", None), ("subject", None), ("correlation_id", None)]
    assert_signature(kiwipy.rmq.messages.BroadcastMessage.create, create)


# -- kiwipy 0.9 arguments -> Settings ----------------------------------------------------------


def settings_of(*args: Any, **kwargs: Any) -> Any:
    return rmq_arguments.settings_from_arguments(*args, **kwargs)


def test_connection_params_url_dict_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIWIPY_URL", raising=False)
    assert settings_of("amqp://u:p@host:1234/vh").url == "amqp://u:p@host:1234/vh"
    from_dict = settings_of({"url": "amqp://a:b@h/", "heartbeat": 600, "timeout": 3})
    assert (from_dict.url, from_dict.heartbeat, from_dict.connection_timeout) == (
        "amqp://a:b@h/",
        600,
        3,
    )
    parts = settings_of({"host": "h", "port": 1, "login": "u", "password": "p w"})
    assert parts.url == "amqp://u:p%20w@h:1/"
    assert settings_of(None).url == "amqp://guest:guest@127.0.0.1/"


def test_unknown_connection_params_keys_are_ignored_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="client_properties"):
        settings = settings_of({"url": "memory://x", "client_properties": {}})
    assert settings.url == "memory://x"


def test_kiwipy_09_options_map_onto_settings() -> None:
    settings = settings_of(
        "memory://x",
        queue_expires=1234,
        async_task_timeout=7,
        task_prefetch_size=0,
        message_exchange="m",
        testing_mode=True,
    )
    assert (settings.queue_expires_ms, settings.operation_timeout) == (1234, 7.0)
    assert (settings.message_exchange, settings.testing_mode) == ("m", True)


def test_prefetch_count_zero_means_kiwipys_finite_default() -> None:
    default = kiwipy.settings.Settings().task_prefetch_count
    assert default > 0
    assert settings_of("memory://x", task_prefetch_count=0).task_prefetch_count == default
    assert settings_of("memory://x", task_prefetch_count=3).task_prefetch_count == 3


def test_default_codec_pair_means_kiwipys_json_codec_and_others_pass_through() -> None:
    assert settings_of("memory://x").encoder is None
    dump = functools.partial(yaml.safe_dump, encoding="utf-8")
    settings = settings_of("memory://x", encoder=dump, decoder=yaml.safe_load)
    assert (settings.encoder, settings.decoder) == (dump, yaml.safe_load)


def test_custom_connection_factory_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rmq_arguments, "_FACTORY_WARNED", False)

    async def my_factory(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("never called")

    with pytest.warns(UserWarning, match="connection_factory"):
        settings_of("memory://x", my_factory)
    settings_of("memory://x", my_factory)  # filterwarnings=error: a second warning would fail


def test_aio_pikas_own_connect_robust_is_taken_as_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rmq_arguments, "_FACTORY_WARNED", False)

    def connect_robust(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("never called")

    connect_robust.__module__ = "aio_pika.robust_connection"
    settings_of("memory://x", connect_robust)  # no warning (filterwarnings=error)


def test_unknown_uri_scheme_is_a_value_error_with_the_password_masked() -> None:
    with pytest.raises(ValueError, match="Unknown communicator uri") as info:
        kiwipy.connect("http://user:secret@host/")
    assert "secret" not in str(info.value)


def test_connect_takes_settings_fields_beside_kiwipy_09_keywords(unique_name: str) -> None:
    """Issue 14: ``kiwipy.connect`` accepts what ``Settings`` has, not only 0.9's keywords."""
    with kiwipy.connect(
        f"memory://{unique_name}",
        task_queue=f"{unique_name}.tasks",  # a kiwipy 0.9 keyword
        queue_expires=5_000,  # a kiwipy 0.9 keyword with another Settings name
        rpc_timeout=3.0,  # Settings fields
        task_timeout=7.0,
        max_message_bytes=1024,
    ) as comm:
        settings = comm.settings
        assert settings.task_queue == f"{unique_name}.tasks"
        assert settings.queue_expires_ms == 5_000
        assert (settings.rpc_timeout, settings.task_timeout) == (3.0, 7.0)
        assert settings.max_message_bytes == 1024
    with pytest.raises(TypeError, match="no_such_option"):
        kiwipy.connect(f"memory://{unique_name}", no_such_option=1)


def test_kiwipy_url_is_the_url_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch, unique_name: str
) -> None:
    """Issue 14: ``$KIWIPY_URL`` is honoured by every entry point, kiwipy 0.9's included."""
    monkeypatch.setenv("KIWIPY_URL", f"memory://{unique_name}")
    assert settings_of(None).url == f"memory://{unique_name}"
    with kiwipy.connect() as comm:
        assert comm.settings.url == f"memory://{unique_name}"
    with kiwipy.connect("memory://given") as comm:  # a URL given wins
        assert comm.settings.url == "memory://given"


def test_connect_reaches_the_local_broker(local_url: str, unique_name: str) -> None:
    with kiwipy.connect(local_url, task_queue=f"{unique_name}.tasks", rpc_timeout=5.0) as comm:
        comm.add_rpc_subscriber(lambda _comm, msg: msg * 2, f"{unique_name}.doubler")
        assert comm.rpc_send(f"{unique_name}.doubler", 21).result(timeout=10) == 42


# -- rmq.defaults, rmq.utils, rmq.messages -----------------------------------------------------


def test_default_codec_round_trips_and_reads_kiwipy_09_yaml_safely() -> None:
    body = defaults.ENCODER({"a": [1, "x", None]})
    assert isinstance(body, bytes)
    assert defaults.DECODER(body) == {"a": [1, "x", None]}
    assert defaults.DECODER(b"!!python/tuple\n- 42\n- false\n") == (42, False)
    with pytest.raises(kiwipy.exceptions.DecodeError):
        defaults.DECODER(b"!!python/object/apply:os.getcwd []\n")


def test_response_helpers_round_trip_through_futures() -> None:
    utils = kiwipy.rmq.utils
    assert utils.response_result(utils.result_response(5)) == 5
    with pytest.raises(kiwipy.RemoteException, match="ValueError: bad"):
        utils.response_result(utils.exception_response(ValueError("bad")))
    assert utils.response_to_future(utils.cancelled_response("x")).cancelled()
    nested = utils.response_to_future(utils.pending_response())
    assert isinstance(nested.result(), kiwipy.Future)
    with pytest.raises(TypeError):
        utils.response_to_future([1])
    with pytest.raises(ValueError):
        utils.response_to_future({"nothing": 1})
    failed: kiwipy.Future[Any] = kiwipy.Future()
    failed.set_exception(KeyError("k"))
    assert utils.future_to_response(failed)[utils.EXCEPTION_KEY] == "KeyError: 'k'"
    assert set(utils.get_host_info()) == {"hostname", "pid"}


async def test_response_to_an_asyncio_future_nests_an_asyncio_future() -> None:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    kiwipy.rmq.utils.response_to_future({"pending": None}, future)
    assert asyncio.isfuture(future.result())


async def test_ensure_coroutine_awaits_what_a_plain_callable_returns() -> None:
    async def double(x: int) -> int:
        return 2 * x

    assert kiwipy.rmq.utils.ensure_coroutine(double) is double
    wrapped = kiwipy.rmq.utils.ensure_coroutine(lambda x: double(x))
    assert await wrapped(4) == 8
    with pytest.raises(TypeError):
        kiwipy.rmq.utils.ensure_coroutine(42)  # type: ignore[arg-type]


def test_weak_callback_keeps_callables_that_cannot_be_weakly_referenced() -> None:
    getter = operator.itemgetter(1)
    assert kiwipy.aio._futures.weak_callback(getter) is getter


def test_broadcast_message_create() -> None:
    assert kiwipy.rmq.messages.BroadcastMessage.create(1, sender=2, subject="s") == {
        "body": 1,
        "sender": 2,
        "subject": "s",
        "correlation_id": None,
    }


# -- behaviour through kiwipy.connect, in memory and on RabbitMQ -------------------------------


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    url: str = request.getfixturevalue("amqp_url")
    return url


@pytest.fixture
def names(unique_name: str) -> dict[str, Any]:
    return {
        "message_exchange": f"{unique_name}.messages",
        "task_exchange": f"{unique_name}.tasks",
        "task_queue": f"{unique_name}.tasks",
        "testing_mode": True,
    }


@pytest.fixture
def connect(broker_url: str, names: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    opened: list[Any] = []

    def connect(**options: Any) -> Any:
        communicator = kiwipy.connect(broker_url, **{**names, **options})
        opened.append(communicator)
        return communicator

    yield connect
    for communicator in opened:
        communicator.close()


def test_connect_returns_a_kiwipy_communicator(connect: Callable[..., Any]) -> None:
    comm = connect()
    assert isinstance(comm, RmqThreadCommunicator)
    assert isinstance(comm, kiwipy.Communicator)
    assert comm.server_properties
    assert isinstance(comm.loop(), asyncio.AbstractEventLoop)


def test_rpc_nested_futures_have_one_level_per_subscriber_future(
    connect: Callable[..., Any],
) -> None:
    server, client = connect(), connect()
    first: kiwipy.Future[Any] = kiwipy.Future()
    second: kiwipy.Future[Any] = kiwipy.Future()
    server.add_rpc_subscriber(lambda comm, msg: first, "nested")
    outer = client.rpc_send("nested", None)
    level1 = outer.result(WAIT)  # resolves before the work is done: the pending reply
    assert isinstance(level1, kiwipy.Future)
    first.set_result(second)
    level2 = level1.result(WAIT)
    assert isinstance(level2, kiwipy.Future)
    second.set_result("deep")
    assert level2.result(WAIT) == "deep"


def test_task_nested_future_resolves_after_the_work(connect: Callable[..., Any]) -> None:
    worker, client = connect(), connect()
    work: kiwipy.Future[Any] = kiwipy.Future()
    worker.add_task_subscriber(lambda comm, task: work)
    nested = client.task_send("job").result(WAIT)
    assert isinstance(nested, kiwipy.Future) and not nested.done()
    work.set_result("done")
    assert nested.result(WAIT) == "done"


def test_broadcast_send_returns_exactly_true(connect: Callable[..., Any]) -> None:
    comm = connect()
    heard: concurrent.futures.Future[Any] = concurrent.futures.Future()
    comm.add_broadcast_subscriber(kiwipy.BroadcastFilter(lambda *args: heard.set_result(args)))
    assert comm.broadcast_send("hello", sender=7, subject="greet") is True
    assert heard.result(WAIT) == (comm, "hello", 7, "greet", None)


def test_task_send_no_reply_is_none_and_runs(connect: Callable[..., Any]) -> None:
    worker, client = connect(), connect()
    ran = threading.Event()
    worker.add_task_subscriber(lambda comm, task: ran.set())
    assert client.task_send("fire and forget", no_reply=True) is None
    assert ran.wait(WAIT)


def test_rpc_send_to_nobody_raises_unroutable_from_rpc_send_at_once(
    connect: Callable[..., Any],
) -> None:
    comm = connect()
    start = time.monotonic()
    with pytest.raises(kiwipy.UnroutableError):
        comm.rpc_send("nobody-here", 1)
    assert time.monotonic() - start < 1.0


def test_second_rpc_subscriber_with_one_identifier_is_refused(
    connect: Callable[..., Any],
) -> None:
    first, second = connect(), connect()
    first.add_rpc_subscriber(lambda comm, msg: msg, "owner")
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        first.add_rpc_subscriber(lambda comm, msg: msg, "owner")
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        second.add_rpc_subscriber(lambda comm, msg: msg, "owner")


def test_close_calls_the_close_callback_within_close_and_is_idempotent(
    connect: Callable[..., Any],
) -> None:
    comm = connect()
    calls: list[tuple[Any, Any]] = []
    comm.add_close_callback(lambda sender, exc: calls.append((sender, exc)))
    comm.close()
    assert calls == [(comm, None)]
    comm.close()
    assert comm.is_closed()
    assert comm.server_properties == {}


@pytest.mark.parametrize(
    "operation",
    [
        lambda comm: comm.rpc_send("x", 1),
        lambda comm: comm.task_send(1),
        lambda comm: comm.broadcast_send(1),
        lambda comm: comm.add_rpc_subscriber(lambda c, m: m),
        lambda comm: comm.add_task_subscriber(lambda c, m: m),
        lambda comm: comm.add_broadcast_subscriber(lambda *args: None),
        lambda comm: comm.task_queue("q"),
        lambda comm: comm.add_close_callback(lambda *args: None),
    ],
)
def test_operations_after_close_raise_communicator_closed(
    connect: Callable[..., Any], operation: Callable[[Any], Any]
) -> None:
    comm = connect()
    comm.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        operation(comm)


def test_weak_close_callback_is_dropped_with_its_owner(connect: Callable[..., Any]) -> None:
    comm = connect()
    calls: list[str] = []

    class Owner:
        def __init__(self, name: str) -> None:
            self.name = name

        def on_close(self, sender: Any, exc: Any) -> None:
            calls.append(self.name)

    kept, dropped = Owner("kept"), Owner("dropped")
    comm.add_close_callback(kept.on_close, weak=True)
    comm.add_close_callback(dropped.on_close, weak=True)
    del dropped
    comm.close()
    assert calls == ["kept"]


def test_task_queue_next_task_processing_and_iteration(
    connect: Callable[..., Any], unique_name: str
) -> None:
    comm = connect()
    queue = comm.task_queue(f"{unique_name}.work")
    assert isinstance(queue, kiwipy.rmq.RmqThreadTaskQueue)
    futures = [queue.task_send(n) for n in (1, 2, 3)]
    with queue.next_task(timeout=WAIT) as task:
        assert isinstance(task, kiwipy.rmq.threadcomms.RmqThreadIncomingTask)
        assert (task.body, task.no_reply, task.state) == (1, False, "pending")
        with task.processing() as outcome:
            outcome.set_result(task.body * 10)
    assert futures[0].result(WAIT) == 10
    seen = []
    for task in queue:
        seen.append(task.body)
        if task.body == 2:
            task.process().set_result("two")
    assert sorted(seen) == [2, 3]
    assert futures[1].result(WAIT) == "two"
    with queue.next_task(timeout=WAIT) as task:  # 3 went back to the queue
        assert task.body == 3
        task.process().set_result("three")
    assert futures[2].result(WAIT) == "three"
    with pytest.raises(kiwipy.exceptions.QueueEmpty), queue.next_task(timeout=0.2):
        pass


def test_async_rpc_and_task_subscribers_work_through_the_thread_communicator(
    connect: Callable[..., Any],
) -> None:
    server, client = connect(), connect()

    async def rpc(comm: Any, msg: Any) -> Any:
        await asyncio.sleep(0.01)
        return ["rpc", msg, comm is server]

    async def task(comm: Any, body: Any) -> Any:
        await asyncio.sleep(0.01)
        return ["task", body, comm is server]

    server.add_rpc_subscriber(rpc, "async-rpc")
    server.add_task_subscriber(task)
    assert client.rpc_send("async-rpc", 1).result(WAIT) == ["rpc", 1, True]
    assert client.task_send(2).result(WAIT) == ["task", 2, True]


def test_subscriber_may_use_the_communicator_it_is_given(connect: Callable[..., Any]) -> None:
    server, client = connect(), connect()
    server.add_rpc_subscriber(lambda comm, msg: msg + 1, "inc")
    server.add_rpc_subscriber(lambda comm, msg: comm.rpc_send("inc", msg).result(WAIT), "relay")
    assert client.rpc_send("relay", 1).result(WAIT) == 2


def test_user_encoder_decoder_pair_is_used_and_talks_to_default_peers(
    connect: Callable[..., Any],
) -> None:
    used: list[str] = []

    def encoder(value: Any) -> bytes:
        used.append("encode")
        return yaml.safe_dump(value, encoding="utf-8")

    def decoder(body: bytes) -> Any:
        used.append("decode")
        return yaml.safe_load(body)

    yaml_server, yaml_client = (
        connect(encoder=encoder, decoder=decoder),
        connect(encoder=encoder, decoder=decoder),
    )
    plain = connect()
    yaml_server.add_rpc_subscriber(lambda comm, msg: {"got": msg}, "yaml")
    plain.add_rpc_subscriber(lambda comm, msg: {"got": msg}, "plain")
    assert yaml_client.rpc_send("yaml", [1, "a"]).result(WAIT) == {"got": [1, "a"]}
    assert used.count("encode") == 2 and used.count("decode") == 2  # request and reply
    assert plain.rpc_send("yaml", 2).result(WAIT) == {"got": 2}
    assert yaml_client.rpc_send("plain", 3).result(WAIT) == {"got": 3}


# -- the asyncio communicator: kiwipy.rmq.async_connect + RmqCommunicator ----------------------


async def test_async_connect_and_the_coroutine_api(
    broker_url: str, names: dict[str, Any], unique_name: str
) -> None:
    comm = await kiwipy.rmq.async_connect(broker_url, **names)
    try:
        assert isinstance(comm, kiwipy.rmq.RmqCommunicator) and comm.connected()
        assert comm.loop is asyncio.get_running_loop()
        assert str(comm).startswith("RMQCommunicator(")
        await comm.add_rpc_subscriber(lambda c, msg: [msg, c is comm], "arpc")
        assert await (await comm.rpc_send("arpc", 3)) == [3, True]
        await comm.add_task_subscriber(lambda c, task: task * 2)
        assert await (await comm.task_send(21)) == 42
        heard: asyncio.Queue[Any] = asyncio.Queue()
        await comm.add_broadcast_subscriber(lambda *args: heard.put_nowait(args[1:]))
        assert await comm.broadcast_send("b", sender=1, subject="s", correlation_id=2) is True
        assert await asyncio.wait_for(heard.get(), WAIT) == ("b", 1, "s", 2)
        default_queue = await comm.get_default_task_queue()
        assert isinstance(default_queue, kiwipy.rmq.RmqTaskQueue)
        assert default_queue.name == names["task_queue"]
    finally:
        await comm.disconnect()
    assert not comm.connected()
    with pytest.raises(RuntimeError, match="not connected"):
        await comm.get_default_task_queue()
    with pytest.raises(kiwipy.CommunicatorClosed):
        await comm.connect()


async def test_rmq_communicator_task_queue_pull_api(
    broker_url: str, names: dict[str, Any], unique_name: str
) -> None:
    async with kiwipy.rmq.RmqCommunicator(broker_url, **names) as comm:
        queue = await comm.task_queue(f"{unique_name}.pull")
        assert isinstance(queue, kiwipy.rmq.RmqTaskQueue)
        future = await queue.task_send("pull me")
        async with queue.next_task(timeout=WAIT) as task:
            assert isinstance(task, kiwipy.rmq.RmqIncomingTask)
            async with task.processing() as outcome:
                outcome.set_result(task.body.upper())
        assert await future == "PULL ME"
        with pytest.raises(kiwipy.QueueEmpty):
            async with queue.next_task(timeout=0.2):
                pass


async def test_rmq_communicator_refuses_a_connection_object() -> None:
    with pytest.raises(TypeError, match="URL"):
        kiwipy.rmq.RmqCommunicator(object())  # type: ignore[arg-type]


async def test_rmq_task_queue_refuses_a_connection_object() -> None:
    # kiwipy 0.9 built its queues as RmqTaskQueue(aio_pika_connection, queue_name=..., ...)
    for cls in (kiwipy.rmq.RmqTaskQueue, kiwipy.rmq.RmqTaskPublisher):
        with pytest.raises(TypeError, match="task_queue"):
            cls(object(), queue_name="q", exchange_name="x", testing_mode=True)  # type: ignore[arg-type]


# -- an outcome future dropped unresolved gives the task back (kiwipy 0.9's weakref requeue) ---


def test_dropped_process_future_requeues_the_task(
    connect: Callable[..., Any], unique_name: str
) -> None:
    queue = connect().task_queue(f"{unique_name}.forget")
    sent = queue.task_send("forgotten")
    with queue.next_task(timeout=WAIT) as task:
        outcome = task.process()
    del outcome, task
    gc.collect()
    with queue.next_task(timeout=WAIT) as task:  # back in the queue
        assert task.body == "forgotten"
        outcome = task.process()
        outcome.set_result("done at last")
    assert sent.result(WAIT) == "done at last"
    del outcome, task  # a resolved outcome dropped later does not requeue its task
    gc.collect()
    with pytest.raises(kiwipy.QueueEmpty), queue.next_task(timeout=0.5):
        pass


async def test_dropped_asyncio_process_future_requeues_the_task(
    broker_url: str, names: dict[str, Any], unique_name: str
) -> None:
    async with kiwipy.rmq.RmqCommunicator(broker_url, **names) as comm:
        queue = await comm.task_queue(f"{unique_name}.forget")
        sent = await queue.task_send("forgotten")
        async with queue.next_task(timeout=WAIT) as task:
            outcome = task.process()
        del outcome
        gc.collect()
        async with queue.next_task(timeout=WAIT) as task:
            assert task.body == "forgotten"
            task.process().set_result("done at last")
        assert await asyncio.wait_for(sent, WAIT) == "done at last"


@pytest.mark.amqp
async def test_rmq_task_queue_built_from_an_aio_pika_connection(
    amqp_url: str, unique_name: str
) -> None:
    aio_pika = pytest.importorskip("aio_pika")
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        queue = kiwipy.rmq.RmqTaskQueue(
            connection, queue_name=f"{unique_name}.q", exchange_name=unique_name, testing_mode=True
        )
        await queue.connect()
        outcome = await queue.task_send("Hello!")
        async with queue.next_task(timeout=5.0) as task, task.processing() as result:
            assert task.body == "Hello!"
            result.set_result("Goodbye")
        assert await asyncio.wait_for(outcome, 5) == "Goodbye"
        await queue.disconnect()

        publisher = kiwipy.rmq.RmqTaskPublisher(
            connection,
            queue_name=f"{unique_name}.none",
            exchange_name=unique_name,
            testing_mode=True,
        )
        await publisher.connect()
        # kiwipy 0.9's publisher does not declare its queue; its users catch aio-pika's error
        with pytest.raises(aio_pika.exceptions.DeliveryError) as excinfo:
            await publisher.task_send("nobody listens")
        assert isinstance(excinfo.value, kiwipy.UnroutableError)
        await publisher.disconnect()
    finally:
        await connection.close()
