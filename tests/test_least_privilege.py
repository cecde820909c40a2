"""Least privilege: a user missing one permission gets one clear error, and no reconnect loop.

The permission sets are those of ``docs/security.md``, on a private node.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kiwipy.aio
from kiwipy.exceptions import BrokerError, ConnectionLost
from kiwipy_reliability.faults.node import RabbitNode

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(120)]

PREFIX = "lp"  # exchanges lp.messages / lp.tasks, task queue lp.tasks
#: docs/security.md, "RPC caller", with the prefix ``lp``.
RPC_CALLER = (
    r"^lp\.(messages|tasks)$|^lp\.messages-reply-.*",
    r"^lp\.messages$|^lp\.messages-reply-.*",
    r"^lp\.(messages|tasks)$|^lp\.messages-reply-.*",
)
RPC_SERVER = (
    r"^lp\.messages(\.rpc\..*)?$",
    r"^lp\.messages(\.rpc\..*)?$|^amq\.default$",
    r"^lp\.messages(\.rpc\..*)?$",
)
TASK_SENDER = (
    r"^lp\.(messages|tasks)$|^lp\.messages-reply-.*",
    r"^lp\.tasks$|^lp\.messages-reply-.*",
    r"^lp\.(messages|tasks)$|^lp\.messages-reply-.*",
)
WORKER = (r"^lp\.tasks$", r"^lp\.tasks$|^amq\.default$", r"^lp\.tasks$")
LISTENER = (r"^lp\.messages$|^broadcast-.*", r"^broadcast-.*", r"^lp\.messages$|^broadcast-.*")


@pytest.fixture
def restricted(fresh_rabbit_node: RabbitNode) -> Iterator[Any]:
    made: list[str] = []

    def make(configure: str, write: str, read: str) -> str:
        user = f"lp-{uuid.uuid4().hex[:8]}"
        password = uuid.uuid4().hex
        fresh_rabbit_node.ctl("add_user", user, password)
        fresh_rabbit_node.ctl("set_permissions", "-p", "/", user, configure, write, read)
        made.append(user)
        return f"amqp://{user}:{password}@127.0.0.1:{fresh_rabbit_node.port}/"

    yield make
    for user in made:
        fresh_rabbit_node.ctl("delete_user", user, check=False)


def connections_of(node: RabbitNode, url: str) -> int:
    """The user's connections to the node (``url``: the user's URL)."""
    user = urllib.parse.urlsplit(url).username
    listed = node.ctl("list_connections", "-q", "user").split()
    return listed.count(user or "")


async def connect(url: str) -> Any:
    return await kiwipy.aio.connect(
        url,
        message_exchange=f"{PREFIX}.messages",
        task_exchange=f"{PREFIX}.tasks",
        task_queue=f"{PREFIX}.tasks",
        reconnect_max_delay=0.5,
    )


def echo(_communicator: Any, message: Any) -> Any:
    return message


async def test_the_documented_permissions_suffice(restricted: Any) -> None:
    server = await connect(restricted(*RPC_SERVER))
    caller = await connect(restricted(*RPC_CALLER))
    sender = await connect(restricted(*TASK_SENDER))
    worker = await connect(restricted(*WORKER))
    listener = await connect(restricted(*LISTENER))
    try:
        heard: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_broadcast(_c: Any, body: Any, *_: Any) -> None:
            if not heard.done():
                heard.set_result(body)

        await listener.add_broadcast_subscriber(on_broadcast)
        await server.add_rpc_subscriber(echo, "svc")
        assert await (await caller.rpc_send("svc", 42)) == 42
        await server.broadcast_send("hello")  # the RPC server may publish to the exchange
        assert await asyncio.wait_for(heard, 10) == "hello"
        await worker.add_task_subscriber(lambda _c, task: task * 2)
        assert await asyncio.wait_for(await sender.task_send(21), 10) == 42
    finally:
        for communicator in (server, caller, sender, worker, listener):
            await communicator.close()


async def test_a_missing_permission_is_one_clear_error_and_no_reconnect_loop(
    fresh_rabbit_node: RabbitNode, restricted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configure, write, _read = RPC_CALLER
    # The RPC caller without read permission on its reply queue: it cannot consume replies.
    url = restricted(configure, write, r"^lp\.(messages|tasks)$")
    caller = await connect(url)
    connections = connections_of(fresh_rabbit_node, url)
    try:
        with pytest.raises(BrokerError) as caught:
            await caller.rpc_send("svc", 1)
        text = str(caught.value)
        assert "ACCESS_REFUSED" in text
        assert "access to queue 'lp.messages-reply-" in text  # names what was refused
        assert "refused for user" in text
        await asyncio.sleep(2.0)  # time for a reconnect loop to show, were there one
        assert caller.transport.is_connected  # a channel error, not a connection loss
        assert connections_of(fresh_rabbit_node, url) == connections >= 1  # none came or went
        reconnects = [r for r in caplog.records if "econnect" in r.getMessage()]
        assert reconnects == []
        with pytest.raises(BrokerError, match="ACCESS_REFUSED"):  # again: same clear error
            await caller.rpc_send("svc", 2)
    finally:
        await caller.close()


async def test_no_access_to_the_vhost_fails_at_connect(
    fresh_rabbit_node: RabbitNode, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"lp-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    fresh_rabbit_node.ctl("add_user", user, password)  # no permissions at all
    try:
        url = f"amqp://{user}:{password}@127.0.0.1:{fresh_rabbit_node.port}/"
        with pytest.raises(ConnectionLost) as caught:
            await connect(url)
        # aiormq 7.2 reports the broker's NOT_ALLOWED only as an unexpected Connection.Close
        # frame (its reply text is lost), so only "Cannot connect" is certain here.
        assert "Cannot connect" in str(caught.value)
        assert password not in str(caught.value)
        await asyncio.sleep(1.0)
        assert connections_of(fresh_rabbit_node, url) == 0
    finally:
        fresh_rabbit_node.ctl("delete_user", user, check=False)
