"""Locating the RabbitMQ installation and looking at processes (Linux ``/proc``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

__all__ = [
    "SBIN_ENV_VAR",
    "find_rabbitmq_sbin",
    "group_members",
    "pid_alive",
    "rabbitmq_available",
    "wait_pid_gone",
]

SBIN_ENV_VAR = "KIWIPY_RABBITMQ_SBIN"
# Debian/Ubuntu install the real scripts here; /usr/sbin/rabbitmq-server is a wrapper
# that switches to the ``rabbitmq`` user (and its HOME/cookie) when run as root.
_KNOWN_SBIN_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/opt/rabbitmq/sbin")
_EXTRA_PATH = "/usr/sbin:/usr/local/sbin:/sbin"


def _is_real_sbin(directory: Path) -> bool:
    """The directory holds the real server scripts (they source ``rabbitmq-env``)."""
    needed = ("rabbitmq-server", "rabbitmqctl", "rabbitmq-env")
    return all(os.access(directory / name, os.X_OK) for name in needed)


def _candidates(explicit: str | os.PathLike[str] | None) -> list[Path]:
    found: list[Path] = []
    for configured in (explicit, os.environ.get(SBIN_ENV_VAR)):
        if configured:
            found.append(Path(configured))
    found.extend(Path(directory) for directory in _KNOWN_SBIN_DIRS)
    search_path = os.pathsep.join(filter(None, (os.environ.get("PATH"), _EXTRA_PATH)))
    server = shutil.which("rabbitmq-server", path=search_path)
    if server is not None:
        found.append(Path(os.path.realpath(server)).parent)
    return found


def find_rabbitmq_sbin(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The directory of the real ``rabbitmq-server``/``rabbitmqctl`` scripts.

    Raises :class:`RuntimeError` with a hint when RabbitMQ or Erlang is missing.
    """
    if shutil.which("erl") is None:
        raise RuntimeError("Erlang (erl) is not on PATH: install rabbitmq-server to run a node")
    for candidate in _candidates(explicit):
        if _is_real_sbin(candidate):
            return candidate
    raise RuntimeError(
        "rabbitmq-server is not installed (looked in "
        f"{', '.join(str(path) for path in _candidates(explicit))}); install the "
        f"'rabbitmq-server' package or point {SBIN_ENV_VAR} at its sbin directory"
    )


def rabbitmq_available(explicit: str | os.PathLike[str] | None = None) -> bool:
    """Whether :func:`find_rabbitmq_sbin` finds a RabbitMQ installation."""
    try:
        find_rabbitmq_sbin(explicit)
    except RuntimeError:
        return False
    return True


def _read_stat(pid: int) -> tuple[str, str, int] | None:
    """``(comm, state, pgrp)`` of a process, or ``None`` when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, paren, tail = raw.rpartition(")")
    fields = tail.split()
    if not paren or "(" not in head or len(fields) < 3 or not fields[2].isdigit():
        return None  # vanished while we read it
    return head.partition("(")[2], fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has already closed its sockets: not alive)."""
    if Path("/proc").is_dir():
        stat = _read_stat(pid)
        return stat is not None and stat[1] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def group_members(pgid: int, comm: str | None = None) -> list[int]:
    """Live processes of process group ``pgid`` (optionally only those named ``comm``)."""
    members: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return members
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is None or stat[2] != pgid or stat[1] in ("Z", "X"):
            continue
        if comm is None or stat[0] == comm:
            members.append(int(entry.name))
    return members
