"""The conformance suite over every transport: the in-memory broker must behave like RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import kiwipy.aio
from kiwipy.testing.conformance import CommunicatorConformance, Connect
from kiwipy.testing.drivers import connect_blocking

TRANSPORTS = [
    "memory",
    "local",
    pytest.param("amqp", marks=pytest.mark.amqp),
    pytest.param("amqp-quorum", marks=pytest.mark.amqp),  # task queues of type quorum
]


@pytest.fixture(params=TRANSPORTS)
def transport_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if request.param == "local":
        url: str = request.getfixturevalue("local_url")
        return url
    url: str = request.getfixturevalue("amqp_url")
    return url


@pytest.fixture(params=["async", "sync"])
def facade(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def connect(
    transport_url: str, facade: str, unique_name: str, request: pytest.FixtureRequest
) -> AsyncIterator[Connect]:
    quorum = request.node.callspec.params.get("transport_url") == "amqp-quorum"
    transport_options = {"task_queue_type": "quorum"} if quorum else {}
    opened: list[Any] = []

    async def connect(**options: Any) -> Any:
        options = {
            "message_exchange": f"{unique_name}.messages",
            "task_exchange": f"{unique_name}.tasks",
            "task_queue": f"{unique_name}.tasks",
            "testing_mode": True,
            **transport_options,
            **options,
        }
        if facade == "sync":
            communicator = await connect_blocking(transport_url, **options)
        else:
            communicator = await kiwipy.aio.connect(transport_url, **options)
        opened.append(communicator)
        return communicator

    yield connect
    for communicator in opened:
        await communicator.close()


class TestConformance(CommunicatorConformance):
    pass
