"""Worker subprocesses that tests can crash, freeze and thaw.

A :class:`WorkerProcess` runs a command (or a snippet of Python) in its own process
group with stdout and stderr merged and read line by line in a background thread, so
a test can wait for a line such as ``READY`` with a deadline. Signals go to the whole
group, so helpers the worker spawned share its fate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["WorkerProcess"]

_EOF = None
_TERMINATE_GRACE = 5.0


#: The repository root, which holds this harness (it is not part of the installed package).
_HARNESS_ROOT = str(Path(__file__).resolve().parents[2])


def _with_harness_root(pythonpath: str | None) -> str:
    """``PYTHONPATH`` with the harness's root first, so ``-m kiwipy_reliability...`` imports."""
    return os.pathsep.join([_HARNESS_ROOT, *filter(None, (pythonpath or "").split(os.pathsep))])


class WorkerProcess:
    """A child process for fault tests; always killed by :meth:`close`/``with``.

    ``command`` is an argv list, or a string of Python code run with the current
    interpreter (unbuffered). ``env`` entries are added to a copy of ``os.environ``.
    """

    def __init__(
        self,
        command: Sequence[str] | str,
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(command, str):
            self.argv = [sys.executable, "-u", "-c", command]
        else:
            self.argv = list(command)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env["PYTHONPATH"] = _with_harness_root(self.env.get("PYTHONPATH"))
        self.cwd = cwd
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._eof = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> WorkerProcess:
        if self._process is not None:
            raise RuntimeError("worker already started")
        self._process = subprocess.Popen(  # noqa: S603 - argv chosen by the test
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        stdout = self._process.stdout
        assert stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(stdout,), name=f"worker-{self.pid}-stdout", daemon=True
        )
        self._reader.start()
        return self

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("worker not started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker (and its process group): a crash."""
        self._signal(signal.SIGKILL)
        self.wait(_TERMINATE_GRACE)

    def stop_signal(self) -> None:
        """SIGSTOP the worker: it hangs, its sockets stay open."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the worker after :meth:`stop_signal`."""
        self._signal(signal.SIGCONT)

    def terminate(self, timeout: float = _TERMINATE_GRACE) -> int:
        """SIGTERM the worker; SIGKILL it if it has not exited after ``timeout`` s."""
        self._signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self._signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.wait(_TERMINATE_GRACE)

    def wait(self, timeout: float | None = None) -> int:
        if self._process is None:
            raise RuntimeError("worker not started")
        return self._process.wait(timeout)

    def close(self) -> None:
        """Kill the worker if it still runs and release its pipe and reader thread."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self.kill()
        else:
            self._signal(signal.SIGKILL)  # leftovers in the group
        if self._reader is not None:
            self._reader.join(_TERMINATE_GRACE)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> WorkerProcess:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- output ------------------------------------------------------------------------

    def read_line(self, timeout: float) -> str | None:
        """The next output line (without newline), or ``None`` at EOF.

        Raises :class:`TimeoutError` if no line arrives within ``timeout`` seconds.
        """
        if self._eof:
            return None
        try:
            line = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(f"no output from worker within {timeout} s") from None
        if line is _EOF:
            self._eof = True
        return line

    def wait_for_line(self, prefix: str, timeout: float = 10.0) -> str:
        """Read lines until one starts with ``prefix``; return it.

        Raises :class:`TimeoutError` after ``timeout`` seconds, or
        :class:`EOFError` if the worker's output ends first.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.read_line(remaining)
            except TimeoutError:
                raise TimeoutError(self._describe(f"no line starting {prefix!r}")) from None
            if line is None:
                raise EOFError(self._describe(f"output ended before a line starting {prefix!r}"))
            if line.startswith(prefix):
                return line

    async def await_line(self, prefix: str, timeout: float = 10.0) -> str:
        """:meth:`wait_for_line` for asyncio tests (waits in a worker thread)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.wait_for_line, prefix, timeout
        )

    def output(self) -> str:
        """Every line read so far, joined."""
        return "\n".join(self.lines)

    # -- internals ---------------------------------------------------------------------

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None:
            raise RuntimeError("worker not started")
        # Gone already (a zombie's group can refuse signals on some systems).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def _read(self, stream: IO[str]) -> None:
        try:
            for raw in stream:
                line = raw.rstrip("\n")
                self.lines.append(line)
                self._queue.put(line)
        except (OSError, ValueError):
            pass  # pipe closed under us during cleanup
        finally:
            self._queue.put(_EOF)

    def _describe(self, problem: str) -> str:
        tail = "\n".join(self.lines[-20:])
        return f"worker {self.argv!r}: {problem}; exit status {self.returncode}; output:\n{tail}"
