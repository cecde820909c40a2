"""Medians over the repetitions, the figures and their ratios, the printed tables."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from plan import IMPLS, Figure, Key, Ratio

#: The headline metric of a measurement, the first of these its result has.
MAIN_METRICS = ("rate_per_s", "p50_ms", "first_reply_s")
RESOURCE_METRICS = ("driver_rss_mb", "worker_rss_mb")
#: CPU over the timed part, per message sent (workers: all of them together).
CPU_METRICS = {"driver_cpu_ms/msg": "driver_cpu_busy_s", "workers_cpu_ms/msg": "worker_cpu_busy_s"}

Figures = dict[str, dict[str, float | None]]


@dataclasses.dataclass(frozen=True)
class Record:
    """One run of one measurement: its result, or the error that stopped it."""

    key: Key
    rep: int
    result: dict[str, Any] | None
    error: str | None = None
    #: Wall time of the whole driver process (start, workers, connect, run, close).
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def medians(records: Iterable[Record]) -> dict[Key, dict[str, float]]:
    """The median of every numeric metric of every measurement, over its successful runs."""
    samples: dict[Key, dict[str, list[float]]] = {}
    for record in records:
        metrics = samples.setdefault(record.key, {})
        for name, value in (record.result or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics.setdefault(name, []).append(float(value))
    return {
        key: {name: statistics.median(values) for name, values in metrics.items()}
        for key, metrics in samples.items()
    }


def _metric(table: dict[Key, dict[str, float]], key: Key | None, metric: str) -> float | None:
    if key is None or key not in table or metric not in table[key]:
        return None
    return round(table[key][metric], 4)


def _ratio(over: float | None, under: float | None) -> float | None:
    if over is None or under is None or under == 0:
        return None
    return round(over / under, 3)


def figure_values(
    figures: Sequence[Figure], ratios: Sequence[Ratio], table: dict[Key, dict[str, float]]
) -> Figures:
    """``{name: {"ours", "raw", "kiwipy09", "vs_raw", "vs_kiwipy09"}}`` (``None``: not measured)."""
    out: Figures = {}
    for figure in figures:
        values = {impl: _metric(table, figure.keys.get(impl), figure.metric) for impl in IMPLS}
        out[figure.name] = {
            **values,
            "vs_raw": _ratio(values["ours"], values["raw"]),
            "vs_kiwipy09": _ratio(values["ours"], values["kiwipy09"]),
        }
    for ratio in ratios:
        values = {
            impl: _ratio(
                _metric(table, ratio.over.get(impl), ratio.metric),
                _metric(table, ratio.under.get(impl), ratio.metric),
            )
            for impl in IMPLS
        }
        out[ratio.name] = {
            **values,
            "vs_raw": _ratio(values["ours"], values["raw"]),
            "vs_kiwipy09": _ratio(values["ours"], values["kiwipy09"]),
        }
    return out


# -- text ------------------------------------------------------------------------------------------


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _render(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [list(header), *map(list, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def figures_table(figures: Sequence[Figure], values: Figures) -> str:
    units = {figure.name: figure.unit for figure in figures}
    columns = {"ours": "ours", "raw": "raw", "kiwipy09": "kiwipy09", "ours/raw": "vs_raw"}
    columns["ours/kiwipy09"] = "vs_kiwipy09"
    header = ("figure", "unit", *columns)
    rows = [
        (name, units.get(name, "ratio"), *(_cell(row[field]) for field in columns.values()))
        for name, row in values.items()
    ]
    return _render(header, rows)


def measurements_table(records: Sequence[Record], table: dict[Key, dict[str, float]]) -> str:
    """Per measurement: runs, the headline metric (median and range), memory and CPU."""
    header = ("measurement", "ok", "metric", "median", "min..max", *RESOURCE_METRICS, *CPU_METRICS)
    rows = []
    for key in dict.fromkeys(record.key for record in records):
        results = [r.result for r in records if r.key == key and r.result is not None]
        runs = sum(1 for record in records if record.key == key)
        metric = next((m for m in MAIN_METRICS if results and m in results[0]), "-")
        values = [float(result[metric]) for result in results if metric in result]
        spread = f"{_cell(min(values))}..{_cell(max(values))}" if values else "-"
        row = table.get(key, {})
        cpu = [_per_message(row.get(name), key.n) for name in CPU_METRICS.values()]
        rows.append(
            (
                key.label,
                f"{len(results)}/{runs}",
                metric,
                _cell(row.get(metric)),
                spread,
                *(_cell(row.get(name)) for name in RESOURCE_METRICS),
                *map(_cell, cpu),
            )
        )
    return _render(header, rows)


def _per_message(seconds: float | None, messages: int) -> float | None:
    return None if seconds is None or not messages else 1000.0 * seconds / messages
