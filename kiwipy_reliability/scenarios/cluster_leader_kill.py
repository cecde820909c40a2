"""CL1: the leader of a quorum task queue SIGKILLed under load, on a 3-node cluster.

Two publishers (one on the leader's node, one on the next) send persistent tasks in batches;
three worker processes, one per node, consume them. A few seconds in, the leader's VM is
SIGKILLed and left down. Targets: ``lost`` 0; ``duplicated`` at most ``duplicates_bound``
(prefetch x consumers of the dead node); ``survivors_resume_s`` at most 2 s; the dead node's
clients resume on another address within the reconnect delay + 2 s (``dead_node_resume_s``,
needs failover addresses); every send is confirmed, resent or raised (``silently_dropped`` 0).
See :func:`~kiwipy_reliability.scenarios.cluster_common.run_leader_fault`.
"""

from __future__ import annotations

from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.faults.cluster import RabbitCluster
from kiwipy_reliability.scenarios.cluster_common import (
    LeaderFault,
    leader_fault_misses,
    run_leader_fault,
)

__all__ = ["NAME", "misses", "run"]

NAME = "cluster_leader_kill"


def run(cluster: RabbitCluster, scale: Scale) -> ScenarioResult:
    per_publisher = scale.pick(600, 4000, 4000)
    plan = LeaderFault(
        NAME,
        per_publisher=per_publisher,
        rate=scale.pick_float(200.0, 500.0, 500.0),
        batch=20,
        fault_after=scale.pick_float(1.5, 3.0, 3.0),
        kind="kill",
    )
    return run_leader_fault(cluster, plan)


def misses(figures: dict[str, float | int]) -> list[str]:
    """The targets ``figures`` miss: lost 0, duplicates bounded, survivors back within 2 s, the
    dead node's clients back within the reconnect delay + 2 s (with failover addresses)."""
    return leader_fault_misses(figures, survivors_within=2.0, detect_within=None)
