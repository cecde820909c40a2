"""The reliability scenarios, in the order a full run executes them.

Each module defines ``NAME`` and ``run(node, scale)``; see :mod:`..base`.
"""

ALL = ["broker_kill", "worker_kill", "worker_stop", "network_cut", "consumer_timeout", "malformed"]

__all__ = ["ALL"]
