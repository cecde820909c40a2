"""The broker refusing the connection (issue 14 item 2): unknown vhost, bad credentials, no
permission. The broker's reply code and text reach the user in a :class:`BrokerRefused`, with
no password and no ``<Connection.Close object at 0x...>``; a refusal met while reconnecting ends
the link instead of looping.

Against the shared RabbitMQ, with a vhost and a user made here by ``rabbitmqctl`` and deleted
at the end.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import kiwipy
import kiwipy.aio
from kiwipy.exceptions import BrokerError, BrokerRefused, ConnectionLost
from kiwipy.settings import Settings
from kiwipy.transports.amqp import AmqpTransport
from kiwipy_reliability.faults.proxy import TcpProxy

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(60)]


def ctl(*args: str, check: bool = True) -> str:
    """``rabbitmqctl`` against the shared node."""
    completed = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30, check=False
    )
    if check and completed.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {completed.stderr.strip()}")
    return completed.stdout


@dataclass
class Account:
    vhost: str
    user: str
    password: str
    host: str
    port: int

    def url(
        self, host: str | None = None, port: int | None = None, vhost: str | None = None
    ) -> str:
        quoted = urllib.parse.quote(self.vhost if vhost is None else vhost, safe="")
        return (
            f"amqp://{self.user}:{self.password}@{host or self.host}:{port or self.port}/{quoted}"
        )


@pytest.fixture
def account(amqp_url: str) -> Iterator[Account]:
    """A temporary vhost and a user with every permission on it."""
    if subprocess.run(["rabbitmqctl", "-q", "status"], capture_output=True, timeout=30).returncode:
        pytest.skip("rabbitmqctl cannot reach the shared broker")
    parts = urllib.parse.urlsplit(amqp_url)
    suffix = uuid.uuid4().hex[:10]
    made = Account(
        f"kiwipy-refusal-{suffix}",
        f"kiwipy-refusal-{suffix}",
        f"pw-{uuid.uuid4().hex}",
        parts.hostname or "127.0.0.1",
        parts.port or 5672,
    )
    ctl("add_vhost", made.vhost)
    ctl("add_user", made.user, made.password)
    ctl("set_permissions", "-p", made.vhost, made.user, ".*", ".*", ".*")
    try:
        yield made
    finally:
        ctl("delete_user", made.user, check=False)
        ctl("delete_vhost", made.vhost, check=False)


def assert_clear(error: BaseException, account: Account, *needles: str) -> None:
    text = str(error)
    assert account.password not in text
    assert "Connection.Close object" not in text
    assert "InvalidFrameError" not in text
    for needle in needles:
        assert needle in text, text


# -- at connect --------------------------------------------------------------------------------


async def test_unknown_vhost_names_the_brokers_reason(account: Account) -> None:
    transport = AmqpTransport(Settings.from_url(account.url(vhost="no-such-vhost")))
    with pytest.raises(BrokerRefused) as caught:
        await transport.connect()
    assert caught.value.reply_code == 530
    assert "vhost no-such-vhost not found" in caught.value.reply_text
    assert_clear(caught.value, account, "NOT_ALLOWED", "no-such-vhost", "****")
    assert isinstance(caught.value, ConnectionLost)  # what kiwipy 0.9's callers catch
    assert isinstance(caught.value, BrokerError)


async def test_wrong_password_is_access_refused(account: Account) -> None:
    url = account.url().replace(account.password, "wrong-secret")
    with pytest.raises(kiwipy.BrokerRefused) as caught:
        await kiwipy.aio.connect(url)
    assert caught.value.reply_code == 403
    assert "wrong-secret" not in str(caught.value)
    assert_clear(caught.value, account, "ACCESS_REFUSED")


async def test_no_permission_on_the_vhost_is_not_allowed(account: Account) -> None:
    ctl("clear_permissions", "-p", account.vhost, account.user)
    with pytest.raises(BrokerRefused) as caught:
        await AmqpTransport(Settings.from_url(account.url())).connect()
    assert caught.value.reply_code == 530
    assert_clear(caught.value, account, "access to vhost", "refused for user")


# -- while connected: no reconnect loop --------------------------------------------------------


async def _given_up(transport: AmqpTransport) -> BaseException | None:
    closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def on_close(exc: BaseException | None) -> None:
        if not closed.done():
            closed.set_result(exc)

    transport.add_close_callback(on_close)
    return await asyncio.wait_for(closed, 30)


def _reconnect_attempts(caplog: pytest.LogCaptureFixture) -> int:
    return sum("Reconnecting failed" in record.getMessage() for record in caplog.records)


async def test_vhost_deleted_while_connected_ends_the_link(
    account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kiwipy")
    settings = Settings.from_url(account.url(), reconnect_max_delay=0.2, task_queue="refusal-q")
    transport = AmqpTransport(settings)
    await transport.connect()
    try:
        await transport.declare_task_queue("refusal-q")
        ctl("delete_vhost", account.vhost)  # the broker closes our connection (320)
        reason = await _given_up(transport)
        assert isinstance(reason, BrokerRefused)
        assert reason.reply_code == 530
        assert_clear(reason, account, "Cannot reconnect", "not found")
        await asyncio.sleep(1.0)  # time for a loop to show, were there one
        assert _reconnect_attempts(caplog) == 0
        assert transport.is_closed
        with pytest.raises(BrokerRefused):  # every later operation says why
            await transport.declare_task_queue("refusal-q")
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert account.password not in messages
        assert "giving up" in messages
    finally:
        await transport.close()


async def test_permissions_revoked_then_connection_lost_stops_retrying(
    account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kiwipy")
    with TcpProxy(account.host, account.port) as proxy:
        url = account.url(host=proxy.listen_host, port=proxy.port)
        communicator = await kiwipy.aio.connect(url, reconnect_max_delay=0.2)
        try:
            ctl("clear_permissions", "-p", account.vhost, account.user)
            proxy.cut()  # the network blips: the reconnect meets NOT_ALLOWED
            reason = await _given_up(communicator.transport)
            assert isinstance(reason, BrokerRefused)
            assert_clear(reason, account, "NOT_ALLOWED", "refused for user")
            # The refused connection closes (the proxy sees it a moment later); then for a
            # second nothing connects again and no reconnect is attempted.
            for _ in range(250):  # at most 5 s
                if not proxy.connections:
                    break
                await asyncio.sleep(0.02)
            assert proxy.connections == 0
            await asyncio.sleep(1.0)
            assert proxy.connections == 0
            assert _reconnect_attempts(caplog) == 0
            with pytest.raises((BrokerRefused, kiwipy.CommunicatorClosed)):
                await communicator.broadcast_send("hello")
        finally:
            await communicator.close()


async def test_user_deleted_while_connected_stops_retrying(account: Account) -> None:
    transport = AmqpTransport(Settings.from_url(account.url(), reconnect_max_delay=0.2))
    await transport.connect()
    try:
        ctl("delete_user", account.user)  # the broker closes the user's connections
        reason = await _given_up(transport)
        assert isinstance(reason, BrokerRefused)
        assert reason.reply_code == 403
        assert_clear(reason, account, "ACCESS_REFUSED")
    finally:
        await transport.close()


async def test_every_failover_address_refusing_ends_the_link_after_one_round(
    account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kiwipy")
    with (
        TcpProxy(account.host, account.port) as first,
        TcpProxy(account.host, account.port) as second,
    ):
        url = (
            f"{account.url(host=first.listen_host, port=first.port)}"
            f";amqp://{second.listen_host}:{second.port}"
        )
        transport = AmqpTransport(Settings.from_url(url, reconnect_max_delay=0.2))
        await transport.connect()
        try:
            ctl("clear_permissions", "-p", account.vhost, account.user)
            first.cut()
            reason = await _given_up(transport)
            assert isinstance(reason, BrokerRefused)
            assert_clear(reason, account, "refused for user")
            # One round: the second address refused, then the first did too; no more.
            assert _reconnect_attempts(caplog) == 1
        finally:
            await transport.close()


async def test_a_channel_level_refusal_keeps_the_connection(account: Account) -> None:
    """ACCESS_REFUSED on one declare is a BrokerError for that call, not a refusal of the
    connection: the transport stays connected (test_least_privilege covers it in depth)."""
    transport = AmqpTransport(Settings.from_url(account.url()))
    await transport.connect()
    try:
        ctl("set_permissions", "-p", account.vhost, account.user, "^$", ".*", ".*")
        with pytest.raises(BrokerError) as caught:
            await transport.declare_task_queue(f"refused-{uuid.uuid4().hex[:6]}")
        assert not isinstance(caught.value, BrokerRefused)
        assert "ACCESS_REFUSED" in str(caught.value)
        assert transport.is_connected
    finally:
        await transport.close()
