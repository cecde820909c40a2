"""TLS (``amqps://``) against private RabbitMQ nodes with certificates made here by ``trustme``.

One node (started once for the module) requires a client certificate; a second one, started
only for the protocol-version test, speaks TLS 1.1 only. Every failure must fail closed: a
:class:`~kiwipy.exceptions.TLSError` (a ``ConnectionLost``) naming the cause, never the password.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiwipy.exceptions import ConnectionLost, TLSError
from kiwipy.settings import Settings
from kiwipy.transports.amqp import AmqpTransport
from kiwipy.transports.amqp._tls import MINIMUM_VERSION, make_ssl_context
from kiwipy_reliability.faults.config import TlsListener
from kiwipy_reliability.faults.node import RabbitNode

trustme = pytest.importorskip("trustme")

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(120)]

PASSWORD = f"tls-secret-{uuid.uuid4().hex}"
USER = f"tls-user-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, the broker's certificate for ``localhost``, a client's, an impostor."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client: Path  # certificate chain and key in one file
    other_ca: Path
    expired_server: Path  # certificate chain and key, signed by ``ca``


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")  # not 127.0.0.1: that gives us a host name mismatch
    client = ca.issue_cert("kiwipy-test-client")
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = ca.issue_cert(
        "localhost",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    pki = Pki(
        directory,
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "other-ca.pem",
        directory / "expired.pem",
    )
    ca.cert_pem.write_to_path(str(pki.ca))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
    server.private_key_pem.write_to_path(str(pki.server_key))
    client.private_key_and_cert_chain_pem.write_to_path(str(pki.client))
    trustme.CA().cert_pem.write_to_path(str(pki.other_ca))
    expired.private_key_and_cert_chain_pem.write_to_path(str(pki.expired_server))
    return pki


def _start(listener: TlsListener) -> Iterator[RabbitNode]:
    try:
        node = RabbitNode(tls=listener)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        node.start(timeout=120)
        node.ctl("add_user", USER, PASSWORD)
        node.ctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
        yield node
    finally:
        node.cleanup()


@pytest.fixture(scope="module")
def tls_node(pki: Pki) -> Iterator[RabbitNode]:
    """A node whose TLS listener requires a client certificate signed by our CA."""
    listener = TlsListener(
        cacertfile=str(pki.ca),
        certfile=str(pki.server_cert),
        keyfile=str(pki.server_key),
        verify="verify_peer",
        fail_if_no_peer_cert=True,
        versions=("tlsv1.2", "tlsv1.3"),
    )
    yield from _start(listener)


@pytest.fixture(scope="module")
def tls11_node(pki: Pki) -> Iterator[RabbitNode]:
    """A node that speaks TLS 1.1 only."""
    listener = TlsListener(
        cacertfile=str(pki.ca),
        certfile=str(pki.server_cert),
        keyfile=str(pki.server_key),
        versions=("tlsv1.1",),
    )
    yield from _start(listener)


def url(host: str, port: int, query: str = "") -> str:
    return f"amqps://{USER}:{PASSWORD}@{host}:{port}/{query}"


async def connect(settings: Settings) -> AmqpTransport:
    transport = AmqpTransport(settings)
    await transport.connect()
    return transport


async def assert_fails_closed(
    settings: Settings, caplog: pytest.LogCaptureFixture, *causes: str
) -> TLSError:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TLSError) as caught:
        await connect(settings)
    error = caught.value
    assert isinstance(error, ConnectionLost)
    text = str(error)
    assert any(cause in text for cause in causes), text
    assert "TLS failed" in text
    for shown in (text, repr(error), caplog.text, repr(settings), str(error.__cause__)):
        assert PASSWORD not in shown
    return error


@pytest.fixture
async def closing() -> AsyncIterator[list[AmqpTransport]]:
    made: list[AmqpTransport] = []
    yield made
    for transport in made:
        await transport.close()


async def test_connects_with_the_right_ca_and_host_name(
    tls_node: RabbitNode, pki: Pki, closing: list[AmqpTransport], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings.from_url(
        url("localhost", tls_node.tls_port),
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.client),
    )
    transport = await connect(settings)
    closing.append(transport)
    assert transport.is_connected
    assert transport.server_properties["product"] == "RabbitMQ"
    # The same through RabbitMQ's URI query parameters; aiormq never sees (nor logs) the paths.
    query = f"?cacertfile={pki.ca}&certfile={pki.client}&verify=verify_peer"
    closing.append(await connect(Settings.from_url(url("localhost", tls_node.tls_port, query))))
    assert str(pki.directory) not in "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("aiormq")
    )
    assert PASSWORD not in caplog.text


async def test_ip_address_with_the_certificates_host_name(
    tls_node: RabbitNode, pki: Pki, closing: list[AmqpTransport]
) -> None:
    settings = Settings.from_url(
        url("127.0.0.1", tls_node.tls_port),
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.client),
        ssl_server_hostname="localhost",
    )
    closing.append(await connect(settings))


async def test_unknown_ca_fails_closed(
    tls_node: RabbitNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    for cafile in (str(pki.other_ca), None):  # another CA; the system's CAs
        settings = Settings.from_url(
            url("localhost", tls_node.tls_port), ssl_cafile=cafile, ssl_certfile=str(pki.client)
        )
        await assert_fails_closed(settings, caplog, "unknown certificate authority")


async def test_host_name_mismatch_fails_closed(
    tls_node: RabbitNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_url(
        url("127.0.0.1", tls_node.tls_port), ssl_cafile=str(pki.ca), ssl_certfile=str(pki.client)
    )
    await assert_fails_closed(settings, caplog, "host name mismatch")


async def test_expired_certificate_fails_closed(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    # The broker's own certificate cannot be swapped per test without a restart, so a TLS
    # endpoint in this process presents the expired certificate (signed by the trusted CA):
    # the client must refuse it during the handshake, before any AMQP byte.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(pki.expired_server))

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = Settings.from_url(url("localhost", port), ssl_cafile=str(pki.ca))
        await assert_fails_closed(settings, caplog, "has expired")
    finally:
        server.close()
        await server.wait_closed()


async def test_missing_client_certificate_fails_closed(
    tls_node: RabbitNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_url(url("localhost", tls_node.tls_port), ssl_cafile=str(pki.ca))
    await assert_fails_closed(settings, caplog, "client certificate")


async def test_plaintext_port_fails_closed(
    tls_node: RabbitNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_url(url("localhost", tls_node.port), ssl_cafile=str(pki.ca))
    await assert_fails_closed(settings, caplog, "did not answer with TLS")


async def test_tls_below_1_2_is_refused(
    tls11_node: RabbitNode, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.from_url(url("localhost", tls11_node.tls_port), ssl_cafile=str(pki.ca))
    await assert_fails_closed(settings, caplog, "no common TLS version")
    # The refusal is the client's: the broker does complete a TLS 1.1 handshake with a client
    # that allows it (when this OpenSSL build still can).
    loose = ssl.create_default_context(cafile=str(pki.ca))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
            loose.minimum_version = ssl.TLSVersion.TLSv1_1
            loose.maximum_version = ssl.TLSVersion.TLSv1_1
        loose.set_ciphers("DEFAULT:@SECLEVEL=0")
        reader, writer = await asyncio.open_connection("localhost", tls11_node.tls_port, ssl=loose)
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.1 to prove the broker does: {exc}")
    writer.close()
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
    del reader


def test_client_context_minimum_is_tls_1_2(pki: Pki) -> None:
    context = make_ssl_context(Settings.from_url("amqps://localhost/", ssl_cafile=str(pki.ca)))
    assert context.minimum_version == MINIMUM_VERSION == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


async def test_verification_off_needs_an_option_and_warns_once(
    tls_node: RabbitNode,
    pki: Pki,
    closing: list[AmqpTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Another CA and an IP address: only connects because verification is off.
    settings = Settings.from_url(
        url("127.0.0.1", tls_node.tls_port, "?verify=verify_none"),
        ssl_cafile=str(pki.other_ca),
        ssl_certfile=str(pki.client),
    )
    assert settings.ssl_verify is False
    transport = await connect(settings)
    closing.append(transport)
    # Reconnections reuse the context: still one warning.
    tls_node.ctl("close_all_connections", "test: reconnect")
    for _ in range(100):
        await asyncio.sleep(0.1)
        if transport.is_connected:
            break
    warned = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "verification" in r.message
    ]
    assert len(warned) == 1, caplog.text
    assert PASSWORD not in caplog.text


def test_tls_settings_parse_and_stay_out_of_repr() -> None:
    settings = Settings.from_url(
        "amqps://u:pw-123@broker:5671/?cacertfile=/c/ca.pem&certfile=/c/me.pem"
        "&keyfile=/c/me.key&verify=verify_none&server_name_indication=broker.example",
    )
    assert settings.ssl_cafile == "/c/ca.pem"
    assert settings.ssl_certfile == "/c/me.pem"
    assert settings.ssl_keyfile == "/c/me.key"
    assert settings.ssl_verify is False
    assert settings.ssl_server_hostname == "broker.example"
    assert "pw-123" not in repr(settings)
    assert Settings.from_url("amqps://h/?verify=verify_peer").ssl_verify is True
    assert Settings.from_url("amqps://h/", ssl_cafile="/x").ssl_cafile == "/x"  # keywords win
    with pytest.raises(ValueError, match="verify_peer or verify_none"):
        Settings.from_url("amqps://h/?verify=maybe")
    with pytest.raises(ValueError, match="amqps"):  # TLS options on a plaintext URL
        Settings.from_url("amqp://h/", ssl_cafile="/x")
    with pytest.raises(ValueError, match="amqps"):
        Settings.from_url("amqp://h/?verify=verify_none")


async def test_unreadable_tls_file_is_a_clear_tls_error(pki: Pki) -> None:
    missing = pki.directory / "nope.pem"
    settings = Settings.from_url(url("localhost", 1), ssl_cafile=str(missing))
    with pytest.raises(TLSError, match="Cannot set up TLS") as caught:
        await connect(settings)
    assert PASSWORD not in str(caught.value)
