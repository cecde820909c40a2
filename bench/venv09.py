"""The kiwipy 0.9.0 environment the baseline runs in: ``bench/.venv-kiwipy09`` (gitignored)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-kiwipy09"
REQUIREMENT = "kiwipy[rmq]==0.9.0"  # the rmq extra brings aio-pika, which kiwipy.rmq needs
#: Written after a finished install, so a half-made environment is never used.
STAMP = VENV / ".bench-installed"
VENV_TIMEOUT_S = 120.0
PIP_TIMEOUT_S = 600.0


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def existing_python() -> Path | None:
    """The environment's interpreter if a finished install is there, else ``None``."""
    python = _python(VENV)
    return python if STAMP.exists() and python.exists() else None


def create() -> Path:
    """Make the environment (``python -m venv`` plus ``pip install``); return its interpreter."""
    python = _python(VENV)
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(VENV)], VENV_TIMEOUT_S)
    _run([str(python), "-m", "pip", "install", "-q", REQUIREMENT], PIP_TIMEOUT_S)
    STAMP.write_text(REQUIREMENT + "\n")
    return python


def _run(command: list[str], timeout: float) -> None:
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, timeout=timeout)  # noqa: S603 (fixed commands)
