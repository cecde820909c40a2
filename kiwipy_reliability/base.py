"""The interface every reliability scenario follows.

A scenario module defines ``NAME: str`` and ``run(node, scale) -> ScenarioResult``: it gets a
running private :class:`~kiwipy_reliability.faults.RabbitNode` (which it may kill, freeze or
reconfigure) and a :class:`Scale` that picks its counts.
"""

from __future__ import annotations

import dataclasses
import uuid

__all__ = ["STANDARD_FIGURES", "Scale", "ScenarioResult", "unique_name"]

#: Figures aggregated over all scenarios: counts are summed, times (``_s``) take the maximum.
STANDARD_FIGURES = (
    "lost",
    "duplicated",
    "hung_futures",
    "redelivery_p99_s",
    "recovery_s",
    "malformed_crashes",
)

_SCALES = ("test", "default", "full")


@dataclasses.dataclass
class Scale:
    """The counts of one run: ``"test"`` (seconds, for pytest), ``"default"``, ``"full"``."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in _SCALES:
            raise ValueError(f"unknown scale {self.name!r}; expected one of {_SCALES}")

    def pick(self, test: int, default: int, full: int) -> int:
        return {"test": test, "default": default, "full": full}[self.name]

    def pick_float(self, test: float, default: float, full: float) -> float:
        return {"test": test, "default": default, "full": full}[self.name]


@dataclasses.dataclass
class ScenarioResult:
    """What one scenario measured.

    ``figures`` holds the scenario's own figures plus any of :data:`STANDARD_FIGURES`.
    """

    name: str
    figures: dict[str, float | int]
    notes: list[str] = dataclasses.field(default_factory=list)


def unique_name(prefix: str) -> str:
    """A fresh name for a queue or exchange, so scenarios never share broker objects."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
