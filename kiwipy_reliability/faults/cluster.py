"""A private, disposable 3-node RabbitMQ cluster for fault-injection scenarios.

Three :class:`~kiwipy_reliability.faults.RabbitNode` s on free high ports share one Erlang
cookie; the second and third join the first (``stop_app``, ``join_cluster``, ``start_app``).
The shared broker on 5672 is never touched: each node has its own name, ports, data directory
and cookie ``HOME``, and every ``rabbitmqctl`` call names its node. Each node can be killed
(SIGKILL), frozen (SIGSTOP) and thawed, stopped gracefully and restarted on its data (it
rejoins the cluster by itself). :meth:`RabbitCluster.leader` finds the node leading a quorum
queue (``rabbitmqctl list_queues name leader``, which RabbitMQ 3.10 has without the management
plugin). :meth:`RabbitCluster.cleanup` kills every node and checks that no Erlang VM of the
cluster is left (``pgrep -f <node directory>``).

Starting takes about 15 s on two cores (nodes in parallel ~11 s, two joins ~4 s).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from kiwipy_reliability.faults.config import LOOPBACK
from kiwipy_reliability.faults.node import RabbitNode

__all__ = ["ClusterError", "RabbitCluster", "failover_url"]

_START_TIMEOUT = 120.0
_POLL = 0.25


class ClusterError(RuntimeError):
    """The cluster did not reach the state asked for."""


def failover_url(ports: Sequence[int]) -> str:
    """``amqp://guest:guest@127.0.0.1:P1/;amqp://127.0.0.1:P2;...``: the first address carries
    the (test nodes') credentials and virtual host, the others take them from it."""
    if not ports:
        raise ValueError("no ports")
    first = f"amqp://guest:guest@{LOOPBACK}:{ports[0]}/"
    return ";".join([first, *(f"amqp://{LOOPBACK}:{port}" for port in ports[1:])])


class RabbitCluster:
    """Three (``size``) private RabbitMQ nodes joined into one cluster.

    ``nodes[i]`` is a :class:`RabbitNode`; :meth:`kill`, :meth:`freeze`, :meth:`thaw`,
    :meth:`stop` and :meth:`restart` take a node or its index. ``consumer_timeout`` and
    ``extra_config`` go into every node's ``rabbitmq.conf``.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        consumer_timeout: int | None = None,
        extra_config: Sequence[str] = (),
        base_dir: str | None = None,
        sbin_dir: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.nodes: list[RabbitNode] = []
        try:
            for _ in range(size):
                self.nodes.append(
                    RabbitNode(
                        consumer_timeout=consumer_timeout,
                        extra_config=extra_config,
                        base_dir=base_dir,
                        sbin_dir=sbin_dir,
                    )
                )
        except BaseException:
            self.cleanup()
            raise
        # One Erlang cookie for all: nodes and their rabbitmqctl read it from their HOME.
        cookie = self.nodes[0].layout.cookie.read_text()
        for node in self.nodes[1:]:
            node.layout.cookie.chmod(0o600)
            node.layout.cookie.write_text(cookie)
            node.layout.cookie.chmod(0o400)
        self.startup_time: float | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        """One plain URL per node."""
        return [node.url for node in self.nodes]

    def failover_url(self, first: int = 0) -> str:
        """The failover URL list of every node, starting with node ``first``."""
        ports = self.ports
        return failover_url(ports[first:] + ports[:first])

    def index(self, node: RabbitNode | int) -> int:
        return node if isinstance(node, int) else self.nodes.index(node)

    def node(self, which: RabbitNode | int | str) -> RabbitNode:
        """A node by index, by itself, or by its Erlang name."""
        if isinstance(which, str):
            for node in self.nodes:
                if node.name == which:
                    return node
            raise KeyError(f"no node {which!r} in this cluster")
        return self.nodes[self.index(which)]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start every node (in parallel) and join the others to the first."""
        began = time.monotonic()
        errors: list[BaseException] = []

        def start_one(node: RabbitNode) -> None:
            try:
                node.start(timeout)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start_one, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app", timeout=timeout)
            node.ctl("join_cluster", seed.name, timeout=timeout)
            node.ctl("start_app", timeout=timeout)
        self.wait_running(len(self.nodes), timeout)
        self.startup_time = time.monotonic() - began

    def is_running(self, which: RabbitNode | int) -> bool:
        return self.node(which).is_running()

    def kill(self, which: RabbitNode | int) -> None:
        """SIGKILL a node's VM (a crash); returns once its AMQP port is closed."""
        self.node(which).kill()

    def freeze(self, which: RabbitNode | int) -> None:
        """SIGSTOP a node's VM: its sockets stay open, it answers nothing."""
        self.node(which).freeze()

    def thaw(self, which: RabbitNode | int) -> None:
        self.node(which).thaw()

    def stop(self, which: RabbitNode | int, timeout: float = 30.0) -> None:
        """Shut a node down gracefully (SIGTERM; SIGKILL after ``timeout`` s)."""
        self.node(which).stop(timeout)

    def restart(self, which: RabbitNode | int, timeout: float = _START_TIMEOUT) -> float:
        """(Re)start a node on its data; it rejoins the cluster. Returns the seconds taken until
        the cluster counts it as running again."""
        node = self.node(which)
        began = time.monotonic()
        if node.is_frozen:
            node.thaw()
        if node.is_running():
            node.stop()
        node.start(timeout)
        self.wait_running(self.running_count(), timeout, via=node)
        return time.monotonic() - began

    def ensure_running(self, timeout: float = _START_TIMEOUT) -> None:
        """Thaw frozen nodes and restart stopped ones: back to a full cluster."""
        for node in self.nodes:
            if node.is_frozen:
                node.thaw()
        for node in self.nodes:
            if not node.is_running():
                node.start(timeout)
        self.wait_running(len(self.nodes), timeout)

    def running_count(self) -> int:
        return sum(node.is_running() and not node.is_frozen for node in self.nodes)

    def wait_running(
        self, count: int, timeout: float = _START_TIMEOUT, *, via: RabbitNode | None = None
    ) -> None:
        """Wait until the cluster (as ``via`` sees it) has ``count`` running nodes."""
        if not self._wait(lambda: len(self.running_nodes(via)) >= count, timeout):
            raise ClusterError(
                f"cluster has {self.running_nodes(via)} running, not {count}, after {timeout} s"
            )

    def running_nodes(self, via: RabbitNode | None = None) -> list[str]:
        """Names of the nodes the cluster counts as running (``[]`` if ``via`` cannot say)."""
        try:
            out = self.ctl("eval", "rabbit_nodes:all_running().", via=via, timeout=15.0)
        except (RuntimeError, subprocess.TimeoutExpired):
            return []
        return sorted(name for name in _atoms(out) if any(name == n.name for n in self.nodes))

    def cleanup(self) -> None:
        """Kill every node, delete its data, and check that no VM of the cluster is left."""
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.cleanup()
            except BaseException as exc:  # kill the other nodes anyway
                errors.append(exc)
        left = self.leftover_processes()
        if errors:
            raise errors[0]
        if left:
            raise ClusterError(f"processes of the cluster left after cleanup: {left}")

    def leftover_processes(self) -> list[int]:
        """PIDs of processes whose command line names a node's directory (``pgrep -f``; the
        Erlang VM gets ``-home <dir>/home``, the node name is not on its command line)."""
        pgrep = shutil.which("pgrep")
        if pgrep is None:
            return []
        found: list[int] = []
        for node in self.nodes:
            result = subprocess.run(  # noqa: S603 - fixed executable, our node's name
                [pgrep, "-f", f"{node.layout.base}/"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            found.extend(int(pid) for pid in result.stdout.split())
        return found

    def close(self) -> None:
        self.cleanup()

    def __enter__(self) -> RabbitCluster:
        if not all(node.is_running() for node in self.nodes):
            try:
                self.start()
            except BaseException:
                self.cleanup()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- management ----------------------------------------------------------------------------

    def ctl(self, *args: str, via: RabbitNode | None = None, timeout: float = 30.0) -> str:
        """``rabbitmqctl`` against ``via`` or the first node that runs and is not frozen."""
        node = via if via is not None else self.responsive_node()
        return node.ctl(*args, timeout=timeout)

    def responsive_node(self) -> RabbitNode:
        for node in self.nodes:
            if node.is_running() and not node.is_frozen:
                return node
        raise ClusterError("no node of the cluster is running and responsive")

    def queue_info(self, queue: str, vhost: str = "/") -> dict[str, str] | None:
        """``leader``, ``members``, ``online``, ``messages``, ``consumers`` of a queue."""
        items = ("leader", "members", "online", "messages", "consumers", "type")
        out = self.ctl(
            "list_queues", "-p", vhost, "-q", "--no-table-headers", "name", *items, timeout=15.0
        )
        for line in out.splitlines():
            fields = line.split("\t")
            if fields and fields[0] == queue and len(fields) == len(items) + 1:
                return dict(zip(items, fields[1:], strict=True))
        return None

    def leader(self, queue: str, vhost: str = "/") -> RabbitNode:
        """The node leading quorum queue ``queue``, as Raft on a responsive node sees it.

        Asks ``ra_leaderboard`` (``rabbitmqctl eval``) rather than ``list_queues``, which
        would wait for a frozen node.
        """
        out = self.ctl("eval", _LEADER.format(vhost=_binary(vhost), queue=_binary(queue)))
        name = out.strip().strip("'")
        if name in ("none", "missing", ""):
            raise ClusterError(f"queue {queue!r} has no leader now ({name or 'no answer'})")
        return self.node(name)

    def wait_leader(
        self, queue: str, timeout: float, *, other_than: RabbitNode | None = None
    ) -> RabbitNode:
        """Wait until ``queue`` has a live leader (other than ``other_than``); return it."""
        found: list[RabbitNode] = []

        def has_leader() -> bool:
            try:
                leader = self.leader(queue)
            except (ClusterError, KeyError, RuntimeError, subprocess.TimeoutExpired):
                return False
            if leader is other_than or not leader.is_running() or leader.is_frozen:
                return False
            found.append(leader)
            return True

        if not self._wait(has_leader, timeout):
            raise ClusterError(f"queue {queue!r} has no live leader after {timeout} s")
        return found[-1]

    def wait_members_online(self, queue: str, count: int, timeout: float) -> None:
        """Wait until ``count`` members of quorum queue ``queue`` are online."""

        def online() -> bool:
            try:
                info = self.queue_info(queue)
            except (RuntimeError, subprocess.TimeoutExpired):
                return False
            return info is not None and len(_atoms(info["online"])) >= count

        if not self._wait(online, timeout):
            raise ClusterError(f"queue {queue!r}: fewer than {count} members online")

    def add_vhost(self, vhost: str, *, default_queue_type: str | None = None) -> None:
        """A virtual host (optionally with a default queue type) that guest may use."""
        extra = ["--default-queue-type", default_queue_type] if default_queue_type else []
        self.ctl("add_vhost", vhost, *extra)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        self.ctl("delete_vhost", vhost)

    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True


_LEADER = (
    'case rabbit_amqqueue:lookup(rabbit_misc:r(<<"{vhost}">>, queue, <<"{queue}">>)) of '
    "{{ok, Q}} -> case ra_leaderboard:lookup_leader(element(1, amqqueue:get_pid(Q))) of "
    "{{_, Node}} -> Node; _ -> none end; _ -> missing end."
)


def _binary(text: str) -> str:
    """``text`` for an Erlang binary literal ``<<"...">>``."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _atoms(text: str) -> list[str]:
    """The node names in an Erlang list as rabbitmqctl prints it: ``['a@h','b@h']`` or
    ``[a@h, b@h]``."""
    cleaned = text.strip().strip("[]")
    return [part.strip().strip("'\"") for part in cleaned.split(",") if part.strip()]
