"""Fault injection for tests: a private RabbitMQ node, a TCP proxy, worker processes.

* :class:`RabbitNode` runs a throw-away broker that can be killed, frozen and
  restarted on the same data (durable state survives), and reconfigured at runtime.
* :class:`TcpProxy` sits between client and broker and can cut, stall or refuse
  connections.
* :class:`WorkerProcess` runs a worker that can be SIGKILLed, SIGSTOPped and resumed.

pytest fixtures (``rabbit_node``, ``fresh_rabbit_node``, ``tcp_proxy``) live in
:mod:`kiwipy.testing.faults.fixtures`; enable them with
``pytest_plugins = ["kiwipy.testing.faults.fixtures"]``.
"""

from kiwipy.testing.faults._system import find_rabbitmq_sbin, rabbitmq_available
from kiwipy.testing.faults.config import NodeConfig
from kiwipy.testing.faults.node import RabbitNode
from kiwipy.testing.faults.processes import WorkerProcess
from kiwipy.testing.faults.proxy import TcpProxy

__all__ = [
    "NodeConfig",
    "RabbitNode",
    "TcpProxy",
    "WorkerProcess",
    "find_rabbitmq_sbin",
    "rabbitmq_available",
]
