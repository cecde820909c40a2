"""R4: the network between clients and broker is cut while RPCs, tasks and broadcasts flow.

Every communicator connects through a :class:`~kiwipy_reliability.faults.TcpProxy`: an RPC server
that also consumes the task queue and sends broadcasts, RPC callers (``rpc_send`` with a
deadline, in a loop), task publishers and broadcast subscribers. The proxy first stalls (a
partition: nothing flows, nothing is closed) and refuses new connections, then resets every
connection; after the outage it accepts and forwards again.

Figures: ``hung_futures`` (RPCs that did not settle with a result or a typed kiwipy error within
their deadline plus a margin), ``typed_errors`` (and ``typed_errors.<Type>``),
``untyped_errors``, ``lost`` (confirmed tasks never processed), ``recovered`` /
``indeterminate`` (task sends that failed; ``recovered`` counts those processed anyway),
``consumers_before`` / ``consumers_after`` / ``duplicate_consumer_queues`` (consumers on this
run's queues) and ``recovery_s`` (from the end of the outage to the first RPC answered and the
first broadcast received by every subscriber).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kiwipy_reliability.scenario_workers import queue_table

if TYPE_CHECKING:
    from kiwipy.sync import Communicator
    from kiwipy_reliability.base import Scale, ScenarioResult
    from kiwipy_reliability.faults import RabbitNode

__all__ = ["NAME", "run"]

NAME = "network_cut"

_MARGIN = 2.0  # seconds an RPC may take over its deadline before it counts as hung
_RPC_DEADLINE = 3.0
_CALL_PAUSE = 0.05  # 20 calls/s per caller
_TASK_PAUSE = 0.05
_BROADCAST_PAUSE = 0.1
_WARMUP_TIMEOUT = 20.0
_RECOVERY_TIMEOUT = 40.0
_DRAIN_TIMEOUT = 30.0
_CONSUMERS_TIMEOUT = 20.0


@dataclasses.dataclass
class _Call:
    started: float
    settled: float | None = None
    outcome: str = "pending"  # "ok" or the exception's type name


@dataclasses.dataclass
class _Ledger:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    calls: list[_Call] = dataclasses.field(default_factory=list)
    untyped: Counter[str] = dataclasses.field(default_factory=Counter)
    confirmed: set[str] = dataclasses.field(default_factory=set)
    indeterminate: set[str] = dataclasses.field(default_factory=set)
    task_errors: Counter[str] = dataclasses.field(default_factory=Counter)
    processed: Counter[str] = dataclasses.field(default_factory=Counter)
    broadcasts: dict[int, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    broadcast_errors: Counter[str] = dataclasses.field(default_factory=Counter)

    def settle(self, call: _Call, outcome: str) -> None:
        with self.lock:
            if call.settled is None:
                call.settled = time.monotonic()
                call.outcome = outcome

    def first_ok_after(self, moment: float) -> float | None:
        with self.lock:
            times = [c.settled for c in self.calls if c.outcome == "ok" and c.settled is not None]
        after = [t for t in times if t >= moment]
        return min(after) if after else None

    def broadcast_recovered(self, moment: float) -> float | None:
        """When every subscriber had received a broadcast sent after ``moment``."""
        with self.lock:
            firsts: list[float] = []
            for received in self.broadcasts.values():
                times = [got for sent, got in received if sent >= moment]
                if not times:
                    return None
                firsts.append(min(times))
        return max(firsts) if firsts else None


def _is_typed(exc: BaseException) -> bool:
    from kiwipy.exceptions import KiwipyError

    return isinstance(exc, KiwipyError)


def _rpc_caller(comm: Communicator, rpc_id: str, ledger: _Ledger, stop: threading.Event) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        call = _Call(time.monotonic())
        with ledger.lock:
            ledger.calls.append(call)
        try:
            future = comm.rpc_send(rpc_id, number, deadline=_RPC_DEADLINE, timeout=_RPC_DEADLINE)
        except Exception as exc:
            ledger.settle(call, type(exc).__name__)
            if not _is_typed(exc):
                with ledger.lock:
                    ledger.untyped[type(exc).__name__] += 1
        else:

            def settled(done: concurrent.futures.Future[Any], call: _Call = call) -> None:
                if done.cancelled():
                    ledger.settle(call, "cancelled")
                    return
                exc = done.exception()
                if exc is None:
                    ledger.settle(call, "ok")
                    return
                ledger.settle(call, type(exc).__name__)
                if not _is_typed(exc):
                    with ledger.lock:
                        ledger.untyped[type(exc).__name__] += 1

            future.add_done_callback(settled)
            # One call in flight per caller, but never wait past the call's own bound.
            concurrent.futures.wait([future], timeout=_RPC_DEADLINE + _MARGIN)
        stop.wait(_CALL_PAUSE)


def _task_publisher(comm: Communicator, name: str, ledger: _Ledger, stop: threading.Event) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        ident = f"{name}-{number}"
        try:
            comm.task_send({"id": ident}, no_reply=True, timeout=_RPC_DEADLINE)
        except Exception as exc:
            with ledger.lock:
                ledger.indeterminate.add(ident)
                ledger.task_errors[type(exc).__name__] += 1
        else:
            with ledger.lock:
                ledger.confirmed.add(ident)
        stop.wait(_TASK_PAUSE)


def _broadcaster(comm: Communicator, ledger: _Ledger, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            comm.broadcast_send({"sent": time.monotonic()}, subject="tick", timeout=_RPC_DEADLINE)
        except Exception as exc:
            with ledger.lock:
                ledger.broadcast_errors[type(exc).__name__] += 1
        stop.wait(_BROADCAST_PAUSE)


def _wait_until(condition: Callable[[], bool], timeout: float, pause: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
    return True


def _our_consumers(node: RabbitNode, prefix: str) -> dict[str, int]:
    """Consumers per queue of this run (its named queues and any broadcast queue in use)."""
    counts: dict[str, int] = {}
    for name, (consumers,) in queue_table(node, "consumers").items():
        number = int(consumers) if consumers.isdigit() else -1
        if name.startswith(prefix) or (name.startswith("broadcast-") and number != 0):
            counts[name] = number
    return counts


@contextlib.contextmanager
def _communicators() -> Iterator[list[Communicator]]:
    opened: list[Communicator] = []
    try:
        yield opened
    finally:
        for comm in reversed(opened):
            with contextlib.suppress(Exception):
                comm.close()


def run(node: RabbitNode, scale: Scale) -> ScenarioResult:
    from kiwipy import sync
    from kiwipy_reliability.base import ScenarioResult, unique_name
    from kiwipy_reliability.faults import TcpProxy

    outage = float(scale.pick(5, 10, 30))
    callers = scale.pick(3, 5, 10)
    publishers = 2
    subscribers = 3
    prefix = unique_name("netcut")
    rpc_id = "server"
    settings: dict[str, Any] = {
        "message_exchange": f"{prefix}.messages",
        "task_exchange": f"{prefix}.tasks",
        "task_queue": f"{prefix}.queue",
        "heartbeat": 10,
        "operation_timeout": 10.0,
    }
    ledger = _Ledger()
    stop = threading.Event()
    notes = [f"outage {outage:g} s (stalled half, then cut), RPC deadline {_RPC_DEADLINE:g} s"]
    figures: dict[str, float | int] = {}
    threads: list[threading.Thread] = []

    def processed(_comm: Any, body: dict[str, Any]) -> None:
        with ledger.lock:
            ledger.processed[str(body["id"])] += 1

    def echo(_comm: Any, message: Any) -> Any:
        return message

    with TcpProxy(node.host, node.port) as proxy, _communicators() as comms:
        url = proxy.url_for(node.url)

        def connect() -> Communicator:
            comm = sync.connect(url, **settings)
            comms.append(comm)
            return comm

        server = connect()
        server.add_rpc_subscriber(echo, rpc_id)
        server.add_task_subscriber(processed)
        for number in range(subscribers):
            received: list[tuple[float, float]] = []
            ledger.broadcasts[number] = received

            def on_broadcast(
                _comm: Any, body: Any, *_args: Any, received: list[tuple[float, float]] = received
            ) -> None:
                with ledger.lock:
                    received.append((float(body["sent"]), time.monotonic()))

            connect().add_broadcast_subscriber(on_broadcast)

        def start(target: Callable[..., None], *args: Any) -> None:
            thread = threading.Thread(target=target, args=(*args, ledger, stop), daemon=True)
            thread.start()
            threads.append(thread)

        for _ in range(callers):
            start(_rpc_caller, connect(), rpc_id)
        for number in range(publishers):
            start(_task_publisher, connect(), f"p{number}")
        start(_broadcaster, server)

        began = time.monotonic()
        warm = _wait_until(
            lambda: (
                ledger.first_ok_after(began) is not None
                and len(ledger.confirmed) > 0
                and ledger.broadcast_recovered(began) is not None
            ),
            _WARMUP_TIMEOUT,
        )
        if not warm:
            notes.append("load did not get going before the cut")
        time.sleep(1.0)
        before = _our_consumers(node, prefix)
        figures["consumers_expected"] = sum(before.values())
        figures["queues_before"] = len(before)
        with ledger.lock:
            figures["rpc_ok_before"] = sum(1 for call in ledger.calls if call.outcome == "ok")

        proxy.stall()
        proxy.refuse()
        time.sleep(outage / 2)
        proxy.cut()
        time.sleep(outage / 2)
        resumed = time.monotonic()
        proxy.accept()
        proxy.resume()

        def recovered_at() -> float | None:
            rpc = ledger.first_ok_after(resumed)
            broadcast = ledger.broadcast_recovered(resumed)
            return None if rpc is None or broadcast is None else max(rpc, broadcast)

        recovered = _wait_until(lambda: recovered_at() is not None, _RECOVERY_TIMEOUT)
        figures["recovered"] = int(recovered)
        at = recovered_at()
        figures["recovery_s"] = round(at - resumed, 2) if at is not None else -1.0
        rpc_at = ledger.first_ok_after(resumed)
        figures["rpc_recovery_s"] = round(rpc_at - resumed, 2) if rpc_at is not None else -1.0

        time.sleep(2.0)  # some load after recovery
        stop.set()
        for thread in threads:
            thread.join(2 * (_RPC_DEADLINE + _MARGIN))
        figures["stuck_threads"] = sum(1 for thread in threads if thread.is_alive())

        _wait_until(lambda: ledger.confirmed <= set(ledger.processed), _DRAIN_TIMEOUT, 0.2)
        time.sleep(0.5)  # late duplicates, if any

        after: dict[str, int] = {}

        def consumers_settled() -> bool:
            nonlocal after
            after = _our_consumers(node, prefix)
            live = {name: n for name, n in after.items() if n != 0}
            return sum(live.values()) == figures["consumers_expected"] and all(
                n == 1 for n in live.values()
            )

        _wait_until(consumers_settled, _CONSUMERS_TIMEOUT, 0.5)
        figures["consumers_after"] = sum(n for n in after.values() if n > 0)
        figures["queues_after"] = sum(1 for n in after.values() if n > 0)
        figures["duplicate_consumer_queues"] = sum(1 for n in after.values() if n > 1)
        named = [settings["task_queue"], f"{settings['message_exchange']}.rpc.{rpc_id}"]
        figures["named_queues_ok"] = int(all(after.get(name) == 1 for name in named))
        if not figures["named_queues_ok"] or figures["duplicate_consumer_queues"]:
            notes.append(f"consumers before {before}, after {after}")

    with ledger.lock:
        calls = list(ledger.calls)
        outcomes = Counter(call.outcome for call in calls)
        confirmed, indeterminate = set(ledger.confirmed), set(ledger.indeterminate)
        done = Counter(ledger.processed)
        untyped = sum(ledger.untyped.values())
        task_errors, broadcast_errors = dict(ledger.task_errors), dict(ledger.broadcast_errors)
    bound = _RPC_DEADLINE + _MARGIN
    hung = [c for c in calls if c.settled is None or c.settled - c.started > bound]
    figures["rpc_calls"] = len(calls)
    figures["rpc_ok"] = outcomes["ok"]
    figures["hung_futures"] = len(hung)
    errors = {name: n for name, n in outcomes.items() if name not in ("ok", "pending")}
    figures["typed_errors"] = sum(errors.values()) - untyped
    for name, n in sorted(errors.items()):
        figures[f"typed_errors.{name}"] = n
    figures["untyped_errors"] = untyped
    slowest = max((c.settled - c.started for c in calls if c.settled is not None), default=0.0)
    figures["rpc_slowest_settle_s"] = round(slowest, 2)
    figures["tasks_confirmed"] = len(confirmed)
    figures["indeterminate"] = len(indeterminate)
    figures["lost"] = len(confirmed - set(done))
    figures["recovered_indeterminate"] = len(indeterminate & set(done))
    figures["duplicated"] = sum(n - 1 for n in done.values() if n > 1)
    with ledger.lock:
        figures["broadcasts_received"] = sum(len(got) for got in ledger.broadcasts.values())
    if task_errors:
        notes.append(f"task send errors: {task_errors}")
    if broadcast_errors:
        notes.append(f"broadcast send errors: {broadcast_errors}")
    if hung:
        notes.append(f"{len(hung)} RPCs unsettled after {bound:g} s: {hung[:5]}")
    return ScenarioResult(NAME, figures, notes)
