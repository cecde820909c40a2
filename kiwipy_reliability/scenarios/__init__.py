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

__all__ = ["ALL", "LOCAL", "RABBITMQ"]
