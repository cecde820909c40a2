"""CL2: the leader of a quorum task queue frozen (SIGSTOP) under load, then thawed.

The load of :mod:`.cluster_leader_kill`; the leader's VM is stopped for 30 s (``test`` scale:
12 s), its sockets open, then continued. Targets: ``survivors_resume_s`` at most 10 s (Raft
elects a new leader once the frozen member stops answering); the frozen node's clients notice
within about 2 x heartbeat + 1 s (``dead_node_detect_s``); nothing hangs (``hung_futures`` 0,
``silently_dropped`` 0); ``lost`` 0 after the thaw.
"""

from __future__ import annotations

from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.faults.cluster import RabbitCluster
from kiwipy_reliability.scenarios.cluster_common import (
    HEARTBEAT,
    LeaderFault,
    leader_fault_misses,
    run_leader_fault,
)

__all__ = ["NAME", "misses", "run"]

NAME = "cluster_leader_freeze"


def run(cluster: RabbitCluster, scale: Scale) -> ScenarioResult:
    per_publisher = scale.pick(1000, 4000, 8000)
    frozen_for = scale.pick_float(12.0, 30.0, 30.0)
    plan = LeaderFault(
        NAME,
        per_publisher=per_publisher,
        # spread the load over the freeze and some seconds after it
        rate=per_publisher / (frozen_for + scale.pick_float(8.0, 12.0, 20.0)),
        batch=20,
        fault_after=scale.pick_float(1.5, 3.0, 3.0),
        kind="freeze",
        frozen_for=frozen_for,
    )
    return run_leader_fault(cluster, plan)


def misses(figures: dict[str, float | int]) -> list[str]:
    """The targets ``figures`` miss: lost 0, nothing hung, survivors back within 10 s, the
    frozen node's clients noticing within 2 x heartbeat + 1 s (with failover addresses)."""
    return leader_fault_misses(figures, survivors_within=10.0, detect_within=2.0 * HEARTBEAT + 1)
