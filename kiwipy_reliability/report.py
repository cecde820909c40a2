"""Aggregate scenario figures into one summary, and print them as a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kiwipy_reliability.base import STANDARD_FIGURES, ScenarioResult

__all__ = ["aggregate", "format_table", "passed"]


def aggregate(
    results: Sequence[ScenarioResult],
    unavailable: Sequence[str] = (),
    errors: Mapping[str, str] | None = None,
    target_misses: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The summary: counts summed and times (``*_s``) maximised over the scenarios that
    measured them (``None`` where none did), plus ``scenarios``: every scenario's figures, and
    ``target_misses``: the targets each (cluster) scenario missed."""
    summary: dict[str, Any] = {}
    for key in STANDARD_FIGURES:
        values = [r.figures[key] for r in results if key in r.figures]
        if not values:
            summary[key] = None
        elif key.endswith("_s"):
            summary[key] = max(values)
        else:
            summary[key] = sum(values)
    summary["scenarios"] = {r.name: dict(r.figures) for r in results}
    summary["notes"] = {r.name: list(r.notes) for r in results if r.notes}
    summary["not_available"] = list(unavailable)
    summary["errors"] = dict(errors or {})
    summary["target_misses"] = {name: list(m) for name, m in (target_misses or {}).items() if m}
    return summary


def passed(summary: Mapping[str, Any]) -> bool:
    """No confirmed task lost, no future left hanging, no worker crashed by bad input, no
    scenario that failed to run, and no missed target."""
    return (
        not summary.get("lost")
        and not summary.get("hung_futures")
        and not summary.get("malformed_crashes")
        and not summary.get("errors")
        and not summary.get("target_misses")
    )


def format_table(results: Sequence[ScenarioResult]) -> str:
    """One row per figure, one column per scenario."""
    if not results:
        return "(no scenario ran)"
    keys: list[str] = [k for k in STANDARD_FIGURES if any(k in r.figures for r in results)]
    for result in results:
        keys.extend(k for k in result.figures if k not in keys)
    header = ["figure", *(r.name for r in results)]
    rows = [header]
    for key in keys:
        rows.append([key, *(_cell(r.figures.get(key)) for r in results)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)
