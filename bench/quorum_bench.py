"""Quorum vs classic task queues on RabbitMQ, same workloads, in one run.

    .venv/bin/python bench/quorum_bench.py            # N = 2000, 3 repetitions, medians

On one node a quorum queue still writes its Raft log and fsyncs it; on a cluster it also waits
for a majority of the members. Printed: a table with the ratio quorum / classic, then a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

from local_bench import AMQP_URL, awaited_sends_one_at_a_time, tasks_with_replies_pipelined

FIGURES = {
    "tasks_reply_pipelined_per_s": tasks_with_replies_pipelined,
    "awaited_send_per_s": awaited_sends_one_at_a_time,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--url", default=AMQP_URL)
    options = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {figure: {} for figure in FIGURES}
    kinds = ["classic", "quorum"]
    for rep in range(options.reps):
        for kind in kinds if rep % 2 == 0 else reversed(kinds):
            for figure, measure in FIGURES.items():
                value = asyncio.run(measure(options.url, options.n, task_queue_type=kind))
                results[figure].setdefault(kind, []).append(value)
    medians = {f: {k: statistics.median(v) for k, v in by.items()} for f, by in results.items()}
    print(f"{'figure':<30}{'classic':>12}{'quorum':>12}{'quorum/classic':>16}")
    for figure, value in medians.items():
        ratio = value["quorum"] / value["classic"]
        print(f"{figure:<30}{value['classic']:>12.1f}{value['quorum']:>12.1f}{ratio:>16.2f}")
    print(json.dumps({"n": options.n, "reps": options.reps, "medians": medians}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
