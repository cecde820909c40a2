"""Quorum task queues on RabbitMQ: the arguments by queue type, and an existing queue of another
kind used as it is, after one clear warning (issue 15, item 1)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from typing import Any

import pytest

import kiwipy.aio
from kiwipy.settings import Settings
from kiwipy.transports.amqp._topology import task_queue_arguments

pytestmark = pytest.mark.timeout(60)


def test_classic_arguments_are_kiwipy_09s() -> None:
    assert task_queue_arguments(Settings()) == {"x-message-ttl": 604_800_000}


def test_quorum_arguments_add_the_type_and_an_explicit_delivery_limit() -> None:
    settings = Settings(task_queue_type="quorum", task_delivery_limit=7, testing_mode=True)
    arguments = task_queue_arguments(settings)
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-delivery-limit"] == 7
    assert not {"x-max-priority", "x-queue-mode"} & set(arguments)


def test_bad_queue_types_and_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="task_queue_type"):
        Settings(task_queue_type="stream")
    with pytest.raises(ValueError, match="task_delivery_limit"):
        Settings(task_delivery_limit=0)
    assert Settings.from_url("amqp://h/?task_queue_type=quorum").task_queue_type == "quorum"


def _queue_type(name: str) -> str | None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    listed = subprocess.run(
        [ctl, "-q", "list_queues", "name", "type", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if listed.returncode != 0:
        pytest.skip(f"rabbitmqctl cannot list queues here: {listed.stderr.strip()}")
    for line in listed.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return fields[1]
    return None


def _options(unique_name: str, **more: Any) -> dict[str, Any]:
    return {
        "message_exchange": f"{unique_name}.messages",
        "task_exchange": f"{unique_name}.tasks",
        "task_queue": f"{unique_name}.tasks",
        "testing_mode": True,
        **more,
    }


@pytest.mark.amqp
async def test_a_quorum_task_queue_is_declared_and_works(amqp_url: str, unique_name: str) -> None:
    options = _options(unique_name, task_queue_type="quorum")
    async with await kiwipy.aio.connect(amqp_url, **options) as comm:
        await comm.add_task_subscriber(lambda comm, task: task * 2)
        assert await (await comm.task_send(21)) == 42
        assert _queue_type(f"{unique_name}.tasks") == "quorum"


@pytest.mark.amqp
async def test_an_existing_classic_queue_is_used_after_one_warning(
    amqp_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    classic = await kiwipy.aio.connect(amqp_url, **_options(unique_name))
    await classic.task_send("declared as classic", no_reply=True)
    with caplog.at_level(logging.WARNING, logger="kiwipy"):
        quorum = await kiwipy.aio.connect(
            amqp_url, **_options(unique_name, task_queue_type="quorum")
        )
        await quorum.add_task_subscriber(lambda comm, task: task.upper())
        assert await (await quorum.task_send("still works")) == "STILL WORKS"
        await quorum.task_send("again", no_reply=True)
    warnings = [r for r in caplog.records if "already exists with other arguments" in r.message]
    assert len(warnings) == 1
    assert "x-queue-type" in warnings[0].getMessage()
    assert _queue_type(f"{unique_name}.tasks") == "classic"
    await quorum.close()
    await classic.close()


def _kiwipy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "kiwipy.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_policy_prints_the_rabbitmqctl_command() -> None:
    printed = _kiwipy_cli("policy", "--queue", "work.tasks", "--delivery-limit", "5")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("rabbitmqctl set_policy -p / kiwipy-poison-work.tasks")
    assert '"delivery-limit":5' in printed.stdout
    assert '"dead-letter-routing-key":"work.tasks.dead"' in printed.stdout


@pytest.mark.amqp
def test_policy_apply_sets_it_on_the_broker(unique_name: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    queue = f"{unique_name}.tasks"
    applied = _kiwipy_cli("policy", "--queue", queue, "--apply")
    if applied.returncode != 0 and "rabbitmqctl" in applied.stderr:
        pytest.skip(f"rabbitmqctl cannot run here: {applied.stderr.strip()}")
    assert applied.returncode == 0, applied.stderr
    try:
        listed = subprocess.run(
            [ctl, "-q", "list_policies"], capture_output=True, text=True, timeout=30
        )
        assert f"kiwipy-poison-{queue}" in listed.stdout
    finally:
        subprocess.run(
            [ctl, "-q", "clear_policy", f"kiwipy-poison-{queue}"], capture_output=True, timeout=30
        )
