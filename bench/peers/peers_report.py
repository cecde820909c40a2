"""The peers run's figures: medians per system, ratios to raw aiormq and to ours, the tables.

Standard library only, and no broker: ``tests/test_bench_peers_smoke.py`` feeds it fake numbers.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Figure:
    """One number per system: ``metric`` of the measurement of ``workload``."""

    name: str
    workload: str
    metric: str
    unit: str
    title: str

    @property
    def lower_is_better(self) -> bool:
        return self.unit == "ms"


FIGURES = (
    Figure("tasks_noreply", "tasks_noreply", "rate_per_s", "/s", "(a) tasks, no results"),
    Figure("tasks_reply", "tasks_reply", "rate_per_s", "/s", "(b) tasks with results"),
    Figure("seq_rate", "seq", "rate_per_s", "/s", "(c) one at a time, rate"),
    Figure("seq_p50_ms", "seq", "p50_ms", "ms", "(c) p50"),
    Figure("seq_p99_ms", "seq", "p99_ms", "ms", "(c) p99"),
)

#: ``{system: {figure: value}}``; ``None`` where the measurement failed or was not made.
Table = dict[str, dict[str, float | None]]
#: ``{figure: {system: {"value", "vs_raw", "vs_ours"}}}`` (the JSON line).
Values = dict[str, dict[str, dict[str, float | None]]]


def medians(samples: Iterable[tuple[str, str, Mapping[str, Any] | None]]) -> Table:
    """``(system, workload, result or None)`` for every run -> the median of each figure."""
    collected: dict[str, dict[str, list[float]]] = {}
    for system, workload, result in samples:
        per_system = collected.setdefault(system, {})
        for figure in FIGURES:
            if figure.workload != workload:
                continue
            values = per_system.setdefault(figure.name, [])
            value = (result or {}).get(figure.metric)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.append(float(value))
    return {
        system: {
            figure.name: (statistics.median(per[figure.name]) if per.get(figure.name) else None)
            for figure in FIGURES
        }
        for system, per in collected.items()
    }


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base`` to 3 decimals; ``None`` if either is missing or ``base`` is 0."""
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 3)


def values(table: Table, systems: Sequence[str], raw: str = "raw", ours: str = "kiwipy") -> Values:
    """Every figure of every system with its ratio to ``raw`` and to ``ours``."""
    out: Values = {}
    for figure in FIGURES:
        base_raw = table.get(raw, {}).get(figure.name)
        base_ours = table.get(ours, {}).get(figure.name)
        out[figure.name] = {}
        for system in systems:
            value = table.get(system, {}).get(figure.name)
            out[figure.name][system] = {
                "value": None if value is None else round(value, 3),
                "vs_raw": ratio(value, base_raw),
                "vs_ours": ratio(value, base_ours),
            }
    return out


def json_line(vals: Values) -> str:
    return json.dumps(vals, sort_keys=False)


# -- tables --------------------------------------------------------------------------------------


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def cell(entry: Mapping[str, float | None], system: str, raw: str, ours: str) -> str:
    """``value (vs raw, vs ours)``; the ratio to itself is left out."""
    ratios = [
        number(entry["vs_raw"]) if system != raw else "=",
        number(entry["vs_ours"]) if system != ours else "=",
    ]
    return f"{number(entry['value'])} ({', '.join(ratios)})"


def rows(
    vals: Values, systems: Sequence[str], notes: Mapping[str, str], raw: str, ours: str
) -> tuple[list[str], list[list[str]]]:
    header = ["system", *(f"{f.title} [{f.unit}]" for f in FIGURES), "results via"]
    body = [
        [
            system,
            *(cell(vals[f.name][system], system, raw, ours) for f in FIGURES),
            notes.get(system, ""),
        ]
        for system in systems
    ]
    return header, body


def text_table(
    vals: Values,
    systems: Sequence[str],
    notes: Mapping[str, str],
    raw: str = "raw",
    ours: str = "kiwipy",
) -> str:
    header, body = rows(vals, systems, notes, raw, ours)
    lines = [header, *body]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in text)


def markdown_table(
    vals: Values,
    systems: Sequence[str],
    notes: Mapping[str, str],
    raw: str = "raw",
    ours: str = "kiwipy",
) -> str:
    header, body = rows(vals, systems, notes, raw, ours)
    lines = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
