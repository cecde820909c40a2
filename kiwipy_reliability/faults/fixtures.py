"""pytest fixtures for fault-injection tests against a private RabbitMQ node.

Enable them with ``pytest_plugins = ["kiwipy_reliability.faults.fixtures"]`` in a
``conftest.py`` (or import them into a test module).

* ``rabbit_node`` (session): one private node for the whole run, started lazily.
* ``fresh_rabbit_node``: that node, guaranteed up (and thawed) before the test; a test
  may kill or freeze it, and runtime settings it changed are undone afterwards.
* ``tcp_proxy``: a :class:`~kiwipy_reliability.faults.TcpProxy` to the node.

Without RabbitMQ installed the tests are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from kiwipy_reliability.faults.node import RabbitNode
from kiwipy_reliability.faults.proxy import TcpProxy

__all__ = ["fresh_rabbit_node", "rabbit_node", "tcp_proxy"]

START_TIMEOUT = 120.0


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a private RabbitMQ node is required)", pytrace=False)
    pytest.skip(reason)


def ensure_running(node: RabbitNode) -> None:
    """Bring ``node`` back to a usable state: thawed and running."""
    if node.is_frozen:
        node.thaw()
    if not node.is_running():
        node.restart(timeout=START_TIMEOUT)


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[RabbitNode]:
    """A private RabbitMQ node shared by the session; removed at the end."""
    try:
        node = RabbitNode()
    except RuntimeError as exc:
        _unavailable(str(exc))
    try:
        node.start(timeout=START_TIMEOUT)
        yield node
    finally:
        node.cleanup()


@pytest.fixture
def fresh_rabbit_node(rabbit_node: RabbitNode) -> Iterator[RabbitNode]:
    """The session's node, running before the test and restored after it."""
    ensure_running(rabbit_node)
    yield rabbit_node
    ensure_running(rabbit_node)
    rabbit_node.reset_env()


@pytest.fixture
def tcp_proxy(fresh_rabbit_node: RabbitNode) -> Iterator[TcpProxy]:
    """A TCP proxy to the private node; ``tcp_proxy.url_for(node.url)`` goes through it."""
    with TcpProxy(fresh_rabbit_node.host, fresh_rabbit_node.port) as proxy:
        yield proxy
