"""The OS process of a private node: spawn under a watchdog, signal, kill for sure.

``rabbitmq-server`` is a shell script that runs the Erlang VM (``beam.smp``) as its
child. We start it under a small shell launcher that leads a new process group, so
one ``killpg`` reaches the script, the VM and anything else in the group. The
launcher also holds the read end of a pipe whose write end only we have: when our
process dies (even by SIGKILL) the pipe hits EOF and the launcher SIGKILLs the group,
so no orphaned node outlives the test run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from kiwipy_reliability.faults._system import group_members, pid_alive, wait_pid_gone

__all__ = ["ServerProcess"]

# Runs the server with stdin on /dev/null, keeps our stdin pipe on fd 3 and, in the
# background, kills the whole process group once that pipe hits EOF (our process died
# or closed it). Exits with the server's status when the server ends by itself.
_LAUNCHER = """
exec 3<&0
"$0" "$@" </dev/null 3<&- &
server=$!
{ read -r _ignored <&3; kill -9 0; } &
watchdog=$!
wait "$server"
status=$?
kill "$watchdog" 2>/dev/null
wait "$watchdog"
exit "$status"
"""
_VM_NAME = "beam.smp"
_KILL_WAIT = 10.0
_CHAIN_EXIT_WAIT = 5.0


class ServerProcess:
    """One run of ``rabbitmq-server`` (a node restart makes a new one)."""

    def __init__(self, script: Path, env: Mapping[str, str], cwd: Path, output_file: Path) -> None:
        self._output: IO[bytes] = output_file.open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - fixed launcher script
                ["/bin/sh", "-c", _LAUNCHER, str(script)],
                stdin=subprocess.PIPE,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            self._output.close()
            raise
        self._vm_pid: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def is_running(self) -> bool:
        return self._process.poll() is None

    @property
    def vm_pid(self) -> int | None:
        """PID of the Erlang VM, once it runs (found among our process group)."""
        if self._vm_pid is None and self.is_running():
            members = group_members(self._process.pid, _VM_NAME)
            self._vm_pid = members[0] if members else None
        return self._vm_pid

    def signal_vm(self, signum: signal.Signals) -> bool:
        """Send ``signum`` to the VM; return whether there was a VM to signal."""
        pid = self.vm_pid
        if pid is None or not pid_alive(pid):
            return False
        os.kill(pid, signum)
        return True

    def wait(self, timeout: float) -> bool:
        """Wait for the launcher to exit; return whether it did within ``timeout``."""
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the VM, then the rest of the group; wait until every member is gone.

        Killing the VM first lets the scripts above it reap it and exit by themselves,
        so no zombie is left for init to collect.
        """
        if self._process.poll() is None:
            vm_pid = self.vm_pid
            if vm_pid is not None and pid_alive(vm_pid):
                os.kill(vm_pid, signal.SIGKILL)
                self._wait_exit_unreaped(_CHAIN_EXIT_WAIT)
            # While the launcher is unreaped its PID (our group ID) cannot be reused.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        if not self.wait(_KILL_WAIT):
            raise RuntimeError(f"RabbitMQ launcher {self._process.pid} survived SIGKILL")
        for pid in [self._vm_pid, *group_members(self._process.pid)]:
            if pid is not None and not wait_pid_gone(pid, _KILL_WAIT):
                raise RuntimeError(f"RabbitMQ process {pid} survived SIGKILL")
        self.close()

    def _wait_exit_unreaped(self, timeout: float) -> None:
        """Wait for the launcher to exit, leaving it a zombie (Linux ``WNOWAIT``)."""
        waitid = getattr(os, "waitid", None)
        if waitid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            if waitid(os.P_PID, self._process.pid, flags) is not None:
                return
            time.sleep(0.005)

    def close(self) -> None:
        """Release our pipe ends (closing stdin also triggers the watchdog)."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._output.close()
