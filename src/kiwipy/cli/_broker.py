"""Queue counts (ready / unacknowledged / consumers), which the AMQP client cannot ask for.

kiwipy's transport has no API for them, so the CLI asks the broker's operators' tools: the
management HTTP API on port 15672 when it answers, else ``rabbitmqctl`` when it is installed
on this machine and the URL points at this machine. Otherwise the counts are unavailable.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from kiwipy.settings import Settings

__all__ = ("QueueCounts", "queue_counts")

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
_HTTP_TIMEOUT = 1.5
_CTL_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class QueueCounts:
    name: str
    ready: int | None
    unacknowledged: int | None
    consumers: int | None
    exists: bool = True
    #: Messages per second published to the queue and acknowledged from it (management API).
    rate_in: float | None = None
    rate_out: float | None = None


@dataclasses.dataclass(frozen=True)
class CountsReport:
    source: str | None  # "management API", "rabbitmqctl" or None when unavailable
    queues: list[QueueCounts]
    note: str = ""


def _vhost(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def _from_management(url: str, names: list[str]) -> list[QueueCounts] | None:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    vhost = urllib.parse.quote(_vhost(url), safe="")
    found = []
    for name in names:
        address = f"http://{host}:15672/api/queues/{vhost}/{urllib.parse.quote(name, safe='')}"
        request = urllib.request.Request(address, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:  # noqa: S310
                data = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                found.append(QueueCounts(name, None, None, None, exists=False))
                continue
            return None
        except (OSError, ValueError):
            return None
        stats = data.get("message_stats") or {}
        found.append(
            QueueCounts(
                name,
                data.get("messages_ready"),
                data.get("messages_unacknowledged"),
                data.get("consumers"),
                rate_in=_rate(stats, "publish_details"),
                rate_out=_rate(stats, "ack_details"),
            )
        )
    return found


def _rate(stats: dict[str, Any], key: str) -> float | None:
    rate = (stats.get(key) or {}).get("rate")
    return float(rate) if isinstance(rate, (int, float)) else None


def _from_rabbitmqctl(url: str, names: list[str]) -> list[QueueCounts] | None:
    ctl = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin:/sbin")
    parts = urllib.parse.urlsplit(url)
    if ctl is None or (parts.hostname or "") not in _LOCAL_HOSTS or (parts.port or 5672) != 5672:
        return None
    command = [ctl, "list_queues", "-q", "-p", _vhost(url), "--formatter", "json"]
    command += ["name", "messages_ready", "messages_unacknowledged", "consumers"]
    try:
        completed = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, timeout=_CTL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    try:
        rows: list[dict[str, Any]] = json.loads(completed.stdout or "[]")
    except ValueError:
        return None
    by_name = {row.get("name"): row for row in rows}
    found = []
    for name in names:
        row = by_name.get(name)
        if row is None:
            found.append(QueueCounts(name, None, None, None, exists=False))
        else:
            found.append(
                QueueCounts(
                    name,
                    row.get("messages_ready"),
                    row.get("messages_unacknowledged"),
                    row.get("consumers"),
                )
            )
    return found


def _from_local(url: str, names: list[str]) -> list[QueueCounts]:
    """Counts from the local broker itself (its ``stats`` request; declares nothing)."""
    import asyncio

    from kiwipy.settings import Settings
    from kiwipy.transports.local import LocalTransport

    async def ask() -> dict[str, dict[str, int]]:
        transport = LocalTransport(Settings.from_url(url))
        await transport.connect()
        try:
            return await transport.queue_stats()
        finally:
            await transport.close()

    stats = asyncio.run(ask())
    found = []
    for name in names or sorted(stats):
        row = stats.get(name)
        if row is None:
            found.append(QueueCounts(name, None, None, None, exists=False))
        else:
            found.append(QueueCounts(name, row["ready"], row["unacked"], row["consumers"]))
    return found


def queue_counts(url: str, names: Iterable[str]) -> CountsReport:
    """Counts of the queues ``names`` on the broker at ``url`` (an AMQP URL or a failover
    list of them)."""
    wanted = list(dict.fromkeys(names))
    if urllib.parse.urlsplit(url).scheme == "local":
        return CountsReport("the local broker", _from_local(url, wanted))
    if urllib.parse.urlsplit(url).scheme not in ("amqp", "amqps"):
        return CountsReport(None, [], "the in-memory transport has no counts to show")
    settings = Settings.from_url(url)  # a failover list: ask its nodes in turn, complete
    addresses = [settings.url, *settings.failover_urls]
    for address in addresses:
        counts = _from_management(address, wanted)
        if counts is not None:
            return CountsReport("management API", counts)
    for address in addresses:
        counts = _from_rabbitmqctl(address, wanted)
        if counts is not None:
            return CountsReport("rabbitmqctl", counts)
    return CountsReport(
        None,
        [],
        "counts unavailable: the management API does not answer on port 15672 and "
        "rabbitmqctl is not available for this broker "
        "(enable it: rabbitmq-plugins enable rabbitmq_management)",
    )
