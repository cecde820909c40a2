"""What a user gets from ``pip install kiwipy`` with no extras: a working ``kiwipy`` command.

The test builds a fresh virtualenv from this checkout (about 15 s here: pip takes the
dependencies from its cache or the index), as a user would, rather than trusting the dev venv
that has every extra installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=240, env=env)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv


def _kiwipy(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KIWIPY_URL", "PYTHONPATH")}
    return subprocess.run(
        [str(venv / "bin" / "kiwipy"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COLUMNS": "200"},
        cwd=venv,
    )


def test_kiwipy_help_works_after_a_plain_install(plain_venv: Path) -> None:
    completed = _kiwipy(plain_venv, "--help")
    assert completed.returncode == 0, completed.stderr
    assert "No module named" not in completed.stderr
    for command in ("worker", "send", "demo", "status"):
        assert command in completed.stdout


def test_kiwipy_demo_works_after_a_plain_install(plain_venv: Path) -> None:
    completed = _kiwipy(plain_venv, "demo", "--url", f"memory://{uuid.uuid4().hex}", "--tasks", "6")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "sent 6, completed 6" in completed.stdout
    assert "lost 0" in completed.stdout


def test_the_plain_install_has_no_dev_tools(plain_venv: Path) -> None:
    python = str(plain_venv / "bin" / "python")
    probe = "import importlib.util as u; print(u.find_spec('pytest') is None, u.find_spec('click') is None)"  # noqa: E501
    completed = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.stdout.split() == ["True", "False"]
