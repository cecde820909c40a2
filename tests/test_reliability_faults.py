"""Fault scenarios against a private RabbitMQ node, at test scale (RELIABILITY.md R4, R8, M1).

Each test runs one scenario of :mod:`kiwipy_reliability.scenarios` with
``Scale("test")`` and asserts its figures.
"""

from __future__ import annotations

import pytest

from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.faults import RabbitNode
from kiwipy_reliability.scenarios import consumer_timeout, malformed, network_cut


def _describe(result: ScenarioResult) -> str:
    return f"{result.name}: {result.figures}\n" + "\n".join(result.notes)


@pytest.mark.timeout(120)
def test_network_cut(fresh_rabbit_node: RabbitNode) -> None:
    result = network_cut.run(fresh_rabbit_node, Scale("test"))
    figures, why = result.figures, _describe(result)
    assert figures["rpc_calls"] > 0, why
    assert figures["rpc_ok_before"] > 0, why
    assert figures["hung_futures"] == 0, why
    assert figures["untyped_errors"] == 0, why
    assert figures["typed_errors"] > 0, why  # the cut was felt
    assert figures["tasks_confirmed"] > 0, why
    assert figures["lost"] == 0, why
    assert figures["recovered"] == 1, why
    assert figures["consumers_after"] == figures["consumers_expected"], why
    assert figures["duplicate_consumer_queues"] == 0, why
    assert figures["named_queues_ok"] == 1, why


@pytest.mark.timeout(120)
def test_consumer_timeout(fresh_rabbit_node: RabbitNode) -> None:
    result = consumer_timeout.run(fresh_rabbit_node, Scale("test"))
    figures, why = result.figures, _describe(result)
    assert figures["worker_survived"] == 1, why
    assert figures["long_task_told_lost"] == 1, why
    assert figures["redelivered"] == 20, why
    assert figures["consumer_restored"] == 1, why
    assert figures["consumers_after"] == 1, why
    assert figures["lost"] == 0, why
    assert figures["duplicated"] == 0, why
    assert fresh_rabbit_node.get_consumer_timeout() != 5_000, "node timeout not restored"


@pytest.mark.timeout(120)
def test_malformed(fresh_rabbit_node: RabbitNode) -> None:
    result = malformed.run(fresh_rabbit_node, Scale("test"))
    figures, why = result.figures, _describe(result)
    assert figures["malformed_sent"] >= 200, why
    assert figures["valid_sent"] >= 200, why
    assert figures["malformed_crashes"] == 0, why
    assert figures["connection_losses"] == 0, why
    assert figures["marker_created"] == 0, why
    assert figures["valid_processed"] == figures["valid_sent"], why
    assert figures["valid_redelivered"] == 0, why
    assert figures["dead_lettered"] == figures["malformed_sent"], why
    assert figures["dead_lettered_twice"] == 0, why
    assert figures["dead_with_reason"] == figures["malformed_sent"], why
    assert figures["queue_left"] == 0, why
    assert figures["malformed_settled_first"] == 1, why
