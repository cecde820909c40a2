"""A private, disposable RabbitMQ node for fault-injection tests.

The node runs the installed ``rabbitmq-server`` in the foreground with its own node
name, ports, Erlang cookie (via ``HOME``) and data directory, so it never touches a
shared broker. It is started under a tiny shell launcher that leads its own process
group and SIGKILLs the whole group (Erlang VM included) as soon as the Python process
that started it goes away, so a crashed test run leaves no node behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from kiwipy_reliability.faults._erlang import (
    parse_ok_integer,
    reset_env_expression,
    set_env_expression,
)
from kiwipy_reliability.faults._launcher import ServerProcess
from kiwipy_reliability.faults._probe import amqp_handshake, port_is_open, wait_port_closed
from kiwipy_reliability.faults._system import find_rabbitmq_sbin
from kiwipy_reliability.faults.config import (
    LOOPBACK,
    NodeConfig,
    NodeLayout,
    NodePorts,
    TlsListener,
    node_environment,
    tick_interval_for,
)

__all__ = ["RabbitNode"]

_POLL_INTERVAL = 0.1
_PORT_CLOSE_WAIT = 10.0
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3
_PORT_CLASH_SIGNS = ("eaddrinuse", "dist_port_already_used")


class _PortClash(RuntimeError):
    """A port of the node was in use by another process."""


class RabbitNode:
    """A RabbitMQ node of our own on ``127.0.0.1:<free port>``.

    ``consumer_timeout`` (ms) and ``extra_config`` (``rabbitmq.conf`` lines) configure
    it; ``config`` may be edited between :meth:`stop`/:meth:`kill` and :meth:`start`.
    ``tls`` adds a TLS listener on a port of its own (:attr:`tls_port`, :attr:`tls_url`).
    """

    def __init__(
        self,
        *,
        consumer_timeout: int | None = None,
        extra_config: Sequence[str] = (),
        advanced_config: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        hostname: str = "localhost",
        sbin_dir: str | os.PathLike[str] | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self._sbin = find_rabbitmq_sbin(sbin_dir)
        self.config = NodeConfig(
            consumer_timeout=consumer_timeout,
            extra_lines=list(extra_config),
            advanced_config=advanced_config,
            tls=tls,
        )
        self.name = f"kiwipy-test-{uuid.uuid4().hex[:10]}@{hostname}"
        self.ports = NodePorts.allocate(tls=tls is not None)
        self.layout = NodeLayout(Path(tempfile.mkdtemp(prefix="kiwipy-rabbit-", dir=base_dir)))
        self.layout.prepare()
        self.startup_times: list[float] = []
        self._server: ServerProcess | None = None
        self._changed_env: dict[str, int | str | None] = {}
        self._frozen = False

    # -- addresses ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        """The AMQP port; it stays the same across restarts."""
        return self.ports.amqp

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.port}/"

    @property
    def tls_port(self) -> int:
        """The TLS (``amqps``) port; only for a node made with ``tls``."""
        if self.ports.amqps is None:
            raise RuntimeError(f"RabbitMQ node {self.name} has no TLS listener")
        return self.ports.amqps

    @property
    def tls_url(self) -> str:
        """``amqps://guest:guest@localhost:<tls port>/`` (``localhost``: the usual host name
        of a test certificate)."""
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    @property
    def vm_pid(self) -> int | None:
        """PID of the Erlang VM (``beam.smp``) while the node runs."""
        return None if self._server is None else self._server.vm_pid

    @property
    def last_startup_time(self) -> float | None:
        """Seconds the latest :meth:`start` took until an AMQP login succeeded."""
        return self.startup_times[-1] if self.startup_times else None

    # -- lifecycle -----------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._server is not None and self._server.is_running()

    def start(self, timeout: float = 60.0) -> None:
        """Start the node and wait until it accepts an AMQP login (at most ``timeout`` s).

        On the first start, ports someone else grabbed meanwhile are replaced by new
        ones; later starts keep the ports, so URLs stay valid across restarts.
        """
        if self.is_running():
            raise RuntimeError(f"RabbitMQ node {self.name} is already running")
        self._reap()
        attempts = 1 if self.startup_times else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except _PortClash:
                if attempt == attempts:
                    raise
                self.ports = NodePorts.allocate(tls=self.config.tls is not None)

    def _start_once(self, timeout: float) -> None:
        for port in self.ports.all:
            if port_is_open(LOOPBACK, port, timeout=0.5):
                raise _PortClash(f"port {port} of node {self.name} is taken by someone else")
        self.layout.write_config(self.config, self.ports)
        began = time.monotonic()
        self._spawn()
        self._wait_ready(began + timeout)
        self.startup_times.append(time.monotonic() - began)

    def kill(self, *, sync: bool = False) -> None:
        """SIGKILL the Erlang VM (a crash); the AMQP port is closed when this returns.

        Like a real crash, this can lose definitions (queues, exchanges, bindings)
        declared in the last seconds: Mnesia writes its log lazily. ``sync=True``
        calls :meth:`sync_to_disk` first. Confirmed persistent messages are safe.
        """
        server = self._server
        if server is None:
            return
        if sync and server.is_running():
            self.sync_to_disk()
        server.kill()
        if not wait_port_closed(LOOPBACK, self.port, _PORT_CLOSE_WAIT):
            raise RuntimeError(f"port {self.port} still open after killing {self.name}")
        self._reap()

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the node down gracefully; SIGKILL it if that takes over ``timeout`` s."""
        server = self._server
        if server is None:
            return
        if server.is_running():
            server.signal_vm(signal.SIGCONT)  # a frozen VM cannot shut down
            if server.signal_vm(signal.SIGTERM):  # the VM shuts down cleanly on SIGTERM
                server.wait(timeout)
        self.kill()

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the node if it runs, then start it on the same data, name and ports."""
        if self.is_running():
            self.stop()
        self.start(timeout)

    # The lifecycle calls block for seconds; from asyncio tests, run them in a thread
    # so clients on the test's event loop keep running (and retrying) meanwhile.

    async def start_async(self, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.start, timeout)

    async def stop_async(self, timeout: float = 15.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def restart_async(self, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.restart, timeout)

    @property
    def is_frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """SIGSTOP the VM: the broker hangs with its sockets open."""
        if self._server is None or not self._server.signal_vm(signal.SIGSTOP):
            raise RuntimeError(f"RabbitMQ node {self.name} is not running")
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT the VM after :meth:`freeze`."""
        if self._server is not None:
            self._server.signal_vm(signal.SIGCONT)
        self._frozen = False

    def cleanup(self) -> None:
        """Kill the node if needed and delete its data directory."""
        self.kill()
        shutil.rmtree(self.layout.base, ignore_errors=True)

    def close(self) -> None:
        self.cleanup()

    def __enter__(self) -> RabbitNode:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- management ------------------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 30.0, check: bool = True) -> str:
        """Run ``rabbitmqctl -n <node> *args`` against this node; return its stdout."""
        result = subprocess.run(  # noqa: S603 - fixed executable, arguments from the caller
            [str(self._sbin / "rabbitmqctl"), "-n", self.name, *args],
            env=self._environment(),
            cwd=self.layout.base,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def eval(self, expression: str, timeout: float = 30.0) -> str:
        """Evaluate an Erlang expression on the node; return the printed result."""
        return self.ctl("eval", expression, timeout=timeout).strip()

    def sync_to_disk(self) -> None:
        """Flush the node's metadata log (``mnesia:sync_log()``) to disk."""
        answer = self.eval("mnesia:sync_log().")
        if answer != "ok":
            raise RuntimeError(f"mnesia:sync_log() on {self.name} answered {answer}")

    def set_env(self, **values: int | str | None) -> None:
        """Set ``rabbit`` application settings at runtime in one ``rabbitmqctl`` call.

        Values are integers, raw Erlang terms (``str``) or ``None`` to unset. The
        previous values are kept on the node for :meth:`reset_env`. A restart
        forgets all such changes.
        """
        self.eval(set_env_expression(values))
        self._changed_env.update(values)

    def reset_env(self) -> None:
        """Undo every :meth:`set_env` since the node started (no-op if none)."""
        if not self._changed_env or not self.is_running():
            self._changed_env.clear()
            return
        self.eval(reset_env_expression(self._changed_env))
        self._changed_env.clear()

    def set_consumer_timeout(self, milliseconds: int | None) -> None:
        """Change ``consumer_timeout`` at runtime (``None``: no timeout).

        Channels read it when they open, so it applies to channels opened afterwards.
        The channel tick, when channels check the timeout, is shortened to match.
        """
        if milliseconds is None:
            self.set_env(consumer_timeout=None)
            return
        self.set_env(
            consumer_timeout=int(milliseconds),
            channel_tick_interval=tick_interval_for(int(milliseconds)),
        )

    def get_consumer_timeout(self) -> int | None:
        """The ``consumer_timeout`` in force for new channels, in ms (``None``: unset)."""
        return parse_ok_integer(self.eval("application:get_env(rabbit, consumer_timeout)."))

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The end of the node's output and log file, for error messages."""
        parts: list[str] = []
        for path in (self.layout.server_output, self.layout.logs / f"{self.name}.log"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    # -- internals -------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        return node_environment(self.layout, self.name, self.ports, self.config)

    def _spawn(self) -> None:
        self._server = ServerProcess(
            self._sbin / "rabbitmq-server",
            self._environment(),
            self.layout.base,
            self.layout.server_output,
        )

    def _wait_ready(self, deadline: float) -> None:
        server = self._server
        assert server is not None
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not server.is_running():
                self._fail_start(f"exited with status {server.returncode}")
            try:
                amqp_handshake(LOOPBACK, self.port, timeout=2.0)
                if self.ports.amqps is not None and not port_is_open(
                    LOOPBACK, self.ports.amqps, timeout=2.0
                ):
                    raise OSError(f"TLS port {self.ports.amqps} not open yet")
            except OSError as exc:
                last_error = exc
                time.sleep(_POLL_INTERVAL)
            else:
                return
        self._fail_start(f"did not accept an AMQP login in time (last error: {last_error!r})")

    def _fail_start(self, reason: str) -> None:
        if self._server is not None:
            self._server.kill()  # no port check: a clash means someone else holds it
        self._reap()
        tail = self.log_tail()
        clash = any(sign in tail for sign in _PORT_CLASH_SIGNS)
        error = _PortClash if clash else RuntimeError
        raise error(f"RabbitMQ node {self.name} {reason}\n{tail}")

    def _reap(self) -> None:
        """Forget a finished server process and close our ends of its pipes."""
        if self._server is not None:
            self._server.close()
        self._server = None
        self._changed_env.clear()
        self._frozen = False
