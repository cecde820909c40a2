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
    """The ports a node listens on; all bound to :data:`LOOPBACK`."""

    amqp: int
    dist: int

    @classmethod
    def allocate(cls) -> NodePorts:
        amqp = free_port()
        dist = free_port()
        while dist == amqp:
            dist = free_port()
        return cls(amqp=amqp, dist=dist)


@dataclass
class NodeConfig:
    """What goes into the node's ``rabbitmq.conf`` (and optional ``advanced.config``).

    ``consumer_timeout`` is in milliseconds (``None``: the broker's default);
    ``extra_lines`` are appended verbatim (later lines win in ``rabbitmq.conf``);
    ``advanced_config`` is Erlang terms for settings ``rabbitmq.conf`` cannot express.
    ``channel_tick_interval`` (ms) defaults to :func:`tick_interval_for` the timeout.
    """

    consumer_timeout: int | None = None
    extra_lines: list[str] = field(default_factory=list)
    advanced_config: str | None = None
    log_level: str = "info"
    channel_tick_interval: int | None = None

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
        """Listener settings; a TLS listener would add ``listeners.ssl.*`` here."""
        return [f"listeners.tcp.default = {LOOPBACK}:{ports.amqp}"]

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
