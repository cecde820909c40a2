"""What the cluster scenarios share: clients spread over the nodes, paced publishers that resend
or report, worker processes on a quorum task queue, and the timing figures read from the ledger.

Not a scenario itself (it is not in :data:`~kiwipy_reliability.scenarios.CLUSTER`).

Clients are *spread*: consumer ``i`` and publisher ``i`` connect first to node ``i``. When the
library takes a failover URL list (``amqp://u:p@h:P1/;amqp://h:P2;amqp://h:P3``), each client
gets every node's address, its own node first; otherwise it gets its own node's URL only and
:func:`failover_supported` says so (the figures then show ``failover`` 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import kiwipy.sync
from kiwipy.settings import Settings
from kiwipy_reliability.base import ScenarioResult, unique_name
from kiwipy_reliability.faults import WorkerProcess
from kiwipy_reliability.faults.cluster import ClusterError, RabbitCluster
from kiwipy_reliability.ledger import Ledger
from kiwipy_reliability.workers import WorkerSpec, start_worker

__all__ = [
    "HEARTBEAT",
    "PREFETCH",
    "RECONNECT_MAX_DELAY",
    "ClusterLoad",
    "LeaderFault",
    "Publisher",
    "client_options",
    "client_url",
    "drain",
    "failover_supported",
    "first_after",
    "rounded",
    "run_leader_fault",
]

PREFETCH = 50
#: Heartbeat of every client of the cluster scenarios (seconds): a frozen node is noticed after
#: about two of them.
HEARTBEAT = 5
#: The longest back-off between reconnection attempts of the scenarios' clients (seconds).
RECONNECT_MAX_DELAY = 2.0
_SEND_TIMEOUT = 10.0
_SEND_ATTEMPTS = 3
_RESEND_PAUSE = 0.5
_DRAIN_IDLE = 30.0


def failover_supported() -> bool:
    """Whether the library takes failover addresses (``Settings.failover_urls``)."""
    return "failover_urls" in {field.name for field in dataclasses.fields(Settings)}


def client_url(cluster: RabbitCluster, index: int) -> str:
    """Node ``index``'s URL, followed by the other nodes' when failover lists are supported."""
    if failover_supported():
        return cluster.failover_url(index)
    return cluster.nodes[index].url


def client_options(queue: str, **more: Any) -> dict[str, Any]:
    """Connection options of every scenario client: a quorum task queue of its own."""
    return {
        "task_queue": queue,
        "task_exchange": queue,
        "task_queue_type": "quorum",
        "heartbeat": HEARTBEAT,
        "reconnect_max_delay": RECONNECT_MAX_DELAY,
        **more,
    }


@dataclasses.dataclass
class SendRecord:
    ids: list[int]
    sent: float  # wall-clock time the (last) attempt began
    ended: float
    attempts: int
    confirmed: bool
    error: str | None = None


class Publisher:
    """A thread sending ``ids`` in batches with ``task_send_many`` (persistent tasks, confirms).

    A batch whose send raised is sent again with the same ids (up to ``_SEND_ATTEMPTS``
    attempts, ``_RESEND_PAUSE`` s apart); one that never got confirmed is recorded in the ledger
    as failed (reported to the caller) and the publisher gives up (:attr:`gave_up`): the rest
    of its ids are never published. Connection events are kept with their times.
    """

    def __init__(
        self,
        name: str,
        url: str,
        options: dict[str, Any],
        ids: Sequence[int],
        ledger: Ledger,
        *,
        batch: int,
        rate: float,
        task_seconds: float = 0.0,
    ) -> None:
        self.name = name
        self.ids = list(ids)
        self.ledger = ledger
        self.batch = batch
        self.rate = rate
        self.task_seconds = task_seconds
        self.records: list[SendRecord] = []
        self.connection_events: list[tuple[float, bool]] = []
        self.errors: list[BaseException] = []
        self.send_errors: list[str] = []  # every attempt that raised, in order
        self.gave_up = False
        self.stop = threading.Event()
        self.comm = kiwipy.sync.connect(url, **options)
        self.comm.add_connection_callback(
            lambda _comm, up, _exc: self.connection_events.append((time.time(), bool(up)))
        )
        self._thread = threading.Thread(target=self._run, name=f"publisher-{name}", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def join(self, timeout: float) -> bool:
        """Wait for the thread; return whether it finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        self.comm.close()

    @property
    def sent_count(self) -> int:
        return sum(len(r.ids) for r in self.records)

    def _run(self) -> None:
        started = time.monotonic()
        done = 0
        try:
            while done < len(self.ids) and not self.stop.is_set():
                ids = self.ids[done : done + self.batch]
                if not self._send(ids):
                    self.gave_up = True
                    return
                done += len(ids)
                pause = started + done / self.rate - time.monotonic()
                if pause > 0:
                    self.stop.wait(pause)
        except BaseException as exc:
            self.errors.append(exc)

    def _send(self, ids: list[int]) -> bool:
        """Send one batch; return whether it was confirmed."""
        self.ledger.record_published(ids)
        error: BaseException | None = None
        for attempt in range(1, _SEND_ATTEMPTS + 1):
            sent = time.time()
            try:
                self.comm.task_send_many(
                    [{"id": i, "sleep": self.task_seconds} for i in ids],
                    no_reply=True,
                    timeout=_SEND_TIMEOUT,
                )
            except Exception as exc:  # reported to the caller: send again, same ids
                error = exc
                self.send_errors.append(f"{time.time() - sent:.2f} s: {exc!r}"[:300])
                if self.stop.wait(_RESEND_PAUSE):
                    break
                continue
            self.ledger.record_confirmed(ids)
            self.records.append(SendRecord(ids, sent, time.time(), attempt, True))
            return True
        assert error is not None
        self.ledger.record_failed(ids, error)
        self.records.append(
            SendRecord(ids, sent, time.time(), _SEND_ATTEMPTS, False, type(error).__name__)
        )
        return False

    # -- figures -------------------------------------------------------------------------------

    def resumed_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` until a batch *sent* after it was confirmed."""
        ends = [r.ended for r in self.records if r.confirmed and r.sent >= moment]
        return min(ends) - moment if ends else None

    def lost_connection_after(self, moment: float) -> float | None:
        downs = [t for t, up in self.connection_events if not up and t >= moment]
        return min(downs) - moment if downs else None

    def resent_batches(self) -> int:
        return sum(1 for r in self.records if r.attempts > 1)

    def raised_batches(self) -> int:
        return sum(1 for r in self.records if not r.confirmed)


class ClusterLoad:
    """Consumers (one worker process per node) and publishers on one quorum queue.

    ``consumer_nodes[i]`` is the node consumer ``i`` connects to first; publishers likewise.
    """

    def __init__(self, cluster: RabbitCluster, queue: str, ledger: Ledger) -> None:
        self.cluster = cluster
        self.queue = queue
        self.ledger = ledger
        self.workers: list[WorkerProcess] = []
        self.consumer_nodes: list[int] = []
        self.publishers: list[Publisher] = []
        self.publisher_nodes: list[int] = []

    def declare(self, node: int) -> None:
        """Declare the queue through ``node`` (which then leads it) and wait for all members."""
        comm = kiwipy.sync.connect(self.cluster.nodes[node].url, **client_options(self.queue))
        try:  # subscribing declares the queue (task_queue() alone is lazy)
            comm.remove_task_subscriber(comm.add_task_subscriber(lambda _comm, task: task))
        finally:
            comm.close()
        self.cluster.wait_members_online(self.queue, len(self.cluster.nodes), 60.0)

    def start_consumers(self, nodes: Sequence[int]) -> None:
        for index, node in enumerate(nodes):
            options = client_options(self.queue)
            spec = WorkerSpec(
                client_url(self.cluster, node),
                self.queue,
                self.queue,
                prefetch=PREFETCH,
                heartbeat=HEARTBEAT,
                settings={k: v for k, v in options.items() if k not in _WORKER_OWN},
            )
            worker = start_worker(spec, f"c{index}@n{node}", ready_timeout=60.0)
            self.ledger.watch(worker)
            self.workers.append(worker)
            self.consumer_nodes.append(node)

    def add_publisher(self, node: int, ids: Sequence[int], *, batch: int, rate: float) -> Publisher:
        publisher = Publisher(
            f"p{len(self.publishers)}@n{node}",
            client_url(self.cluster, node),
            client_options(self.queue),
            ids,
            self.ledger,
            batch=batch,
            rate=rate,
        )
        self.publishers.append(publisher)
        self.publisher_nodes.append(node)
        return publisher

    def worker_name(self, index: int) -> str:
        return f"c{index}@n{self.consumer_nodes[index]}"

    def consumer_resumed_after(self, index: int, moment: float) -> float | None:
        """Seconds from ``moment`` until consumer ``index`` started a task published after it
        (so tasks it had prefetched before do not count)."""
        self.ledger.refresh()
        name = self.worker_name(index)
        published = self.ledger.published
        starts = [
            d.time
            for task_id, deliveries in list(self.ledger.deliveries.items())
            if published.get(task_id, 0.0) >= moment
            for d in deliveries
            if d.worker == name
        ]
        return min(starts) - moment if starts else None

    def consumer_connection_after(self, index: int, moment: float, up: bool) -> float | None:
        """Seconds from ``moment`` until consumer ``index`` reported its link lost (``up``
        false) or restored."""
        self.ledger.refresh()
        name = self.worker_name(index)
        times = [
            float(e["t"])  # type: ignore[arg-type]
            for e in self.ledger.connection_events
            if e["w"] == name and bool(e["up"]) is up and float(e["t"]) >= moment  # type: ignore[arg-type]
        ]
        return min(times) - moment if times else None

    def close(self) -> None:
        for publisher in self.publishers:
            with contextlib.suppress(Exception):  # closing after a fault may fail
                publisher.close()
        for worker in self.workers:
            worker.close()


#: Options the worker command line sets itself.
_WORKER_OWN = ("task_queue", "task_exchange", "heartbeat")


def drain(ledger: Ledger, idle: float = _DRAIN_IDLE) -> None:
    """Wait until every confirmed task completed, or none completed for ``idle`` s."""
    last_progress = time.monotonic()
    remaining = len(ledger.outstanding())
    while remaining and time.monotonic() - last_progress < idle:
        time.sleep(0.2)
        now_remaining = len(ledger.outstanding())
        if now_remaining < remaining:
            last_progress = time.monotonic()
        remaining = now_remaining


def first_after(times: Sequence[float | None]) -> float | None:
    """The largest of the known times (``None`` if one is unknown)."""
    if any(t is None for t in times):
        return None
    return max((t for t in times if t is not None), default=0.0)


def rounded(value: float | None, missing: float = -1.0) -> float:
    """A figure in seconds (``missing`` when it never happened)."""
    return missing if value is None else round(value, 2)


# -- the leader fault scenarios (kill -9 and freeze) ---------------------------------------------


@dataclasses.dataclass
class LeaderFault:
    """How one leader-fault run goes: the counts and what is done to the leader."""

    name: str
    per_publisher: int
    rate: float  # tasks per second and publisher
    batch: int
    fault_after: float  # seconds of load before the fault
    kind: str  # "kill" or "freeze"
    frozen_for: float = 0.0


def run_leader_fault(cluster: RabbitCluster, plan: LeaderFault) -> ScenarioResult:
    """Load a quorum queue from clients spread over the nodes, then kill or freeze its leader.

    Consumer ``i`` and publisher ``i`` start on node ``i`` (one consumer per node, publisher 0 on
    the leader's node, publisher 1 on the next one). Figures: the ledger's, plus
    ``survivors_resume_s`` (the longest time from the fault until a client on another node
    completed work published after it: a consumer started such a task, a publisher got a
    confirm for a batch sent after it), ``dead_node_resume_s`` (the same for the clients of the
    faulty node; -1: never, e.g. without failover addresses), ``dead_node_detect_s`` (until
    they reported the link lost), ``new_leader_s``, ``duplicates_bound`` (prefetch x consumers on
    the faulty node), ``silently_dropped`` (tasks whose send neither got a confirm nor raised)
    and ``resent_batches``.
    """
    queue = unique_name(f"reliability-{plan.name}")
    ledger = Ledger()
    load = ClusterLoad(cluster, queue, ledger)
    notes: list[str] = []
    began = time.monotonic()
    nodes = len(cluster.nodes)
    figures: dict[str, float | int] = {}
    try:
        load.declare(0)
        leader = cluster.wait_leader(queue, 30.0)
        victim = cluster.index(leader)
        load.start_consumers(range(nodes))
        ids = range(2 * plan.per_publisher)
        for number, node in enumerate((victim, (victim + 1) % nodes)):
            chunk = ids[number * plan.per_publisher : (number + 1) * plan.per_publisher]
            load.add_publisher(node, chunk, batch=plan.batch, rate=plan.rate)
        for publisher in load.publishers:
            publisher.start()
        time.sleep(plan.fault_after)
        moment = time.time()
        if plan.kind == "kill":
            cluster.kill(victim)
        else:
            cluster.freeze(victim)
        fault_clock = time.monotonic()
        try:
            cluster.wait_leader(queue, 60.0, other_than=leader)
            new_leader_s: float | None = time.monotonic() - fault_clock
        except ClusterError as exc:
            notes.append(str(exc))
            new_leader_s = None
        if plan.kind == "freeze":
            time.sleep(max(0.0, plan.frozen_for - (time.monotonic() - fault_clock)))
            cluster.thaw(victim)
            notes.append(f"leader {leader.name} frozen for {time.monotonic() - fault_clock:.1f} s")
        budget = plan.per_publisher / plan.rate + _SEND_ATTEMPTS * (_SEND_TIMEOUT + 1) + 30.0
        hung = [p.name for p in load.publishers if not p.join(budget)]
        notes.extend(f"publisher {name} hung" for name in hung)
        for publisher in load.publishers:
            notes.extend(f"{publisher.name} crashed: {exc!r}" for exc in publisher.errors)
            notes.extend(f"{publisher.name} send raised after {e}" for e in publisher.send_errors)
        drain(ledger)
        time.sleep(1.0)  # late duplicates
        for i, node in enumerate(load.consumer_nodes):
            if node == victim:
                events = [
                    f"{'up' if e['up'] else 'down'} {float(e['t']) - moment:+.2f} s"  # type: ignore[arg-type]
                    for e in ledger.connection_events
                    if e["w"] == load.worker_name(i)
                ]
                notes.append(f"{load.worker_name(i)} on the faulty node: link {events}")
        survivors = [
            load.consumer_resumed_after(i, moment)
            for i, node in enumerate(load.consumer_nodes)
            if node != victim
        ] + [
            p.resumed_after(moment)
            for p, node in zip(load.publishers, load.publisher_nodes, strict=True)
            if node != victim
        ]
        victim_consumers = [
            load.consumer_resumed_after(i, moment)
            for i, node in enumerate(load.consumer_nodes)
            if node == victim
        ]
        victim_publishers = [
            p.resumed_after(moment)
            for p, node in zip(load.publishers, load.publisher_nodes, strict=True)
            if node == victim
        ]
        detect = [
            load.consumer_connection_after(i, moment, up=False)
            for i, node in enumerate(load.consumer_nodes)
            if node == victim
        ] + [
            p.lost_connection_after(moment)
            for p, node in zip(load.publishers, load.publisher_nodes, strict=True)
            if node == victim
        ]
        figures = dict(ledger.figures())
        published = set(ledger.published)
        reported = ledger.confirmed | set(ledger.failed)
        figures.update(
            failover=int(failover_supported()),
            heartbeat_s=HEARTBEAT,
            reconnect_max_delay_s=RECONNECT_MAX_DELAY,
            new_leader_s=rounded(new_leader_s),
            survivors_resume_s=rounded(first_after(survivors)),
            dead_node_resume_s=rounded(first_after(victim_consumers + victim_publishers)),
            dead_node_consumer_resume_s=rounded(first_after(victim_consumers)),
            dead_node_publisher_resume_s=rounded(first_after(victim_publishers)),
            dead_node_detect_s=rounded(first_after(detect)),
            duplicates_bound=PREFETCH * load.consumer_nodes.count(victim),
            silently_dropped=len(published - reported),
            resent_batches=sum(p.resent_batches() for p in load.publishers),
            raised_batches=sum(p.raised_batches() for p in load.publishers),
            publishers_gave_up=sum(p.gave_up for p in load.publishers),
            hung_futures=len(published - reported) + len(hung),
            recovery_s=rounded(first_after(survivors)),
            workers_alive=sum(w.is_running() for w in load.workers),
        )
        if figures["lost"]:
            missing = sorted(ledger.outstanding())[:20]
            notes.append(f"confirmed but never completed (first 20): {missing}")
    finally:
        load.close()
        if cluster.is_running(0) or cluster.running_count():
            with contextlib.suppress(Exception):
                cluster.ctl("delete_queue", queue)
    figures["total_s"] = round(time.monotonic() - began, 1)
    return ScenarioResult(plan.name, figures, notes)


def leader_fault_misses(
    figures: dict[str, float | int], *, survivors_within: float, detect_within: float | None
) -> list[str]:
    """The targets of a leader-fault run that ``figures`` miss (``[]``: all met).

    Failover targets (the faulty node's clients resuming on another address) apply only when
    the library has failover addresses (``failover`` 1).
    """
    misses: list[str] = []
    if figures.get("lost"):
        misses.append(f"lost {figures['lost']} confirmed tasks")
    if figures.get("duplicated", 0) > figures.get("duplicates_bound", 0):
        misses.append(
            f"duplicated {figures['duplicated']} > prefetch x consumers of the node "
            f"({figures['duplicates_bound']})"
        )
    if figures.get("silently_dropped") or figures.get("hung_futures"):
        misses.append("a send neither confirmed nor raised, or a publisher hung")
    survivors = figures.get("survivors_resume_s", -1)
    if not 0 <= survivors <= survivors_within:
        misses.append(f"survivors resumed after {survivors} s (target {survivors_within} s)")
    if figures.get("failover"):
        resume_within = RECONNECT_MAX_DELAY + 2.0
        for kind in ("consumer", "publisher"):
            resumed = figures.get(f"dead_node_{kind}_resume_s", -1)
            if detect_within is None and not 0 <= resumed <= resume_within:
                misses.append(
                    f"the dead node's {kind}s resumed after {resumed} s (-1: never; target "
                    f"{resume_within} s)"
                )
        detected = figures.get("dead_node_detect_s", -1)
        if detect_within is not None and not 0 <= detected <= detect_within:
            misses.append(
                f"the frozen node's clients noticed after {detected} s (target {detect_within} s)"
            )
    return misses
