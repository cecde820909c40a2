"""Plot a peers run: throughput and latency per system, from its JSON line.

    bench/.venv-peers/tools/bin/python bench/peers/plot.py --json run.json --out peers.png

Runs under the tools venv (matplotlib); ``run_peers.py`` calls it with ``--plot``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RATES = (("tasks_noreply", "(a) no results"), ("tasks_reply", "(b) with results"))
RATES_SEQ = (("seq_rate", "(c) one at a time"),)
LATENCIES = (("seq_p50_ms", "p50"), ("seq_p99_ms", "p99"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    values = json.loads(args.json.read_text())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(values["tasks_reply"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    _bars(left, values, systems, RATES + RATES_SEQ, "%.0f")
    left.set_ylabel("messages / s (higher is better)")
    left.set_title("throughput, N tasks, 1 worker process")
    _bars(right, values, systems, LATENCIES, "%.2f")
    right.set_ylabel("ms (lower is better)")
    right.set_title("(c) one task at a time: round trip")
    if args.title:
        fig.suptitle(args.title, fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


def _bars(axes, values, systems, series, fmt) -> None:  # type: ignore[no-untyped-def]
    width = 0.8 / len(series)
    for k, (figure, label) in enumerate(series):
        heights = [values[figure][system]["value"] or 0.0 for system in systems]
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(systems))]
        bars = axes.bar(positions, heights, width, label=label)
        axes.bar_label(bars, fmt=fmt, fontsize=7, padding=1)
    axes.set_xticks(range(len(systems)), systems, rotation=20)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)


if __name__ == "__main__":
    main()
