"""The broker password never leaks: not in logs, exception messages, repr/str, nor CLI output.

A user with a unique password is created on the private node; everything a run produces is
captured (every logger at DEBUG, exceptions, reprs, the CLI's output) and searched for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kiwipy.aio
from kiwipy.exceptions import ConnectionLost, KiwipyError, UnroutableError
from kiwipy.settings import Settings
from kiwipy.transports.amqp import AmqpTransport
from kiwipy_reliability.faults.node import RabbitNode
from kiwipy_reliability.faults.proxy import TcpProxy

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(120)]

KIWIPY = Path(sys.executable).with_name("kiwipy")


class Evidence:
    """Everything the run showed, to be searched for the password."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, *items: Any) -> None:
        for item in items:
            self.texts.append(item if isinstance(item, str) else f"{item!s}\n{item!r}")

    def add_exception(self, exc: BaseException) -> None:
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:  # the whole chain
            seen.add(id(current))
            self.add(current, *current.args)
            current = current.__cause__ or current.__context__

    def assert_free_of(self, *secrets: str) -> None:
        everything = "\n".join(self.texts)
        for secret in secrets:
            for form in {secret, urllib.parse.quote(secret, safe="")}:
                assert form not in everything, f"the password leaked: {form!r}"


@pytest.fixture
def account(fresh_rabbit_node: RabbitNode) -> Iterator[tuple[str, str]]:
    user = f"secret-user-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    fresh_rabbit_node.ctl("add_user", user, password)
    fresh_rabbit_node.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    yield user, password
    fresh_rabbit_node.ctl("delete_user", user, check=False)


def url_for(user: str, password: str, port: int) -> str:
    return f"amqp://{user}:{password}@127.0.0.1:{port}/"


def echo(_communicator: Any, message: Any) -> Any:
    return message


async def test_password_never_leaks(
    fresh_rabbit_node: RabbitNode,
    account: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library, aiormq included
    user, password = account
    wrong = f"wrong-{uuid.uuid4().hex}"
    evidence = Evidence()
    options: dict[str, Any] = {"testing_mode": True, "connection_timeout": 5.0}
    prefix = f"secrets-{uuid.uuid4().hex[:8]}"
    options.update(message_exchange=f"{prefix}.messages", task_exchange=f"{prefix}.tasks")

    # 1. Success: connect, RPC, task, broadcast; every public object's repr and str.
    with TcpProxy(fresh_rabbit_node.host, fresh_rabbit_node.port) as proxy:
        url = url_for(user, password, proxy.port)
        communicator = await kiwipy.aio.connect(url, reconnect_max_delay=0.5, **options)
        try:
            await communicator.add_rpc_subscriber(echo, "echo")
            assert await (await communicator.rpc_send("echo", "hi")) == "hi"
            await communicator.broadcast_send("news")
            settings = communicator.settings
            evidence.add(communicator, settings, communicator.transport, settings.masked_url)
            evidence.add(communicator.server_properties)

            # 2. The broker goes away under a live connection, and stays away for a while.
            proxy.refuse()
            proxy.cut()
            with pytest.raises(KiwipyError) as caught:
                await asyncio.wait_for(communicator.rpc_send("echo", "x", deadline=1.0), 10)
            evidence.add_exception(caught.value)
            await asyncio.sleep(1.5)  # a few reconnection attempts, logged
            evidence.add(communicator, communicator.transport)
            proxy.accept()
            # Back once the link is up and the endpoint restored (its consumer heals on its own).
            for _ in range(100):
                with contextlib.suppress(UnroutableError, ConnectionLost):
                    if communicator.transport.is_connected:
                        assert await (await communicator.rpc_send("echo", "back")) == "back"
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the RPC endpoint did not come back within 10 s")
        finally:
            await communicator.close()
        evidence.add(communicator, communicator.transport)

    # 3. A wrong password, and a broker that is down: both fail with a masked URL.
    for bad_url in (
        url_for(user, wrong, fresh_rabbit_node.port),
        url_for(user, password, 1),  # nothing listens on port 1
    ):
        transport = AmqpTransport(Settings.from_url(bad_url, **options))
        with pytest.raises(ConnectionLost) as lost:
            await transport.connect()
        evidence.add_exception(lost.value)
        evidence.add(transport, Settings.from_url(bad_url))
        with pytest.raises(ConnectionLost) as lost:
            await kiwipy.aio.connect(bad_url, **options)
        evidence.add_exception(lost.value)
        assert "****" in str(lost.value)

    # 4. The CLI: success, wrong password, broker down; the URL from --url and from the env.
    env = {k: v for k, v in os.environ.items() if k != "KIWIPY_URL"}
    for cli_url in (
        url_for(user, password, fresh_rabbit_node.port),
        url_for(user, wrong, fresh_rabbit_node.port),
        url_for(user, password, 1),
    ):
        for how in ("option", "environment"):
            args = [str(KIWIPY), "status", "--connect-timeout", "5"]
            run_env = dict(env)
            if how == "option":
                args += ["--url", cli_url]
            else:
                run_env["KIWIPY_URL"] = cli_url
            completed = await asyncio.to_thread(
                subprocess.run, args, capture_output=True, text=True, timeout=60, env=run_env
            )
            evidence.add(completed.stdout, completed.stderr)
            assert completed.stdout or completed.stderr  # it said something
            if cli_url.endswith(f":{fresh_rabbit_node.port}/") and password in cli_url:
                assert completed.returncode == 0, completed.stderr

    evidence.add(caplog.text, *(record.getMessage() for record in caplog.records))
    evidence.add(*(str(record.args) for record in caplog.records))
    assert caplog.records, "nothing was logged: the search would prove nothing"
    evidence.assert_free_of(password, wrong)
