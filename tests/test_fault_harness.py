"""The fault-injection harness itself, on a real private RabbitMQ node."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiormq
import pytest

from kiwipy_reliability.faults import (
    NodeConfig,
    RabbitNode,
    TcpProxy,
    WorkerProcess,
    rabbitmq_available,
)
from kiwipy_reliability.faults import _system as fault_system
from kiwipy_reliability.faults import fixtures as fault_fixtures
from kiwipy_reliability.faults._probe import amqp_handshake, port_is_open, wait_port_closed
from kiwipy_reliability.faults._system import pid_alive, wait_pid_gone
from kiwipy_reliability.faults.config import NodePorts

PERSISTENT = aiormq.spec.Basic.Properties(delivery_mode=2)


def _queue_name() -> str:
    return f"kiwipy-fault-{uuid.uuid4().hex[:10]}"


def _connection_refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


@contextlib.asynccontextmanager
async def _connect(url: str) -> AsyncIterator[aiormq.abc.AbstractConnection]:
    connection = await asyncio.wait_for(aiormq.connect(url), 10)
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)


# -- no broker needed ----------------------------------------------------------------


def test_config_renders_listener_access_and_limits() -> None:
    config = NodeConfig(consumer_timeout=1500, extra_lines=["heartbeat = 5"])
    text = config.render(NodePorts(amqp=41000, dist=41001))
    lines = text.splitlines()
    assert "listeners.tcp.default = 127.0.0.1:41000" in lines
    assert "loopback_users = none" in lines
    assert "consumer_timeout = 1500" in lines
    assert lines[-1] == "heartbeat = 5"
    assert "channel_tick_interval" in " ".join(config.erl_args())
    assert "consumer_timeout" not in NodeConfig().render(NodePorts(amqp=1, dist=2))


def test_url_for_keeps_credentials_vhost_and_query() -> None:
    with TcpProxy("127.0.0.1", 9) as proxy:
        url = proxy.url_for("amqp://user:pw@broker.example:5672/vhost?heartbeat=0")
        assert url == f"amqp://user:pw@127.0.0.1:{proxy.port}/vhost?heartbeat=0"
        assert proxy.url_for("amqp://broker/") == f"amqp://127.0.0.1:{proxy.port}/"


def test_worker_process_can_be_stopped_continued_and_killed() -> None:
    code = "import time\nprint('READY')\nwhile True:\n    print('tick')\n    time.sleep(0.02)\n"
    with WorkerProcess(code) as worker:
        assert worker.wait_for_line("READY", timeout=10) == "READY"
        worker.wait_for_line("tick", timeout=5)
        worker.stop_signal()
        time.sleep(0.1)  # lines printed before the stop landed
        while True:
            try:
                worker.read_line(timeout=0.3)
            except TimeoutError:
                break  # silent while stopped
        assert worker.is_running()
        worker.resume()
        assert worker.wait_for_line("tick", timeout=5) == "tick"
        worker.kill()
        assert worker.returncode == -9
        assert not worker.is_running()


def test_worker_process_reports_timeouts_and_early_exit() -> None:
    with WorkerProcess(["sh", "-c", "echo hello; exit 3"]) as worker:
        with pytest.raises(EOFError, match="hello"):
            worker.wait_for_line("READY", timeout=10)
        assert worker.wait(5) == 3
    with WorkerProcess("import time; time.sleep(30)", env={"X": "1"}) as worker:
        with pytest.raises(TimeoutError):
            worker.wait_for_line("READY", timeout=0.2)
        assert worker.terminate() == -15


def test_missing_rabbitmq_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_erl = tmp_path / "erl"
    fake_erl.write_text("#!/bin/sh\n")
    fake_erl.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(fault_system.SBIN_ENV_VAR, raising=False)
    monkeypatch.setattr(fault_system, "_KNOWN_SBIN_DIRS", ())
    monkeypatch.setattr(fault_system, "_EXTRA_PATH", "")
    with pytest.raises(RuntimeError, match="rabbitmq-server is not installed"):
        RabbitNode()
    assert not rabbitmq_available()


def test_fixtures_skip_without_rabbitmq_unless_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no broker"):
        fault_fixtures._unavailable("no broker")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        fault_fixtures._unavailable("no broker")


# -- private node ----------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_node_starts_and_accepts_amqp(rabbit_node: RabbitNode) -> None:
    assert rabbit_node.name.startswith("kiwipy-test-")
    assert rabbit_node.port != 5672
    assert rabbit_node.url == f"amqp://guest:guest@127.0.0.1:{rabbit_node.port}/"
    assert rabbit_node.last_startup_time is not None
    assert rabbit_node.vm_pid is not None and pid_alive(rabbit_node.vm_pid)
    async with _connect(rabbit_node.url) as connection:
        channel = await connection.channel()
        declared = await channel.queue_declare(_queue_name(), exclusive=True)
        assert declared.message_count == 0


async def _publish_persistent(url: str, queue: str, body: bytes) -> None:
    async with _connect(url) as connection:
        channel = await connection.channel()  # publisher confirms: acked once on disk
        await channel.queue_declare(queue, durable=True)
        confirmation = await channel.basic_publish(body, routing_key=queue, properties=PERSISTENT)
        assert isinstance(confirmation, aiormq.spec.Basic.Ack)


async def _get_unacked(url: str, queue: str) -> bytes | None:
    """Read one message without acknowledging it (it goes back to the queue)."""
    async with _connect(url) as connection:
        channel = await connection.channel()
        message = await channel.basic_get(queue, no_ack=False)
        return None if message.delivery_tag is None else message.body


@pytest.mark.timeout(120)
async def test_kill_closes_the_port_and_durable_messages_survive(
    fresh_rabbit_node: RabbitNode,
) -> None:
    node, queue = fresh_rabbit_node, _queue_name()
    url = node.url
    await _publish_persistent(url, queue, b"survivor")

    vm_pid = node.vm_pid
    assert vm_pid is not None
    node.kill(sync=True)  # without the sync, the queue itself may be lost (lazy Mnesia log)
    assert _connection_refused(node.host, node.port), "port still open right after kill()"
    assert not pid_alive(vm_pid) and not node.is_running()

    node.restart()  # same name, data directory and port
    assert node.url == url
    assert await _get_unacked(url, queue) == b"survivor"

    await node.restart_async()  # graceful stop, then start (in a thread)
    assert await _get_unacked(url, queue) == b"survivor"
    async with _connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


def test_set_consumer_timeout_changes_the_runtime_value(fresh_rabbit_node: RabbitNode) -> None:
    node = fresh_rabbit_node
    read_back = "application:get_env(rabbit, consumer_timeout)."
    node.set_consumer_timeout(1234)
    assert node.ctl("eval", read_back).strip() == "{ok,1234}"
    node.reset_env()
    assert node.get_consumer_timeout() == 30 * 60 * 1000  # RabbitMQ's default again


async def test_consumer_timeout_applies_to_new_channels(fresh_rabbit_node: RabbitNode) -> None:
    fresh_rabbit_node.set_consumer_timeout(500)
    async with _connect(fresh_rabbit_node.url) as connection:
        channel = await connection.channel()
        queue = (await channel.queue_declare("", exclusive=True)).queue
        await channel.basic_publish(b"held", routing_key=queue)
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def hold(message: aiormq.abc.DeliveredMessage) -> None:
            if not delivered.done():
                delivered.set_result(None)  # never acknowledged

        await channel.basic_consume(queue, hold, no_ack=False)
        await asyncio.wait_for(delivered, 5)
        started = time.monotonic()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="timed out"):
            await asyncio.wait_for(channel.closing, 10)
        assert time.monotonic() - started < 5


# -- proxy -------------------------------------------------------------------------------


async def test_proxy_forwards_an_amqp_connection(
    fresh_rabbit_node: RabbitNode, tcp_proxy: TcpProxy
) -> None:
    assert tcp_proxy.connections == 0
    async with _connect(tcp_proxy.url_for(fresh_rabbit_node.url)) as connection:
        assert tcp_proxy.connections == 1
        channel = await connection.channel()
        queue = (await channel.queue_declare("", exclusive=True)).queue
        await channel.basic_publish(b"via proxy", routing_key=queue)
        message = await channel.basic_get(queue, no_ack=True)
        assert message.body == b"via proxy"
    await tcp_proxy.await_connections(0, timeout=5)


def test_proxy_serves_blocking_clients(tcp_proxy: TcpProxy) -> None:
    amqp_handshake(*tcp_proxy.address, timeout=5)
    tcp_proxy.wait_for_connections(0, timeout=5)


async def test_cut_breaks_the_client_connection(
    fresh_rabbit_node: RabbitNode, tcp_proxy: TcpProxy
) -> None:
    url = tcp_proxy.url_for(fresh_rabbit_node.url)
    async with _connect(url) as connection:
        await connection.channel()
        tcp_proxy.cut()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(connection.closing, 5)
        assert connection.is_closed
    assert tcp_proxy.connections == 0
    async with _connect(url) as again:  # still listening
        await again.channel()


async def test_refuse_fails_new_connections_until_accept(
    fresh_rabbit_node: RabbitNode, tcp_proxy: TcpProxy
) -> None:
    url = tcp_proxy.url_for(fresh_rabbit_node.url)
    tcp_proxy.refuse()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(aiormq.connect(url), 5)
    assert tcp_proxy.connections == 0
    tcp_proxy.accept()
    async with _connect(url) as connection:
        await connection.channel()


async def test_stall_stops_traffic_and_resume_restores_it(
    fresh_rabbit_node: RabbitNode, tcp_proxy: TcpProxy
) -> None:
    url = tcp_proxy.url_for(fresh_rabbit_node.url + "?heartbeat=0")
    async with _connect(url) as connection:
        channel = await connection.channel()
        tcp_proxy.stall()
        request = asyncio.ensure_future(channel.queue_declare("", exclusive=True))
        done, _ = await asyncio.wait({request}, timeout=1.0)
        assert not done, "a request went through a stalled proxy"
        assert tcp_proxy.connections == 1 and not connection.is_closed
        tcp_proxy.resume()
        declared = await asyncio.wait_for(request, 5)
        assert declared.queue.startswith("amq.gen-")
        await asyncio.wait_for(channel.queue_declare("", exclusive=True), 5)


def test_frozen_node_hangs_until_thawed(fresh_rabbit_node: RabbitNode) -> None:
    node = fresh_rabbit_node
    node.freeze()
    assert port_is_open(node.host, node.port)  # the kernel still accepts
    with pytest.raises(OSError):
        amqp_handshake(node.host, node.port, timeout=0.5)
    node.thaw()
    amqp_handshake(node.host, node.port, timeout=5)


def test_proxy_close_does_not_wait_for_stalled_peers(fresh_rabbit_node: RabbitNode) -> None:
    proxy = TcpProxy(fresh_rabbit_node.host, fresh_rabbit_node.port)
    with socket.create_connection(proxy.address, timeout=5) as client:
        client.sendall(b"AMQP\x00\x00\x09\x01")
        proxy.wait_for_connections(1, timeout=5)
        proxy.stall()
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 3
        assert proxy.connections == 0


# -- a node outlives no test run -----------------------------------------------------

_ORPHAN_MAKER = """
from kiwipy_reliability.faults import RabbitNode
node = RabbitNode()
node.start()
print("READY", node.vm_pid, node.port, node.layout.base, flush=True)
import time
time.sleep(120)
"""


@pytest.mark.timeout(120)
def test_node_dies_with_the_process_that_started_it(rabbit_node: RabbitNode) -> None:
    # rabbit_node: only to skip (or fail under CI) when RabbitMQ is not installed
    with WorkerProcess(_ORPHAN_MAKER) as owner:
        _, vm_pid, port, base = owner.wait_for_line("READY", timeout=90).split()
        assert pid_alive(int(vm_pid))
        owner.kill()  # no cleanup code runs in the owner
    try:
        # The launcher's watchdog sees its pipe from the owner close and kills the group.
        assert wait_pid_gone(int(vm_pid), timeout=10)
        assert wait_port_closed("127.0.0.1", int(port), timeout=10)
    finally:
        shutil.rmtree(base, ignore_errors=True)
