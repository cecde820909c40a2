"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kiwipy.settings import mask_url

pytest_plugins = ["kiwipy_reliability.faults.fixtures"]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
_PROBE_TIMEOUT = 2.0


def _broker_answers(url: str) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of the RabbitMQ broker for the tests (``KIWIPY_TEST_AMQP_URL``).

    Probed once per session: when nothing answers, the tests that use this fixture
    fail under ``CI=true`` and are skipped otherwise.
    """
    url = os.environ.get("KIWIPY_TEST_AMQP_URL") or DEFAULT_AMQP_URL
    try:
        if not _broker_answers(url):
            message = f"no RabbitMQ at {mask_url(url)}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{message} (CI=true: a broker is required)", pytrace=False)
            pytest.skip(message)
    except ValueError as exc:  # malformed URL, e.g. a non-numeric port
        pytest.fail(f"invalid KIWIPY_TEST_AMQP_URL: {exc}", pytrace=False)
    return url


@pytest.fixture(scope="session")
def local_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``local://`` URL whose broker the first client starts; stopped after the session."""
    directory = tmp_path_factory.mktemp("local-broker")
    yield f"local://{directory}?idle_timeout=60"
    stop_local_broker(directory)


def stop_local_broker(directory: Path) -> None:
    """Stop the broker of ``directory``, if one runs (SIGTERM, then SIGKILL)."""
    pid_file = directory / "broker.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


@pytest.fixture
def unique_name() -> str:
    """A fresh prefix for exchange/queue names, so tests never share broker objects."""
    return f"kiwipy-test-{uuid.uuid4().hex[:12]}"
