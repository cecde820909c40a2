"""Fault injection for tests: a private RabbitMQ node, a TCP proxy, worker processes.

* :class:`RabbitNode` runs a throw-away broker that can be killed, frozen and
  restarted on the same data (durable state survives), and reconfigured at runtime.
* :class:`TcpProxy` sits between client and broker and can cut, stall or refuse
  connections.
* :class:`WorkerProcess` runs a worker that can be SIGKILLed, SIGSTOPped and resumed.

pytest fixtures (``rabbit_node``, ``fresh_rabbit_node``, ``tcp_proxy``) live in
:mod:`kiwipy_reliability.faults.fixtures`; enable them with
``pytest_plugins = ["kiwipy_reliability.faults.fixtures"]``.
"""

from kiwipy_reliability.faults._system import find_rabbitmq_sbin, rabbitmq_available
from kiwipy_reliability.faults.config import NodeConfig
from kiwipy_reliability.faults.node import RabbitNode
from kiwipy_reliability.faults.processes import WorkerProcess
from kiwipy_reliability.faults.proxy import TcpProxy

__all__ = [
    "NodeConfig",
    "RabbitNode",
    "TcpProxy",
    "WorkerProcess",
    "find_rabbitmq_sbin",
    "rabbitmq_available",
]
