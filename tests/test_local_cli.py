"""``kiwipy status`` and ``kiwipy tasks list`` on the local broker (the default URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import kiwipy.sync
from tests.conftest import stop_local_broker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "home"
    monkeypatch.setenv("KIWIPY_HOME", str(directory))
    monkeypatch.delenv("KIWIPY_URL", raising=False)
    yield directory
    stop_local_broker(directory)


def kiwipy_cli(*args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "kiwipy.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_status_and_tasks_list_show_the_local_brokers_queue(home: Path) -> None:
    with kiwipy.sync.connect() as comm:
        assert comm.server_properties["product"] == "kiwipy-local-broker"
        for number in range(3):
            comm.task_send(number, no_reply=True)
    status = kiwipy_cli("status")
    assert "reachable at local://" in status
    assert re.search(r"kiwipy\.tasks\s*│\s*3\s*│\s*0\s*│\s*0", status), status
    listed = kiwipy_cli("tasks", "list")
    assert "Tasks waiting in queue 'kiwipy.tasks'" in listed
    assert len(re.findall(r"│ \d+ │ no", listed)) == 3


def test_kiwipy_prefix_names_the_clis_exchanges_and_queue(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One prefix variable, ``KIWIPY_PREFIX``, as the docs' examples use (issue 14)."""
    monkeypatch.setenv("KIWIPY_PREFIX", "prefixed")
    with kiwipy.sync.connect(task_queue="prefixed.tasks") as comm:
        comm.task_send("waiting", no_reply=True)
    status = kiwipy_cli("status")
    assert re.search(r"prefixed\.tasks\s*│\s*1\s*│", status), status
