"""kiwipy side by side with raw aiormq, Celery, dramatiq, FastStream and taskiq, in one run.

    .venv/bin/python bench/peers/run_peers.py --setup --quick   # make missing peer venvs first
    .venv/bin/python bench/peers/run_peers.py --quick           # about 4 minutes
    .venv/bin/python bench/peers/run_peers.py --tiny            # well under a minute
    .venv/bin/python bench/peers/run_peers.py --quick --kiwipy-url local://...  # + kiwipy-local

Workloads, each with one worker process: (a) N tasks without results, all in flight; (b) N
tasks with results, all in flight; (c) one task at a time (send, wait for its result, repeat):
p50, p99 and rate. Every measurement is a driver process of one system (plus its worker
process) on fresh broker names, deleted at the end; the systems of a workload run one after the
other, their order rotating from one repetition to the next; figures are medians. Prints the
table (each value with its ratio to raw aiormq and to ours), the measurements, and as the last
line one JSON object ``{figure: {system: {"value", "vs_raw", "vs_ours"}}}``; writes a PNG plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import _bench_path  # noqa: F401 (bench/ on sys.path)
import broker
import peers_report
import plan
import report
import run
import systems
from common import DEFAULT_URL, Names
from systems import System

HERE = Path(__file__).resolve().parent
DEFAULT_PLOT = HERE / "peers.png"
#: Each system's driver pattern for each workload: ``(pattern, no_reply)``.
PATTERNS = {
    "raw": {"tasks_noreply": ("tasks_pipelined", True), "tasks_reply": ("tasks_pipelined", False)},
    "ours": {"tasks_noreply": ("tasks_async", True), "tasks_reply": ("tasks_async", False)},
    "peer": {"tasks_noreply": ("tasks", True), "tasks_reply": ("tasks", False)},
}
WORKLOADS = ("tasks_noreply", "tasks_reply", "seq")
#: How each system gets its results back (the table's last column).
RESULTS_VIA = {
    "raw": "AMQP reply queue",
    "ours": "AMQP reply queue",
    "celery": "AMQP (rpc://)",
    "dramatiq": "Redis (no AMQP backend)",
    "faststream": "AMQP reply-to",
    "taskiq": "Redis, polled (no AMQP backend)",
}


def results_via(system: System) -> str:
    """The table's last column for ``system``: ours names its transport's way."""
    if system.kind == "ours" and system.url.startswith("local:"):
        return "local broker reply address"
    return RESULTS_VIA.get(system.name, RESULTS_VIA.get(system.kind, ""))


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    n: int
    calls: int
    reps: int
    warmup: int


MODES = {
    "tiny": Mode("tiny", n=40, calls=20, reps=1, warmup=2),
    "quick": Mode("quick", n=2000, calls=200, reps=3, warmup=5),
    "full": Mode("full", n=5000, calls=1000, reps=5, warmup=20),
}


class PeerNames(Names):
    """The measurement's names plus the queues the peers derive from them."""

    def queues(self) -> list[str]:
        derived = [".DQ", ".XQ", ".dead"]  # dramatiq's delay and dead-letter, taskiq's dead-letter
        prefix = self.task_queue.rsplit(".", 1)[0]
        return [*super().queues(), *(self.task_queue + s for s in derived), f"{prefix}.replies"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    for mode in MODES:
        size.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    parser.set_defaults(mode="quick")
    parser.add_argument("--setup", action="store_true", help="make missing peer venvs first")
    parser.add_argument("--url", default=os.environ.get("KIWIPY_TEST_AMQP_URL") or DEFAULT_URL)
    parser.add_argument(
        "--kiwipy-url",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="a transport of ours to measure (repeatable; default: --url as 'kiwipy'); "
        "NAME defaults to kiwipy-<scheme>, e.g. local://... is kiwipy-local",
    )
    parser.add_argument(
        "--peers", default=",".join(systems.PEERS), help="comma-separated peers to measure"
    )
    parser.add_argument("--reps", type=int, help="repetitions (default: the mode's)")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG to write")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out", type=Path, help="append every run's raw result to this JSONL")
    parser.add_argument("--list", action="store_true", help="print the plan and stop")
    return parser.parse_args(argv)


def keys(system: System, workload: str, mode: Mode) -> plan.Key:
    """The measurement of ``workload`` by ``system`` (``plan.Key.impl`` is the system name)."""
    if workload == "seq":
        return plan.Key(system.name, "task_latency", calls=mode.calls)
    pattern, no_reply = PATTERNS[system.kind][workload]
    return plan.Key(system.name, pattern, n=mode.n, no_reply=no_reply)


