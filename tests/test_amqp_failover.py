"""Failover addresses: the URL list, its completion from the first URL, masking, and (against
RabbitMQ) connecting to the next address when one is dead and rotating on reconnect."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import kiwipy.aio
from kiwipy.exceptions import BrokerRefused, ConnectionLost, TLSError
from kiwipy.settings import Settings, mask_url
from kiwipy.transports.amqp import AmqpTransport
from kiwipy.transports.amqp._tls import dial_targets
from kiwipy_reliability.faults.config import TlsListener
from kiwipy_reliability.faults.node import RabbitNode
from kiwipy_reliability.faults.proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cretPW"


# -- the URL list --------------------------------------------------------------------------------


def test_missing_parts_are_taken_from_the_first_url() -> None:
    settings = Settings.from_url(
        f"amqp://alice:{PASSWORD}@h1:5673/prod?heartbeat=5;amqp://h2;amqp://bob:pw@h3:1/"
    )
    assert settings.url == f"amqp://alice:{PASSWORD}@h1:5673/prod?heartbeat=5"
    assert settings.failover_urls == (
        f"amqp://alice:{PASSWORD}@h2:5673/prod?heartbeat=5",
        # Another user: not alice's password; a path of its own ("/": the default vhost).
        "amqp://bob:pw@h3:1/?heartbeat=5",
    )
    assert settings.heartbeat == 5  # options come from the first URL
    assert settings.addresses == (settings.url, *settings.failover_urls)


def test_the_field_and_the_list_give_the_same_settings() -> None:
    listed = Settings.from_url(f"amqp://u:{PASSWORD}@h1/v;amqp://h2;amqp://h3:5999")
    fielded = Settings.from_url(
        f"amqp://u:{PASSWORD}@h1/v", failover_urls=("amqp://h2", "amqp://h3:5999")
    )
    assert listed == fielded
    assert fielded.failover_urls[1] == f"amqp://u:{PASSWORD}@h3:5999/v"
    assert listed.replace(heartbeat=7).failover_urls == listed.failover_urls  # idempotent
    # A string is a list too; spaces around ';' are allowed.
    spaced = Settings(url=f"amqp://u:{PASSWORD}@h1/v", failover_urls="amqp://h2 ; amqp://h3:5999")
    assert spaced.failover_urls == listed.failover_urls


def test_ipv6_and_per_address_server_name() -> None:
    settings = Settings.from_url(
        f"amqps://u:{PASSWORD}@[::1]:5671/?server_name_indication=node1"
        ";amqps://[fe80::2]?server_name_indication=node2;amqps://h3"
    )
    assert settings.ssl_server_hostname == "node1"
    second, third = settings.failover_urls
    assert second == f"amqps://u:{PASSWORD}@[fe80::2]:5671/?server_name_indication=node2"
    assert third == f"amqps://u:{PASSWORD}@h3:5671/"  # not node1's name


def test_no_password_in_the_repr_or_the_masked_list() -> None:
    settings = Settings.from_url(f"amqp://u:{PASSWORD}@h1/v;amqp://h2;amqp://x:{PASSWORD}2@h3")
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert repr(settings).count("****") == 3
    masked = mask_url(f"amqp://u:{PASSWORD}@h1/v;amqp://x:{PASSWORD}@h2 ;amqps://h3")
    assert masked == "amqp://u:****@h1/v;amqp://x:****@h2;amqps://h3"
    # Malformed: masked too much rather than too little.
    assert PASSWORD not in mask_url(f"amqp://x:{PASSWORD}@h2 ;amqp:x:{PASSWORD}@h3")


MALFORMED_LISTS = [
    (f"amqp://u:{PASSWORD}@h1;h2", "';' separates the complete addresses"),
    (f"amqp://u:{PASSWORD}@h1/v;", "';' separates the complete addresses"),
    (f"amqp://u:{PASSWORD}@h1;amqp:h2", "';' separates the complete addresses"),
    (f"amqp://u:{PASSWORD}@h1;amqp://h2:99999", "address 2 of 2: Malformed communicator URL"),
    (f"amqp://u:{PASSWORD}@h1;amqp://u:{PASSWORD}@h2 ", "space"),
    (f"amqp://u:{PASSWORD}@h1;amqps://h2", "differs from the first URL's amqp://"),
    (f"amqp://u:{PASSWORD}@h1?heartbeat=5;amqp://h2?heartbeat=9", "heartbeat='9' differs"),
    (f"amqp://u:{PASSWORD}@h1;amqq://h2", "address 2 of 2: Unknown communicator URL scheme"),
    ("memory://a;memory://b", "only amqp:// and amqps:// URLs take failover"),
    (f"amqp://u:{PASSWORD}@h1;amqp://u:{PASSWORD}@/v", "no host"),
]


@pytest.mark.parametrize(("url", "problem"), MALFORMED_LISTS)
def test_malformed_list_is_a_clear_error_without_passwords(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="URL") as caught:
        Settings.from_url(url)
    text = str(caught.value)
    assert problem in text
    assert PASSWORD not in text
    assert "\n" not in text


def test_a_matching_option_may_be_repeated() -> None:
    settings = Settings.from_url("amqp://h1?heartbeat=5;amqp://h2?heartbeat=5")
    assert settings.failover_urls == ("amqp://h2?heartbeat=5",)


def test_a_semicolon_in_a_password_is_no_separator() -> None:
    settings = Settings.from_url("amqp://u:pa;ss@h1/v;amqp://h2")
    assert settings.url == "amqp://u:pa;ss@h1/v"
    assert settings.failover_urls == ("amqp://u:pa;ss@h2/v",)
    assert "pa;ss" not in mask_url("amqp://u:pa;ss@h1/v;amqp://u:pa;ss@h2")


# -- TLS: the host name is checked per address ---------------------------------------------------


def test_each_address_is_checked_against_its_own_host_name() -> None:
    settings = Settings.from_url(
        f"amqps://u:{PASSWORD}@10.0.0.1:5671/?server_name_indication=node1.example"
        ";amqps://node2.example;amqps://10.0.0.3?server_name_indication=node3.example"
    )
    targets = dial_targets(settings)
    assert [target.server_hostname for target in targets] == [
        "node1.example",
        None,  # None: asyncio checks the URL's own host, node2.example
        "node3.example",
    ]
    assert [urllib.parse.urlsplit(target.url).hostname for target in targets] == [
        "10.0.0.1",
        "node2.example",
        "10.0.0.3",
    ]
    context = targets[0].kwargs["context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert all(target.kwargs["context"] is context for target in targets)  # built once
    assert all(PASSWORD not in repr(target) for target in targets)


def test_ssl_server_hostname_serves_addresses_without_their_own() -> None:
    settings = Settings.from_url(
        "amqps://10.0.0.1;amqps://10.0.0.2;amqps://10.0.0.3?server_name_indication=other",
        ssl_server_hostname="cluster.example",
    )
    names = [target.server_hostname for target in dial_targets(settings)]
    assert names == ["cluster.example", "cluster.example", "other"]


def test_plain_addresses_get_no_tls() -> None:
    targets = dial_targets(Settings.from_url("amqp://h1;amqp://h2"))
    assert [target.kwargs for target in targets] == [{}, {}]
    assert [target.label for target in targets] == ["amqp://h1", "amqp://h2"]


# -- against RabbitMQ ------------------------------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on (a dead broker)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ctl(*args: str, check: bool = True) -> None:
    completed = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30, check=False
    )
    if check and completed.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {completed.stderr.strip()}")


@pytest.fixture
def rabbitmqctl(amqp_url: str) -> None:
    if subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, timeout=30).returncode:
        pytest.skip("rabbitmqctl cannot reach the shared broker")


@pytest.fixture
def user_password(rabbitmqctl: None) -> Iterator[tuple[str, str]]:
    """A temporary user of the shared broker, with a password worth masking."""
    user = f"kiwipy-failover-{uuid.uuid4().hex[:8]}"
    password = f"{PASSWORD}-{uuid.uuid4().hex}"
    ctl("add_user", user, password)
    ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    try:
        yield user, password
    finally:
        ctl("delete_user", user, check=False)


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async def wait() -> None:
        while not condition():  # noqa: ASYNC110 -- polls a property, no event to wait on
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{record.getMessage()} {record.exc_text or ''} {record.exc_info or ''}"
        for record in caplog.records
    )


@pytest.mark.amqp
async def test_connect_skips_dead_addresses(
    user_password: tuple[str, str], unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user, password = user_password
    dead1, dead2 = closed_port(), closed_port()
    url = f"amqp://{user}:{password}@127.0.0.1:{dead1}/;amqp://127.0.0.1:{dead2};amqp://127.0.0.1:5672"
    transport = AmqpTransport(Settings.from_url(url, task_exchange=f"{unique_name}.tasks"))
    await transport.connect()
    try:
        assert transport.address == f"amqp://{user}:****@127.0.0.1:5672/"
        await transport.declare_task_queue(f"{unique_name}.q")
        assert await transport.queue_exists(f"{unique_name}.q")
        text = logged(caplog) + repr(transport)
        assert f"127.0.0.1:{dead1}" in text and f"127.0.0.1:{dead2}" in text  # said why
        assert password not in text
    finally:
        await transport.close()


@pytest.mark.amqp
async def test_no_address_answers_names_each_masked(user_password: tuple[str, str]) -> None:
    user, password = user_password
    dead1, dead2 = closed_port(), closed_port()
    url = f"amqp://{user}:{password}@127.0.0.1:{dead1}/;amqp://127.0.0.1:{dead2}"
    with pytest.raises(ConnectionLost) as caught:
        await AmqpTransport(Settings.from_url(url)).connect()
    text = str(caught.value)
    assert not isinstance(caught.value, BrokerRefused)
    assert "any of the 2 addresses" in text
    assert f":{dead1}/" in text and f":{dead2}/" in text
    assert password not in text


@pytest.mark.amqp
async def test_reconnects_rotate_to_the_next_address(
    user_password: tuple[str, str], unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user, password = user_password
    with TcpProxy("127.0.0.1", 5672) as first, TcpProxy("127.0.0.1", 5672) as second:
        url = f"amqp://{user}:{password}@127.0.0.1:{first.port}/;amqp://127.0.0.1:{second.port}"
        communicator = await kiwipy.aio.connect(
            url,
            task_exchange=f"{unique_name}.tasks",
            message_exchange=f"{unique_name}.messages",
            task_queue=f"{unique_name}.tasks",
            reconnect_max_delay=0.3,
            testing_mode=True,
        )
        transport: Any = communicator.transport
        try:
            await communicator.add_task_subscriber(lambda _c, task: task * 2)
            assert await asyncio.wait_for(await communicator.task_send(1), 10) == 2
            assert (first.connections, second.connections) == (1, 0)

            first.refuse()  # the first node dies
            first.cut()
            await second.await_connections(1, timeout=15)
            await until(lambda: transport.is_connected)
            assert transport.address == f"amqp://{user}:****@127.0.0.1:{second.port}/"
            # The consumer came back on the second node.
            assert await asyncio.wait_for(await communicator.task_send(2), 15) == 4

            first.accept()  # the first node is back; the second one dies
            second.refuse()
            second.cut()
            await first.await_connections(1, timeout=15)
            await until(lambda: transport.is_connected)
            assert transport.address.endswith(f"@127.0.0.1:{first.port}/")
            assert await asyncio.wait_for(await communicator.task_send(3), 15) == 6
        finally:
            await communicator.close()
    text = logged(caplog)
    assert "Reconnected to" in text
    assert password not in text


@pytest.mark.amqp
async def test_shuffle_spreads_clients_over_the_addresses(amqp_url: str) -> None:
    with TcpProxy("127.0.0.1", 5672) as first, TcpProxy("127.0.0.1", 5672) as second:
        url = f"{first.url_for(amqp_url)};{second.url_for(amqp_url)}"
        transports = [
            AmqpTransport(Settings.from_url(url, failover_shuffle=True)) for _ in range(16)
        ]
        try:
            await asyncio.gather(*(transport.connect() for transport in transports))
            # All 16 on one address: a chance of 2 in 65536.
            assert first.connections > 0 and second.connections > 0
            assert first.connections + second.connections == 16
        finally:
            await asyncio.gather(*(transport.close() for transport in transports))


@pytest.mark.amqp
async def test_queue_exists_creates_nothing(amqp_url: str, unique_name: str) -> None:
    transport = AmqpTransport(Settings.from_url(amqp_url))
    await transport.connect()
    try:
        assert not await transport.queue_exists(f"{unique_name}.typo")
        assert not await transport.queue_exists(f"{unique_name}.typo")  # still not created
        await transport.declare_task_queue(f"{unique_name}.real")
        assert await transport.queue_exists(f"{unique_name}.real")
        assert transport.is_connected
    finally:
        await transport.close()
    # Remove the durable queue the test made.
    cleaner = AmqpTransport(Settings.from_url(amqp_url))
    await cleaner.connect()
    try:
        channel = await cleaner._link.open_channel()
        await channel.queue_delete(f"{unique_name}.real")
    finally:
        await cleaner.close()


# -- TLS against a private node: each address's own host name is checked ---------------------------


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RabbitNode, str]]:
    """A private node with a TLS listener whose certificate names ``localhost`` only; yields
    the node and the CA file."""
    trustme = pytest.importorskip("trustme")
    directory = tmp_path_factory.mktemp("failover-pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    listener = TlsListener(
        cacertfile=str(paths["ca"]), certfile=str(paths["cert"]), keyfile=str(paths["key"])
    )
    try:
        node = RabbitNode(tls=listener)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        node.start(timeout=120)
        node.ctl("add_user", "tls-failover", PASSWORD)
        node.ctl("set_permissions", "-p", "/", "tls-failover", ".*", ".*", ".*")
        yield node, str(paths["ca"])
    finally:
        node.cleanup()


@pytest.mark.amqp
@pytest.mark.timeout(180)
async def test_tls_host_name_is_checked_per_address(
    tls_node: tuple[RabbitNode, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node, cafile = tls_node
    port = node.tls_port
    # 127.0.0.1 is not in the certificate: refused; localhost is: connected.
    url = f"amqps://tls-failover:{PASSWORD}@127.0.0.1:{port}/;amqps://localhost:{port}"
    transport = AmqpTransport(Settings.from_url(url, ssl_cafile=cafile))
    await transport.connect()
    try:
        assert transport.address == f"amqps://tls-failover:****@localhost:{port}/"
        text = logged(caplog)
        assert "host name mismatch" in text  # the first address, checked against its own host
        assert PASSWORD not in text
    finally:
        await transport.close()
    # The other way round a mismatch on every address fails closed, naming each.
    url = f"amqps://tls-failover:{PASSWORD}@127.0.0.1:{port}/;amqps://127.0.0.1:{port}/"
    with pytest.raises(TLSError) as caught:
        await AmqpTransport(Settings.from_url(url, ssl_cafile=cafile)).connect()
    assert str(caught.value).count("host name mismatch") == 2
    assert PASSWORD not in str(caught.value)


# -- broker features per connection (a rolling upgrade) ------------------------------------------


def consumer_arguments(queue: str) -> list[str]:
    completed = subprocess.run(
        ["rabbitmqctl", "-q", "list_consumers", "--no-table-headers", "queue_name", "arguments"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line for line in completed.stdout.splitlines() if line.startswith(queue)]


@pytest.mark.amqp
async def test_consumer_arguments_follow_the_version_of_each_connection(
    amqp_url: str, rabbitmqctl: None, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next node of a rolling upgrade runs another version: the restored task consumer
    gets the arguments of that version (here: a per-consumer timeout from 3.11.15 on)."""
    queue = f"{unique_name}.q"
    with TcpProxy("127.0.0.1", 5672) as proxy:
        settings = Settings.from_url(
            proxy.url_for(amqp_url),
            consumer_timeout=3600,
            testing_mode=True,
            reconnect_max_delay=0.3,
            task_exchange=f"{unique_name}.tasks",
        )
        transport = AmqpTransport(settings)
        features: Any = transport._features
        await transport.connect()
        try:
            real = features.version
            subscription = await transport.consume_tasks(queue, _ack, prefetch_count=1)
            if real >= (3, 11, 15):
                pytest.skip("the shared broker already takes a per-consumer timeout")
            (line,) = consumer_arguments(queue)
            assert "x-consumer-timeout" not in line

            learn = features.learn

            def upgraded(server_properties: dict[str, Any]) -> None:
                learn({**server_properties, "version": "3.12.1"})

            monkeypatch.setattr(features, "learn", upgraded)  # the next node runs 3.12.1
            proxy.cut()
            await until(lambda: transport.is_connected and features.version == (3, 12, 1))

            async def restored() -> list[str]:
                while not (found := consumer_arguments(queue)):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                return found

            (line,) = await asyncio.wait_for(restored(), 15)
            assert "x-consumer-timeout" in line and "3600000" in line
            await subscription.cancel()
        finally:
            await transport.close()


async def _ack(delivery: Any) -> None:
    await delivery.ack()
