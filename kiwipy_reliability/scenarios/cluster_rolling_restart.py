"""CL3: a rolling restart of every node of the cluster under load.

The load of :mod:`.cluster_leader_kill` (two publishers, one consumer per node, a quorum task
queue), spread over the whole roll. Each node in turn is stopped gracefully (SIGTERM), started
again on its data, and the next one waits until the queue has all its members online again
(otherwise two members could be down at once and the queue would stop). Target: ``lost`` 0;
every send confirmed, resent or raised (``silently_dropped`` 0). ``restart_s`` is the longest
time from stopping a node until the queue had all members online again.
"""

from __future__ import annotations

import contextlib
import time

from kiwipy_reliability.base import Scale, ScenarioResult, unique_name
from kiwipy_reliability.faults.cluster import RabbitCluster
from kiwipy_reliability.ledger import Ledger
from kiwipy_reliability.scenarios.cluster_common import (
    ClusterLoad,
    drain,
    failover_supported,
)

__all__ = ["NAME", "misses", "run"]

NAME = "cluster_rolling_restart"

_ONLINE_TIMEOUT = 90.0
_RESTART_ESTIMATE = 8.0
_SETTLE = 1.0


def run(cluster: RabbitCluster, scale: Scale) -> ScenarioResult:
    per_publisher = scale.pick(600, 4000, 4000)
    nodes = len(cluster.nodes)
    rate = per_publisher / (nodes * _RESTART_ESTIMATE + 4.0)
    queue = unique_name(f"reliability-{NAME}")
    ledger = Ledger()
    load = ClusterLoad(cluster, queue, ledger)
    notes: list[str] = []
    restarts: list[float] = []
    began = time.monotonic()
    figures: dict[str, float | int] = {}
    try:
        load.declare(0)
        load.start_consumers(range(nodes))
        for number, node in enumerate((0, 1)):
            ids = range(number * per_publisher, (number + 1) * per_publisher)
            load.add_publisher(node, ids, batch=20, rate=rate)
        for publisher in load.publishers:
            publisher.start()
        time.sleep(2.0)
        for index in range(nodes):
            stopped = time.monotonic()
            cluster.stop(index)
            cluster.restart(index)
            cluster.wait_members_online(queue, nodes, _ONLINE_TIMEOUT)
            restarts.append(time.monotonic() - stopped)
            time.sleep(_SETTLE)
        budget = per_publisher / rate + 60.0
        hung = [p.name for p in load.publishers if not p.join(budget)]
        notes.extend(f"publisher {name} hung" for name in hung)
        for publisher in load.publishers:
            notes.extend(f"{publisher.name} crashed: {exc!r}" for exc in publisher.errors)
        drain(ledger)
        time.sleep(1.0)
        figures = dict(ledger.figures())
        published = set(ledger.published)
        reported = ledger.confirmed | set(ledger.failed)
        figures.update(
            failover=int(failover_supported()),
            restarts=len(restarts),
            restart_s=round(max(restarts, default=0.0), 1),
            silently_dropped=len(published - reported),
            resent_batches=sum(p.resent_batches() for p in load.publishers),
            raised_batches=sum(p.raised_batches() for p in load.publishers),
            publishers_gave_up=sum(p.gave_up for p in load.publishers),
            hung_futures=len(published - reported) + len(hung),
            workers_alive=sum(w.is_running() for w in load.workers),
        )
        if figures["lost"]:
            missing = sorted(ledger.outstanding())[:20]
            notes.append(f"confirmed but never completed (first 20): {missing}")
    finally:
        load.close()
        with contextlib.suppress(Exception):
            cluster.ctl("delete_queue", queue)
    figures["total_s"] = round(time.monotonic() - began, 1)
    return ScenarioResult(NAME, figures, notes)


def misses(figures: dict[str, float | int]) -> list[str]:
    """The targets ``figures`` miss: lost 0, every node restarted, every send reported."""
    found: list[str] = []
    if figures.get("lost"):
        found.append(f"lost {figures['lost']} confirmed tasks")
    if figures.get("restarts", 0) < 3:
        found.append(f"only {figures.get('restarts', 0)} nodes restarted")
    if figures.get("silently_dropped") or figures.get("hung_futures"):
        found.append("a send neither confirmed nor raised, or a publisher hung")
    return found
