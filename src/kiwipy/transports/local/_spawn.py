"""Find the broker of a state directory, starting it when none runs (the tmux pattern).

Connect to its socket; if nobody listens, take ``spawn.lock`` and try again (another client may
have just started one); if still nobody listens and ``broker.lock`` is free, start the broker
detached (its own session, so it outlives this process) and wait for its ``ready`` line. A broker
that holds ``broker.lock`` but does not answer is frozen or stuck: it is reported, never doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from kiwipy.broker._wire import StatePaths
from kiwipy.exceptions import ConnectionLost

__all__ = ("BrokerUnavailable", "open_broker")

P = TypeVar("P", bound=asyncio.BaseProtocol)
#: ``python -m kiwipy.broker``, faster to start: the broker package (stdlib only) is loaded from
#: its directory, without ``site`` nor ``kiwipy/__init__`` and what that imports (a cold
#: client waits for this start). Arguments: the package name, its directory, the broker's own.
_BOOT = (
    "import importlib.util as u, sys; name, where = sys.argv.pop(1), sys.argv.pop(1); "
    "s = u.spec_from_file_location(name, where + '/__init__.py', "
    "submodule_search_locations=[where]); "
    "m = u.module_from_spec(s); sys.modules[name] = m; s.loader.exec_module(m); "
    "sys.exit(m.main())"
)


class BrokerUnavailable(ConnectionLost):
    """No local broker could be reached or started."""


async def open_broker(
    paths: StatePaths,
    protocol: Callable[[], P],
    *,
    timeout: float,
    idle_timeout: float,
    durability: str,
    poll_us: int,
) -> tuple[asyncio.Transport, P]:
    """A connection to the broker of ``paths``, started if needed; within ``timeout`` seconds."""
    connection = await _try_connect(paths, protocol)
    if connection is not None:
        return connection
    paths.make()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # The blocking parts (a file lock, a child's first line) run in a thread: the loop goes on.
    try:
        await asyncio.to_thread(
            _start_unless_running,
            paths,
            deadline - loop.time(),
            idle_timeout,
            durability,
            poll_us,
        )
    except TimeoutError:
        raise _unavailable(paths) from None
    while True:
        connection = await _try_connect(paths, protocol)
        if connection is not None:
            return connection
        if loop.time() > deadline:
            raise _unavailable(paths)
        await asyncio.sleep(0.01)


async def _try_connect(
    paths: StatePaths, protocol: Callable[[], P]
) -> tuple[asyncio.Transport, P] | None:
    loop = asyncio.get_running_loop()
    try:
        transport, connected = await loop.create_unix_connection(protocol, str(paths.socket))
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    assert isinstance(transport, asyncio.Transport)
    return transport, connected


def _start_unless_running(
    paths: StatePaths, timeout: float, idle_timeout: float, durability: str, poll_us: int
) -> None:
    with _file_lock(paths.spawn_lock, timeout):
        if _socket_accepts(paths) or _broker_lock_held(paths):
            return  # one runs (or is starting, or is frozen: the caller's wait tells)
        command = [
            *_broker_command(),
            "--dir",
            str(paths.directory),
            "--idle-timeout",
            str(idle_timeout),
            "--durability",
            durability,
            "--poll-us",
            str(poll_us),
            "--announce",
        ]
        with open(paths.log, "ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own module, by our interpreter
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        _wait_ready(process, timeout)
        # It lives on in its own session; a thread of ours reaps it when it exits (no zombie).
        threading.Thread(target=process.wait, name="kiwipy-broker-reaper", daemon=True).start()


def _broker_command() -> list[str]:
    """``python -m kiwipy.broker``, in its faster form when the package is plain files."""
    package = Path(__file__).resolve().parents[2] / "broker"
    if (package / "__init__.py").is_file():
        return [sys.executable, "-S", "-c", _BOOT, "kiwipy.broker", str(package)]
    return [sys.executable, "-m", "kiwipy.broker"]


def _wait_ready(process: subprocess.Popen[bytes], timeout: float) -> None:
    stdout = process.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(stdout.fileno(), False)
    try:
        while time.monotonic() < deadline:
            line = stdout.readline()
            if line.startswith(b"ready"):
                return
            if process.poll() is not None:
                return  # it exited (another broker won, or it failed): its log says why
            time.sleep(0.005)
    finally:
        stdout.close()


def _socket_accepts(paths: StatePaths) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(paths.socket))
        except OSError:
            return False
        return True


def _broker_lock_held(paths: StatePaths) -> bool:
    try:
        descriptor = os.open(paths.broker_lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing drops the lock if we took it
    return False


@contextlib.contextmanager
def _file_lock(path: os.PathLike[str] | str, timeout: float) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout:.1f} s") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(descriptor)


def _unavailable(paths: StatePaths) -> BrokerUnavailable:
    pid = paths.broker_pid()
    if _broker_lock_held(paths):
        return BrokerUnavailable(
            f"The local broker of {paths.directory} (pid {pid}) holds its lock but does not "
            "answer: it is frozen or overloaded (SIGSTOP?). kiwipy will not start a second one."
        )
    return BrokerUnavailable(f"Cannot start the local broker of {paths.directory}: see {paths.log}")
