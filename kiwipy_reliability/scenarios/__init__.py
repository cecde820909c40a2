"""The reliability scenarios, in the order a full run executes them.

Each module defines ``NAME`` and ``run(node, scale)``; see :mod:`..base`.
"""

ALL = ["broker_kill", "worker_kill", "worker_stop", "network_cut", "consumer_timeout", "malformed"]

#: The scenarios on a 3-node cluster (``python -m kiwipy_reliability --cluster``); each defines
#: ``NAME``, ``run(cluster, scale)`` and ``misses(figures)`` (the targets it missed).
CLUSTER = [
    "cluster_leader_kill",
    "cluster_leader_freeze",
    "cluster_rolling_restart",
    "cluster_kiwipy09",
]

__all__ = ["ALL", "CLUSTER"]
