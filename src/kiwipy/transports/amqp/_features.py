"""What the broker can do, by its version, and the policy kiwipy follows for each feature."""

from __future__ import annotations

import itertools
import logging
from typing import Any

from kiwipy.settings import Settings

__all__ = (
    "MAX_CONSUMER_TIMEOUT_MS",
    "BrokerFeatures",
    "default_consumer_timeout",
    "parse_version",
    "supports_consumer_timeout",
)

_LOGGER = logging.getLogger("kiwipy.transports.amqp")


#: The largest consumer timeout RabbitMQ accepts (a 32-bit count of milliseconds, ~24.8 days);
#: used for ``consumer_timeout="none"``.
MAX_CONSUMER_TIMEOUT_MS = 2**31 - 1


def parse_version(text: str) -> tuple[int, ...]:
    """``"3.12.1"`` -> ``(3, 12, 1)``; what does not parse is dropped (``"4.0.0-rc.1"``)."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def supports_consumer_timeout(version: tuple[int, ...]) -> bool:
    """Whether ``x-consumer-timeout`` works as a consumer argument (RabbitMQ 3.11.15+)."""
    return version >= (3, 11, 15)


def default_consumer_timeout(version: tuple[int, ...]) -> float | None:
    """The default ``consumer_timeout`` of a RabbitMQ version, in seconds."""
    if version >= (3, 8, 17):
        return 1800.0
    if version >= (3, 8, 15):
        return 900.0
    return None


class BrokerFeatures:
    """The features of the broker at the other end of the current connection.

    Learnt again on each connection: in a rolling upgrade, the next node may run another version.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.version: tuple[int, ...] = ()
        self._warned_consumer_timeout = False

    def learn(self, server_properties: dict[str, Any]) -> None:
        self.version = parse_version(str(server_properties.get("version", "")))

    @property
    def consumer_timeout(self) -> float | None:
        """Seconds a delivery may stay unacknowledged before the broker takes it back, as far
        as the client can know: the per-consumer value kiwipy sets where the broker supports
        it, else the version's default (the broker's config may differ); ``None``: no limit."""
        wanted = self._settings.consumer_timeout
        if wanted is not None and supports_consumer_timeout(self.version):
            return None if wanted == "none" else float(wanted)
        return default_consumer_timeout(self.version)

    def consumer_arguments(self) -> dict[str, Any] | None:
        """The task consumers' arguments: the per-consumer timeout, where the broker has it."""
        wanted = self._settings.consumer_timeout
        if wanted is None:
            return None
        if not supports_consumer_timeout(self.version):
            self._warn_no_consumer_timeout(wanted)
            return None
        milliseconds = MAX_CONSUMER_TIMEOUT_MS if wanted == "none" else int(float(wanted) * 1000)
        return {"x-consumer-timeout": min(milliseconds, MAX_CONSUMER_TIMEOUT_MS)}

    def _warn_no_consumer_timeout(self, wanted: float | str) -> None:
        if self._warned_consumer_timeout:
            return
        self._warned_consumer_timeout = True
        _LOGGER.warning(
            "RabbitMQ %s cannot set a consumer timeout per consumer (3.11.15 and later "
            "can); consumer_timeout=%r is ignored. Set it on the broker instead: "
            "consumer_timeout = <milliseconds> in rabbitmq.conf",
            ".".join(map(str, self.version)) or "(unknown version)",
            wanted,
        )
