"""The reliability scenarios, in the order a full run executes them.

Each module defines ``NAME`` and ``run(node, scale)``; see :mod:`..base`. The ``local_*`` ones
run on a local broker of their own (``NEEDS_RABBITMQ = False``: ``node`` is not used), so they
run where RabbitMQ is not installed.
"""

RABBITMQ = [
    "broker_kill",
    "worker_kill",
    "worker_stop",
    "network_cut",
    "consumer_timeout",
    "malformed",
]
LOCAL = [
    "local_spawn_race",
    "local_broker_kill",
    "local_worker_kill",
    "local_worker_stop",
    "local_malformed",
]
ALL = [*RABBITMQ, *LOCAL]

#: The scenarios on a 3-node cluster (``python -m kiwipy_reliability --cluster``); each defines
#: ``NAME``, ``run(cluster, scale)`` and ``misses(figures)`` (the targets it missed).
CLUSTER = [
    "cluster_leader_kill",
    "cluster_leader_freeze",
    "cluster_rolling_restart",
    "cluster_kiwipy09",
]

__all__ = ["ALL", "CLUSTER", "LOCAL", "RABBITMQ"]
