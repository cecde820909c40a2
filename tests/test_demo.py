"""The README's main job: the demo runs on RabbitMQ, and on the in-memory transport without it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_demo(*args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "kiwipy.demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout + completed.stderr


def assert_full_tour(output: str) -> None:
    assert "client: results [1, 4, 9, 16, 25]" in output
    assert "client: RPC answer from worker-1: {'worker': 'worker-1'" in output
    assert "client: heard 5 broadcasts through a filter" in output
    assert output.count("worker: got task") == 5


@pytest.mark.amqp
def test_demo_runs_against_rabbitmq(amqp_url: str) -> None:
    output = run_demo(amqp_url)
    assert "in-memory" not in output
    assert_full_tour(output)


def test_demo_without_a_broker_says_so_and_runs_in_memory() -> None:
    output = run_demo("amqp://guest:secret-word@127.0.0.1:1/")
    assert "No RabbitMQ answered at amqp://guest:****@127.0.0.1:1/" in output
    assert "in-memory transport" in output
    assert "secret-word" not in output
    assert_full_tour(output)
