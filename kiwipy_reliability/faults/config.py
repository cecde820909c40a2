"""Files and environment of a private RabbitMQ node.

:class:`NodeConfig` renders ``rabbitmq.conf`` from small line-producing methods, so new
listeners (e.g. ``listeners.ssl``) or settings can be added without touching the rest.
:class:`NodeLayout` names every file of the node below one base directory.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LOOPBACK",
    "NodeConfig",
    "NodeLayout",
    "NodePorts",
    "TlsListener",
    "free_port",
    "node_environment",
    "tick_interval_for",
]

LOOPBACK = "127.0.0.1"


_MAX_TICK_INTERVAL = 60_000  # RabbitMQ's default channel tick
_MIN_TICK_INTERVAL = 100


def tick_interval_for(consumer_timeout: int) -> int:
    """A ``channel_tick_interval`` (ms) that enforces ``consumer_timeout`` promptly.

    Channels check the timeout on every tick, once a minute by default, so a short
    timeout would otherwise fire up to a minute late.
    """
    return max(_MIN_TICK_INTERVAL, min(_MAX_TICK_INTERVAL, consumer_timeout // 2))


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class NodePorts:
    """The ports a node listens on; all bound to :data:`LOOPBACK`.

    ``amqps`` is the TLS listener's port, ``None`` when the node has none.
    """

    amqp: int
    dist: int
    amqps: int | None = None

    @classmethod
    def allocate(cls, *, tls: bool = False) -> NodePorts:
        taken: set[int] = set()

        def pick() -> int:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            return port

        amqp = pick()
        dist = pick()
        return cls(amqp=amqp, dist=dist, amqps=pick() if tls else None)

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(port for port in (self.amqp, self.dist, self.amqps) if port is not None)


@dataclass(frozen=True)
class TlsListener:
    """An optional TLS listener (``listeners.ssl.default``) and its ``ssl_options``.

    Files are PEM paths readable by the node. ``verify="verify_peer"`` with
    ``fail_if_no_peer_cert=True`` makes the broker require a client certificate.
    ``versions`` restricts the protocol versions (e.g. ``("tlsv1.2", "tlsv1.3")``);
    empty: the broker's defaults. ``ciphers`` (OpenSSL-style names) likewise.
    """

    cacertfile: str
    certfile: str
    keyfile: str
    verify: str = "verify_none"
    fail_if_no_peer_cert: bool = False
    versions: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = ()

    def lines(self, port: int) -> list[str]:
        lines = [
            f"listeners.ssl.default = {LOOPBACK}:{port}",
            f"ssl_options.cacertfile = {self.cacertfile}",
            f"ssl_options.certfile = {self.certfile}",
            f"ssl_options.keyfile = {self.keyfile}",
            f"ssl_options.verify = {self.verify}",
            f"ssl_options.fail_if_no_peer_cert = {str(self.fail_if_no_peer_cert).lower()}",
        ]
        lines += [f"ssl_options.versions.{n} = {v}" for n, v in enumerate(self.versions, 1)]
        lines += [f"ssl_options.ciphers.{n} = {c}" for n, c in enumerate(self.ciphers, 1)]
        return lines


@dataclass
class NodeConfig:
    """What goes into the node's ``rabbitmq.conf`` (and optional ``advanced.config``).

    ``consumer_timeout`` is in milliseconds (``None``: the broker's default);
    ``extra_lines`` are appended verbatim (later lines win in ``rabbitmq.conf``);
    ``advanced_config`` is Erlang terms for settings ``rabbitmq.conf`` cannot express.
    ``channel_tick_interval`` (ms) defaults to :func:`tick_interval_for` the timeout.
    ``tls`` adds a TLS listener on ``ports.amqps`` (which must then be set).
    """

    consumer_timeout: int | None = None
    extra_lines: list[str] = field(default_factory=list)
    advanced_config: str | None = None
    log_level: str = "info"
    channel_tick_interval: int | None = None
    tls: TlsListener | None = None

    def render(self, ports: NodePorts) -> str:
        """The text of ``rabbitmq.conf`` for a node listening on ``ports``."""
        lines = [
            *self.listener_lines(ports),
            *self.access_lines(),
            *self.limit_lines(),
            *self.log_lines(),
            *self.extra_lines,
        ]
        return "\n".join(lines) + "\n"

    def listener_lines(self, ports: NodePorts) -> list[str]:
        """Listener settings: plain AMQP, and TLS when :attr:`tls` is set."""
        lines = [f"listeners.tcp.default = {LOOPBACK}:{ports.amqp}"]
        if self.tls is not None:
            if ports.amqps is None:
                raise ValueError("a TLS listener needs a port: NodePorts.allocate(tls=True)")
            lines += self.tls.lines(ports.amqps)
        return lines

    def access_lines(self) -> list[str]:
        # Tests connect as guest through a proxy, which RabbitMQ sees as loopback
        # anyway; this keeps guest usable if a test binds elsewhere.
        return ["loopback_users = none"]

    def limit_lines(self) -> list[str]:
        if self.consumer_timeout is None:
            return []
        return [f"consumer_timeout = {int(self.consumer_timeout)}"]

    def log_lines(self) -> list[str]:
        return [f"log.file.level = {self.log_level}", "log.console = false"]

    def erl_args(self) -> list[str]:
        """Extra VM arguments: the distribution interface and app settings."""
        args = ["-kernel", "inet_dist_use_interface", "{127,0,0,1}"]
        tick = self.channel_tick_interval
        if tick is None and self.consumer_timeout is not None:
            tick = tick_interval_for(self.consumer_timeout)
        if tick is not None:
            args += ["-rabbit", "channel_tick_interval", str(int(tick))]
        return args


@dataclass(frozen=True)
class NodeLayout:
    """Where a node keeps its files, all below ``base``."""

    base: Path

    @property
    def home(self) -> Path:
        """``HOME`` of the node and of ``rabbitmqctl``: holds the private Erlang cookie."""
        return self.base / "home"

    @property
    def cookie(self) -> Path:
        return self.home / ".erlang.cookie"

    @property
    def mnesia(self) -> Path:
        return self.base / "mnesia"

    @property
    def logs(self) -> Path:
        return self.base / "log"

    @property
    def config_file(self) -> Path:
        return self.base / "rabbitmq.conf"

    @property
    def advanced_config_file(self) -> Path:
        return self.base / "advanced.config"

    @property
    def env_file(self) -> Path:
        return self.base / "rabbitmq-env.conf"

    @property
    def plugins_file(self) -> Path:
        return self.base / "enabled_plugins"

    @property
    def server_output(self) -> Path:
        return self.base / "server.out"

    def prepare(self) -> None:
        """Create the directories and the files that never change (idempotent)."""
        for directory in (self.home, self.mnesia, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.cookie.exists():
            self.cookie.write_text(secrets.token_hex(20).upper())
            self.cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        self.env_file.write_text("# private kiwipy test node: ignore the system's file\n")
        self.plugins_file.write_text("[].\n")  # no plugins: faster start

    def write_config(self, config: NodeConfig, ports: NodePorts) -> None:
        self.config_file.write_text(config.render(ports))
        if config.advanced_config is not None:
            self.advanced_config_file.write_text(config.advanced_config)
        elif self.advanced_config_file.exists():
            self.advanced_config_file.unlink()


def node_environment(
    layout: NodeLayout,
    nodename: str,
    ports: NodePorts,
    config: NodeConfig,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for the node's scripts: the caller's minus any ``RABBITMQ_*`` setting."""
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if not key.startswith("RABBITMQ_")}
    env.update(
        HOME=str(layout.home),
        ERL_EPMD_ADDRESS=LOOPBACK,
        RABBITMQ_NODENAME=nodename,
        RABBITMQ_DIST_PORT=str(ports.dist),
        RABBITMQ_MNESIA_BASE=str(layout.mnesia),
        RABBITMQ_LOG_BASE=str(layout.logs),
        RABBITMQ_CONFIG_FILE=str(layout.config_file),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(layout.advanced_config_file),
        RABBITMQ_CONF_ENV_FILE=str(layout.env_file),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(layout.plugins_file),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=" ".join(config.erl_args()),
    )
    return env
