"""L3: :mod:`.worker_kill` on the local broker: a worker SIGKILLed mid-task.

The same rounds as on RabbitMQ (one task of a few seconds, its worker SIGKILLed, the time until
another worker starts it again). The local broker holds a task for its worker's connection:
the moment the killed worker's socket closes, its task is back at the front of the queue,
flagged ``redelivered`` (target: ``redelivery_p99_s`` within 0.05 s).
"""

from __future__ import annotations

from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.local import LocalBroker
from kiwipy_reliability.scenarios import worker_kill

__all__ = ["NAME", "NEEDS_RABBITMQ", "run"]

NAME = "local_worker_kill"
NEEDS_RABBITMQ = False


def run(node: object, scale: Scale) -> ScenarioResult:
    with LocalBroker() as broker:
        result = worker_kill.run(broker.as_node(), scale)  # type: ignore[arg-type]
    return ScenarioResult(NAME, result.figures, result.notes)