@dataclasses.dataclass(frozen=True)
class PeersRunner(run.Runner):
    """``run.Runner`` (one driver process per measurement), each system its own interpreter."""

    systems: tuple[System, ...] = ()

    def command(self, key: plan.Key, rep: int, names: Names) -> list[str]:
        system = next(s for s in self.systems if s.name == key.impl)
        command = [system.python, str(system.script), "driver", *key.argv(self.mode.warmup)]
        return [*command, "--names", names.to_json(), "--url", system.url]

    def run_workloads(self, reps: int) -> list[tuple[str, report.Record]]:
        """Every workload, ``reps`` times round robin, the systems' order rotating."""
        records: list[tuple[str, report.Record]] = []
        used: list[Names] = []
        total = reps * len(WORKLOADS) * len(self.systems)
        try:
            for rep in range(reps):
                for workload in WORKLOADS:
                    shift = rep % len(self.systems)
                    for system in self.systems[shift:] + self.systems[:shift]:
                        key = keys(system, workload, self.mode)
                        used.append(PeerNames.fresh())
                        record = self.measure(key, rep, used[-1])
                        records.append((workload, record))
                        outcome = record.error or run._headline(record)
                        run.log(f"[{len(records)}/{total}] rep {rep + 1}: {key.label}: {outcome}")
        finally:
            broker.cleanup(self.url, used)
        return records


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mode = MODES[args.mode]
    if args.reps:
        mode = dataclasses.replace(mode, reps=args.reps)
    peers = tuple(p for p in args.peers.split(",") if p)
    if args.setup:
        systems.setup((*peers, systems.TOOLS))
    ours = [systems.ours_name(spec) for spec in args.kiwipy_url] or [("kiwipy", args.url)]
    chosen, missing = systems.systems(args.url, ours, peers)
    for peer in missing:
        run.log(f"{peer}: no venv at {systems.VENVS / peer} (run with --setup): not measured")
    if args.list:
        for workload in WORKLOADS:
            labels = [keys(system, workload, mode).label for system in chosen]
            print(f"{mode.reps} x " + " | ".join(labels))
        return 0
    run.compile_ours()
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    runner = PeersRunner(mode, args.url, {}, None, tuple(chosen))  # type: ignore[arg-type]
    records = runner.run_workloads(mode.reps)
    elapsed = time.monotonic() - started
    if args.out:
        with args.out.open("a") as out:
            out.writelines(json.dumps(record.to_json()) + "\n" for _, record in records)
    names = [system.name for system in chosen]
    table = peers_report.medians((r.key.impl, w, r.result) for w, r in records)
    values = peers_report.values(table, names, ours=ours[0][0])
    notes = {s.name: results_via(s) for s in chosen}
    summary = _summary(mode, names, elapsed, load_at_start)
    print(summary)
    print(peers_report.text_table(values, names, notes, ours=ours[0][0]))
    print()
    print(report.measurements_table([r for _, r in records], report.medians(r for _, r in records)))
    if not args.no_plot:
        _plot(values, args.plot, summary.splitlines()[0])
    print(peers_report.json_line(values))
    failed = [r for _, r in records if r.error]
    for record in failed:
        run.log(f"FAILED {record.key.label} (rep {record.rep + 1}): {record.error}")
    return 1 if failed else 0


def _summary(mode: Mode, names: list[str], elapsed: float, load: float) -> str:
    loads = f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    return (
        f"peers bench, {mode.name} mode: N = {mode.n}, {mode.calls} calls one at a time; "
        f"{mode.reps} reps, medians; {elapsed:.0f} s; {loads}; {os.cpu_count()} CPUs shared "
        "with the broker\n"
        f"systems: {', '.join(names)}. Each cell: value (value / raw, value / ours); rates "
        "higher is better, ms lower is better"
    )


def _plot(values: peers_report.Values, path: Path, title: str) -> None:
    python = systems.existing_python(systems.TOOLS)
    if python is None:
        run.log(f"no plot: no {systems.VENVS / systems.TOOLS} (run with --setup)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json") as data:
        json.dump(values, data)
        data.flush()
        command = [str(python), str(HERE / "plot.py"), "--json", data.name, "--out", str(path)]
        done = subprocess.run(  # noqa: S603 (our own script)
            [*command, "--title", title], capture_output=True, text=True, timeout=120, check=False
        )
    if done.returncode != 0:
        run.log(f"plot failed: {done.stderr.strip()[-500:]}")
    else:
        run.log(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
