"""The systems a peers run compares, and the virtual environments the peers run in.

A *system* is one interpreter and one driver script (run as ``driver`` / ``worker`` with the
options of ``bench/common.py``) talking to one URL. Ours (kiwipy, from this repository's
``.venv``) may be there more than once, each time with another URL (``--kiwipy-url``); raw
aiormq is the same interpreter as ours; every peer has its own venv under
``bench/.venv-peers/<name>`` (gitignored), made from ``requirements-<name>.txt``. The plot
runs under ``bench/.venv-peers/tools`` (matplotlib). None of these is a kiwipy dependency.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE.parent / ".venv-peers"
#: The peers, in the order they are listed; each has ``requirements-<name>.txt`` and
#: ``peer_<name>.py`` here.
PEERS = ("celery", "dramatiq", "faststream", "taskiq")
TOOLS = "tools"
#: Written after a finished install, so a half-made environment is never used.
STAMP = ".bench-installed"
VENV_TIMEOUT_S = 120.0
PIP_TIMEOUT_S = 900.0


@dataclasses.dataclass(frozen=True)
class System:
    """One column of the comparison: ``python script driver ... --url url``."""

    name: str
    #: ``raw`` (the baseline), ``ours`` (a kiwipy transport) or ``peer``.
    kind: str
    python: str
    script: Path
    url: str


def requirements(name: str) -> Path:
    return HERE / f"requirements-{name}.txt"


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def existing_python(name: str) -> Path | None:
    """The interpreter of a finished environment ``name``, else ``None``."""
    python = venv_python(name)
    stamp = VENVS / name / STAMP
    wanted = requirements(name).read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    return None


def setup(names: tuple[str, ...] = (*PEERS, TOOLS)) -> None:
    """Make (or bring up to date with its requirements file) every environment in ``names``."""
    for name in names:
        if existing_python(name) is not None:
            continue
        python = venv_python(name)
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(VENVS / name)], VENV_TIMEOUT_S)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run([*pip, "-r", str(requirements(name))], PIP_TIMEOUT_S)
        (VENVS / name / STAMP).write_text(requirements(name).read_text())


def _run(command: list[str], timeout: float) -> None:
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, timeout=timeout)  # noqa: S603 (fixed commands)


def ours_name(spec: str) -> tuple[str, str]:
    """``--kiwipy-url`` as ``(name, url)``: ``NAME=URL``, or a URL named after its scheme
    (``amqp://...`` is ``kiwipy``, ``local://...`` is ``kiwipy-local``)."""
    name, sep, url = spec.partition("=")
    if sep and "://" not in name:
        return name, url
    scheme = spec.split("://", 1)[0]
    return ("kiwipy" if scheme in ("amqp", "amqps") else f"kiwipy-{scheme}"), spec


def systems(
    amqp_url: str, ours: list[tuple[str, str]], peers: tuple[str, ...]
) -> tuple[list[System], list[str]]:
    """Raw, ours (one per URL) and the peers whose environment exists; and what is missing."""
    out = [System("raw", "raw", sys.executable, HERE / "base_raw.py", amqp_url)]
    out += [
        System(name, "ours", sys.executable, HERE / "base_kiwipy.py", url) for name, url in ours
    ]
    missing = []
    for peer in peers:
        python = existing_python(peer)
        if python is None:
            missing.append(peer)
        else:
            out.append(System(peer, "peer", str(python), HERE / f"peer_{peer}.py", amqp_url))
    return out, missing
