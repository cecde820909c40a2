"""The local broker (``local://``) under the scenarios and the tests: no RabbitMQ needed.

:class:`LocalBroker` is a state directory of its own (so a broker of its own, started by the
first client that needs it), with what the scenarios do to it: kill its broker, read its queue
counts, find every broker process serving it, stop it at the end. :meth:`LocalBroker.as_node`
lends it the few :class:`~kiwipy_reliability.faults.RabbitNode` methods the RabbitMQ scenarios
use (``url``, ``ctl list_queues``, ``ctl delete_queue``), so that a scenario written for
RabbitMQ runs on it unchanged. Also the child Python processes the local scenarios and
``tests/test_local_broker.py`` share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kiwipy_reliability.faults._system import pid_alive, wait_pid_gone

__all__ = [
    "CONNECT_AND_PRINT_PID",
    "LocalBroker",
    "LocalNode",
    "brokers_serving",
    "run_python",
    "stop",
    "stop_local_broker",
]

#: A client that connects (starting the broker if none runs) and prints the broker's pid.
CONNECT_AND_PRINT_PID = """
    import asyncio, sys, kiwipy.aio
    async def main():
        comm = await kiwipy.aio.connect(sys.argv[1])
        print(comm.server_properties["pid"], flush=True)
        await comm.close()
    asyncio.run(main())
"""

_ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """Run ``code`` (dedented) in a child Python, its stdout and stderr piped as text."""
    path = f"{_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "PYTHONPATH": path, **popen.pop("env", {})}
    return subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` (if still running) and close its pipes."""
    process.kill()
    process.communicate(timeout=10)


def brokers_serving(directory: Path) -> list[int]:
    """PIDs of live broker processes started for ``directory`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"kiwipy.broker" in command and str(directory).encode() in command and status != "Z":
            found.append(int(entry.name))
    return found


def stop_local_broker(directory: Path) -> None:
    """Stop the broker of ``directory``, if one runs (SIGTERM, then SIGKILL)."""
    pid_file = directory / "broker.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_pid_gone(pid, 3.0):
            return


class LocalBroker:
    """A state directory of its own (made in a temporary directory unless given)."""

    def __init__(self, directory: Path | None = None, *, idle_timeout: float = 60.0) -> None:
        self._made = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="kiwipy-local-")) / "state"
            if directory is None
            else directory
        )
        self.idle_timeout = idle_timeout

    def url_with(self, **query: Any) -> str:
        options = {"idle_timeout": self.idle_timeout, **query}
        return f"local://{self.directory}?" + "&".join(f"{k}={v}" for k, v in options.items())

    @property
    def url(self) -> str:
        return self.url_with()

    def pid(self) -> int | None:
        """The pid of the broker serving the directory now, if one runs."""
        try:
            pid = int((self.directory / "broker.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def kill(self) -> int:
        """SIGKILL the broker (it must run); return once it is gone. Its pid."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"no broker runs for {self.directory}")
        os.kill(pid, signal.SIGKILL)
        wait_pid_gone(pid, 10.0)
        return pid

    def brokers_serving(self) -> list[int]:
        return brokers_serving(self.directory)

    def queue_stats(self) -> dict[str, dict[str, int]]:
        """``{queue: {"ready", "unacked", "consumers"}}`` as the broker counts them (a client
        that asks starts the broker if none runs)."""

        async def ask() -> dict[str, dict[str, int]]:
            import kiwipy.aio

            comm = await kiwipy.aio.connect(self.url)
            try:
                stats: dict[str, dict[str, int]] = await comm.transport.queue_stats()  # type: ignore[attr-defined]
                return stats
            finally:
                await comm.close()

        return asyncio.run(ask())

    def queue_counts(self, queue: str) -> tuple[int, int, int] | None:
        """``(consumers, ready, unacked)`` of ``queue``, as RabbitMQ's scenarios read them."""
        row = self.queue_stats().get(queue)
        return None if row is None else (row["consumers"], row["ready"], row["unacked"])

    def as_node(self) -> LocalNode:
        return LocalNode(self)

    def close(self) -> None:
        stop_local_broker(self.directory)
        if self._made:
            shutil.rmtree(self.directory.parent, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class LocalNode:
    """What the RabbitMQ scenarios ask of their node, answered by a local broker."""

    is_frozen = False
    last_startup_time: float | None = None

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker
        self.url = broker.url

    def is_running(self) -> bool:
        return True  # a client starts the broker whenever it needs one

    def ctl(self, command: str, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """``list_queues`` (name, then the columns asked) and ``delete_queue`` (a no-op: the
        state directory goes at the end).

        ``rabbitmqctl`` takes about a second to start, by which time the ack of a task just
        completed has reached RabbitMQ; the local broker answers at once. So that the counts
        compare, ``list_queues`` reads them once no task is unacknowledged, or after 1 s.
        """
        if command == "delete_queue":
            return ""
        if command != "list_queues":
            raise NotImplementedError(f"rabbitmqctl {command} has no local:// counterpart")
        deadline = time.monotonic() + 1.0
        stats = self.broker.queue_stats()
        while any(row["unacked"] for row in stats.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = self.broker.queue_stats()
        asked = [arg for arg in args if not arg.startswith("-") and arg != "name"]
        lines = []
        for name, row in stats.items():
            columns = {
                "consumers": row["consumers"],
                "messages_ready": row["ready"],
                "messages_unacknowledged": row["unacked"],
                "messages": row["ready"] + row["unacked"],
            }
            lines.append(" ".join([name, *(str(columns[column]) for column in asked)]))
        return "\n".join(lines)
