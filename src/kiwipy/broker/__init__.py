"""The local broker: a durable broker for one machine that needs nothing installed.

Run it in the foreground with ``python -m kiwipy.broker --dir D`` (or ``kiwipy broker``), for
a supervisor; clients of ``local://`` URLs otherwise start it themselves, detached, when none
runs. One broker serves one state directory: it holds a kernel lock on ``D/broker.lock`` for its
whole life, so a second one exits at once, and a dead one's lock is gone with it.

Standard library only (asyncio, sqlite3, fcntl).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from kiwipy.broker._poll import DEFAULT_POLL_US, PollingSelector, poll_us_from
from kiwipy.broker._server import Broker, ClientConnection
from kiwipy.broker._store import StateError, Store
from kiwipy.broker._wire import StatePaths

__all__ = ("BrokerRunning", "StateError", "main", "serve")

_LOGGER = logging.getLogger("kiwipy.broker")
#: File systems where flock or SQLite's WAL (shared memory) cannot be trusted.
_UNSAFE_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "fuse.sshfs", "afs", "lustre", "gpfs"}
)
DEFAULT_IDLE_TIMEOUT = 600.0


class BrokerRunning(RuntimeError):
    """Another broker holds the state directory."""


def file_system_type(directory: Path) -> str | None:
    """The type of the file system ``directory`` is on, from ``/proc/mounts`` (Linux)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    target = str(directory.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def check_file_system(directory: Path) -> None:
    kind = file_system_type(directory)
    if kind in _UNSAFE_FILE_SYSTEMS:
        raise StateError(
            f"{directory} is on a {kind} file system, where file locks and SQLite's WAL "
            "mode are not reliable: put the broker's state on a local disk "
            "(local:///path/on/local/disk or $KIWIPY_HOME)"
        )


@contextlib.contextmanager
def hold_broker_lock(paths: StatePaths) -> Iterator[None]:
    """Hold ``broker.lock`` for the block; :class:`BrokerRunning` if another process has it."""
    descriptor = os.open(paths.broker_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = paths.broker_pid()
            raise BrokerRunning(f"A broker (pid {pid}) already serves {paths.directory}") from None
        paths.pid_file.write_text(f"{os.getpid()}\n")
        yield
    finally:
        os.close(descriptor)


def serve(
    directory: str | Path,
    *,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    durable: bool = True,
    poll_us: int = DEFAULT_POLL_US,
    announce: bool = False,
) -> None:
    """Run the broker of ``directory`` until it has been idle for ``idle_timeout`` seconds.

    ``durable``: a confirm means the task is fsynced (SQLite ``synchronous=FULL``); otherwise
    it survives the crash of any process but not of the machine. ``poll_us``: how long the loop
    polls before it sleeps, while frames come that close (:mod:`kiwipy.broker._poll`; 0: never).
    ``announce`` prints ``ready`` on stdout once clients can connect (how a spawning client
    knows).
    """
    paths = StatePaths(Path(directory))
    paths.make()
    check_file_system(paths.directory)
    with hold_broker_lock(paths):
        store = Store(paths.database, durable=durable)
        try:
            _run_polling(_run(paths, store, idle_timeout, poll_us, announce), poll_us)
        finally:
            store.close()


def _run_polling(main: Coroutine[Any, Any, None], poll_us: int) -> None:
    """``asyncio.run(main)`` on a loop whose selector polls (:class:`PollingSelector`)."""

    def new_loop() -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(PollingSelector(poll_us / 1e6))

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(main)
        return
    loop = new_loop()  # Python 3.10: asyncio.run takes no loop factory
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _run(
    paths: StatePaths, store: Store, idle_timeout: float, poll_us: int, announce: bool
) -> None:
    broker = Broker(store, str(paths.directory), idle_timeout, poll_us)
    socket = paths.socket
    with contextlib.suppress(FileNotFoundError):
        socket.unlink()  # a dead broker's: we hold the lock, so nobody else listens there
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: ClientConnection(broker), path=str(socket))
    os.chmod(socket, 0o600)
    for stop in (signal.SIGTERM, signal.SIGINT):  # a supervisor's stop: a clean exit
        loop.add_signal_handler(stop, broker.stopped.set)
    _LOGGER.info(
        "Broker pid %d, epoch %d, serving %s on %s",
        os.getpid(),
        broker.epoch,
        paths.directory,
        socket,
    )
    if announce:
        print("ready", flush=True)
    try:
        await broker.stopped.wait()
    finally:
        server.close()
        broker.flush()
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()


def main(argv: list[str] | None = None) -> int:
    """``python -m kiwipy.broker``: run a broker in the foreground."""
    from kiwipy.broker._wire import state_directory

    parser = argparse.ArgumentParser(prog="python -m kiwipy.broker", description=__doc__)
    parser.add_argument("--dir", default=None, help="state directory (default: local://'s)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    parser.add_argument("--durability", choices=("full", "process"), default="full")
    parser.add_argument(
        "--poll-us",
        type=_poll_us,
        default=DEFAULT_POLL_US,
        help="microseconds to poll before sleeping while frames come that close (0: never)",
    )
    parser.add_argument("--announce", action="store_true", help="print 'ready' when serving")
    options = parser.parse_args(argv)
    directory = Path(options.dir) if options.dir else state_directory()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        serve(
            directory,
            idle_timeout=options.idle_timeout,
            durable=options.durability == "full",
            poll_us=options.poll_us,
            announce=options.announce,
        )
    except (BrokerRunning, StateError) as exc:
        print(f"kiwipy broker: {exc}", file=sys.stderr)
        return 2
    return 0


def _poll_us(text: str) -> int:
    try:
        return poll_us_from(text)
    except ValueError as exc:  # argparse shows this message, not its generic one
        raise argparse.ArgumentTypeError(str(exc)) from None
