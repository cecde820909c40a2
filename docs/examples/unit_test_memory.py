# docs/examples/unit_test_memory.py
import uuid

import pytest

import kiwipy
import kiwipy.sync


def scale(comm, task):
    if task["factor"] < 0:
        raise ValueError("negative factor")
    return [x * task["factor"] for x in task["values"]]


@pytest.fixture
def comm():
    # A fresh in-memory broker per test: no RabbitMQ, nothing shared between tests.
    with kiwipy.sync.connect(f"memory://{uuid.uuid4().hex}") as communicator:
        communicator.add_task_subscriber(scale)
        yield communicator


def test_scale(comm):
    future = comm.task_send({"values": [1, 2], "factor": 3})
    assert future.result(timeout=5) == [3, 6]


def test_errors_come_back_typed(comm):
    future = comm.task_send({"values": [1], "factor": -1})
    with pytest.raises(kiwipy.RemoteException) as info:
        future.result(timeout=5)
    assert info.value.remote_type == "ValueError"
