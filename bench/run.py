"""Benchmark our kiwipy side by side with raw aiormq and kiwipy 0.9 on one broker.

    python bench/run.py --quick                  # < 3 minutes
    python bench/run.py --full                   # every pattern at N = 500, 2000, 8000
    python bench/run.py --tiny                   # seconds (the smoke test)
    python bench/run.py --quick --with-kiwipy09  # make bench/.venv-kiwipy09 first if missing
    python bench/run.py --quick --only local     # only local:// beside RabbitMQ

Every measurement is a driver process (plus its worker processes) of one implementation; the
implementations of a figure run one after the other, their order rotating from one repetition
to the next. Prints the figures (medians over the repetitions, with ours/raw and ours/kiwipy09
ratios), the measurements with their memory and CPU, and as the last line one JSON object
mapping each figure name to ``{"ours", "raw", "kiwipy09", "vs_raw", "vs_kiwipy09"}``.
Then (unless ``--no-local``) our kiwipy on the local broker beside the same on RabbitMQ, in the
same run (``bench/local_bench.py``: durable tasks with replies pipelined, one awaited send at a
time, RPC p50, cold connect to first reply with the broker's spawn); its figures are in the
JSON object too, as ``local_<figure>: {"local", "rabbitmq", "local/rabbitmq"}``.
Progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import broker
import local_bench
import plan
import report
import venv09
from common import DEFAULT_URL, RESULT_PREFIX, Names

HERE = Path(__file__).resolve().parent
#: What ``--quick`` is sized for on this 2-core machine (it takes longer when others load it).
QUICK_BUDGET_S = 180.0
#: A measurement that takes longer than this (plus a little per message) has hung.
DRIVER_TIMEOUT_S = 120.0
#: local:// beside RabbitMQ: (N, repetitions) per mode.
LOCAL_SIZES = {"tiny": (40, 1), "quick": (1000, 3), "full": (2000, 5)}
LOCAL_PREFIX = "local_"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    for mode in plan.MODES:
        size.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    parser.set_defaults(mode="quick")
    parser.add_argument(
        "--with-kiwipy09",
        action="store_true",
        help=f"make {venv09.VENV} if missing (never in --tiny); without it, it is used if there",
    )
    parser.add_argument("--url", default=os.environ.get("KIWIPY_TEST_AMQP_URL") or DEFAULT_URL)
    parser.add_argument("--reps", type=int, help="repetitions (default: the mode's)")
    parser.add_argument("--only", help="measure only the figures whose name matches this regex")
    parser.add_argument("--list", action="store_true", help="print the plan and stop")
    parser.add_argument("--out", type=Path, help="append every run's raw result to this JSONL")
    parser.add_argument("--no-local", action="store_true", help="skip local:// beside RabbitMQ")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each driver and its workers with py-spy into DIR (see profile_top.py)",
    )
    return parser.parse_args(argv)


def interpreters(args: argparse.Namespace) -> dict[str, str]:
    """The interpreter of each implementation that can be measured."""
    pythons = {"ours": sys.executable, "raw": sys.executable}
    kiwipy09 = venv09.existing_python()
    if kiwipy09 is None and args.with_kiwipy09:
        if args.mode == "tiny":
            log("--tiny never makes the kiwipy 0.9 environment: kiwipy 0.9 not measured")
        else:
            kiwipy09 = venv09.create()
    if kiwipy09 is not None:
        pythons["kiwipy09"] = str(kiwipy09)
    return pythons


def compile_ours() -> None:
    """Write our package's bytecode, as installing a wheel does (pip compiles it).

    kiwipy 0.9 and aiormq come from wheels with their bytecode written at install; ours is an
    editable install, which Python compiles at each import when it may not write bytecode
    (``PYTHONDONTWRITEBYTECODE``, set on some machines): about 30 ms more per process start.
    """
    import kiwipy

    package = Path(kiwipy.__file__).parent
    if not compileall.compile_dir(str(package), quiet=1):
        log(f"could not compile {package}: import times of ours include compiling")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Runner:
    """How to run measurements: mode, broker, interpreters, and whether to profile."""

    mode: plan.Mode
    url: str
    pythons: dict[str, str]
    profile_dir: Path | None = None

    def command(self, key: plan.Key, rep: int, names: Names) -> list[str]:
        script = str(HERE / plan.SCRIPTS[key.impl])
        command = [self.pythons[key.impl], script, "driver", *key.argv(self.mode.warmup)]
        command += ["--names", names.to_json(), "--url", self.url]
        if self.profile_dir is None:
            return command
        output = self.profile_dir / f"{key.label.replace(' ', '_')}-{rep + 1}.txt"
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        record = [spy, "record", "--subprocesses", "--rate", "250", "--format", "raw"]
        return [*record, "--output", str(output), "--", *command]

    def measure(self, key: plan.Key, rep: int, names: Names) -> report.Record:
        """Run one driver process, on the broker objects named ``names``."""
        timeout = DRIVER_TIMEOUT_S + (key.n * max(key.subs, 1) + key.calls) / 50.0
        start = time.monotonic()
        try:
            done = subprocess.run(  # noqa: S603 (our own scripts)
                self.command(key, rep, names),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return report.Record(key, rep, None, f"no result within {timeout:g} s")
        wall = round(time.monotonic() - start, 3)
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if done.returncode != 0 or not lines:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return report.Record(key, rep, None, f"exit {done.returncode}: {tail}", wall)
        return report.Record(key, rep, json.loads(lines[-1][len(RESULT_PREFIX) :]), None, wall)

    def run_all(self, groups: list[plan.Group]) -> list[report.Record]:
        """Every group its ``reps`` times, round robin; inside a group the order rotates.

        Each measurement gets fresh broker names; they are all deleted at the end (not between
        measurements: that would only add to the run's time).
        """
        records: list[report.Record] = []
        used: list[Names] = []
        total = sum(len(group.keys) * group.reps for group in groups)
        try:
            for rep in range(max(group.reps for group in groups)):
                for group in (group for group in groups if rep < group.reps):
                    shift = rep % len(group.keys)
                    for key in group.keys[shift:] + group.keys[:shift]:
                        used.append(Names.fresh())
                        records.append(self.measure(key, rep, used[-1]))
                        outcome = records[-1].error or _headline(records[-1])
                        log(f"[{len(records)}/{total}] rep {rep + 1}: {key.label}: {outcome}")
        finally:
            broker.cleanup(self.url, used)
        return records


def _headline(record: report.Record) -> str:
    result = record.result or {}
    metric = next((m for m in report.MAIN_METRICS if m in result), None)
    return f"{metric} {result[metric]}" if metric else "ok"


def select(
    args: argparse.Namespace, mode: plan.Mode, impls: tuple[str, ...]
) -> tuple[list[plan.Figure], list[plan.Ratio], list[plan.Group]]:
    """The figures and ratios to report (``--only``) and the measurement groups they need."""
    figures = plan.figures(mode)
    ratios = plan.ratios(mode)
    if args.only:
        figures = [figure for figure in figures if re.search(args.only, figure.name)]
        ratios = [ratio for ratio in ratios if re.search(args.only, ratio.name)]
    return figures, ratios, plan.groups(figures, ratios, impls, mode)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mode = plan.MODES[args.mode]
    if args.reps:
        mode = dataclasses.replace(mode, reps=args.reps, solo_reps=args.reps)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    pythons = interpreters(args)
    impls = tuple(impl for impl in plan.IMPLS if impl in pythons)
    figures, ratios, groups = select(args, mode, impls)
    if args.list:
        for group in groups:
            print(f"{group.reps} x " + " | ".join(key.label for key in group.keys))
        return 0
    compile_ours()
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    log(f"mode {mode.name}: {sum(len(g.keys) * g.reps for g in groups)} measurements")
    runner = Runner(mode, args.url, pythons, args.profile)
    records = runner.run_all(groups) if groups else []
    local = run_local(args) if wants_local(args) else None
    elapsed = time.monotonic() - started
    if args.out:
        with args.out.open("a") as out:
            out.writelines(json.dumps(record.to_json()) + "\n" for record in records)
    table = report.medians(records)
    values: dict[str, Any] = dict(report.figure_values(figures, ratios, table))
    print(_summary(mode, impls, elapsed, load_at_start))
    if figures:
        print(report.figures_table(figures, values))
        print()
        print(report.measurements_table(records, table))
    if local is not None:
        n, reps = LOCAL_SIZES[mode.name]
        print(f"\nlocal:// beside RabbitMQ, our kiwipy on both (N = {n}, {reps} reps, medians):")
        print(local_bench.table(local))
        values.update({LOCAL_PREFIX + name: row for name, row in local.items()})
    print(json.dumps(values))
    _warn(mode, elapsed, load_at_start, records)
    failed = any(row.get("ours", 0) is None for row in values.values())
    return 1 if failed or (wants_local(args) and local is None) else 0


def wants_local(args: argparse.Namespace) -> bool:
    names = [LOCAL_PREFIX + name for name in local_bench.UNITS]
    return not args.no_local and (
        not args.only or any(re.search(args.only, name) for name in names)
    )


def run_local(args: argparse.Namespace) -> dict[str, dict[str, float]] | None:
    """local_bench in its own process: ``{figure: {"local", "rabbitmq", "local/rabbitmq"}}``."""
    n, reps = LOCAL_SIZES[args.mode]
    log(f"local:// beside RabbitMQ: N = {n}, {reps} reps")
    command = [sys.executable, str(HERE / "local_bench.py"), "--n", str(n), "--reps", str(reps)]
    try:
        done = subprocess.run(  # noqa: S603 (our own script)
            [*command, "--url", args.url],
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT_S * reps,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log("FAILED local:// beside RabbitMQ: no result in time")
        return None
    if done.returncode != 0:
        log(f"FAILED local:// beside RabbitMQ: {done.stderr.strip()[-2000:]}")
        return None
    medians: dict[str, dict[str, float]] = json.loads(done.stdout.splitlines()[-1])["medians"]
    return medians


def _warn(mode: plan.Mode, elapsed: float, load: float, records: list[report.Record]) -> None:
    if mode.name == "quick" and elapsed > QUICK_BUDGET_S:
        log(
            f"WARNING: took {elapsed:.0f} s, over the {QUICK_BUDGET_S:.0f} s quick budget "
            f"(load average {load:.1f} at the start: is something else running?)"
        )
    for record in records:
        if record.error:
            log(f"FAILED {record.key.label} (rep {record.rep + 1}): {record.error}")


def _summary(mode: plan.Mode, impls: tuple[str, ...], elapsed: float, load: float) -> str:
    sizes = ", ".join(map(str, mode.sizes))
    reps = f"{mode.reps} reps"
    if not mode.full:
        sizes += f" (the asyncio reply pattern also at {mode.small} and {mode.large})"
        reps += f" ({mode.solo_reps} for the scaling runs)"
    loads = f"{load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    return (
        f"kiwipy bench, {mode.name} mode: N = {sizes}; {reps}, medians; "
        f"implementations: {', '.join(impls)}; {elapsed:.0f} s; load average {loads}\n"
        "rates are messages/s end to end (higher is better); ms and s are latencies (lower is "
        "better); ratios are ours divided by the baseline\n"
    )


if __name__ == "__main__":
    sys.exit(main())
