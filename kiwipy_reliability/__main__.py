"""Run the reliability scenarios against one private RabbitMQ node and local brokers (or a
3-node cluster).

``python -m kiwipy_reliability [--full | --quick] [--only NAME ... | --local | --cluster]
[--json-only]``

The ``local_*`` scenarios run on local brokers of their own (``local://``); the RabbitMQ node
is started only when a selected scenario needs it (``--local``: only the local ones, which
need no RabbitMQ installed). ``--cluster`` runs the cluster scenarios (quorum task queue;
leader kill, leader freeze, rolling restart, kiwipy 0.9 peers) on three private nodes instead;
their missed targets are listed under ``target_misses`` and fail the run.

Prints a table (figures by scenario) and, as the last line, one JSON object with the
aggregated figures (``lost``, ``duplicated``, ``hung_futures``, ``redelivery_p99_s``,
``recovery_s``, ``malformed_crashes``) and ``scenarios``. Exits 0 when nothing was lost, no
future hung, no malformed input crashed a worker and every scenario ran; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from kiwipy_reliability.base import Scale, ScenarioResult
from kiwipy_reliability.faults import RabbitNode
from kiwipy_reliability.faults.cluster import RabbitCluster
from kiwipy_reliability.report import aggregate, format_table, passed
from kiwipy_reliability.scenarios import ALL, CLUSTER, LOCAL

_PACKAGE = "kiwipy_reliability.scenarios"
_START_TIMEOUT = 120.0


def ensure_running(node: RabbitNode) -> None:
    """Thaw and (re)start the node if a scenario left it frozen or down."""
    if node.is_frozen:
        node.thaw()
    if not node.is_running():
        node.restart(timeout=_START_TIMEOUT)


def load(name: str) -> ModuleType | None:
    """The scenario module ``name``, or ``None`` if it does not exist (yet)."""
    qualified = f"{_PACKAGE}.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kiwipy_reliability", description=__doc__.split("\n\n")[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the counts of RELIABILITY.md (long)")
    size.add_argument("--quick", action="store_true", help="the small counts the tests use")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--only", action="append", choices=ALL + CLUSTER, metavar="NAME", help=str(ALL + CLUSTER)
    )
    which.add_argument("--local", action="store_true", help="only the local:// scenarios")
    parser.add_argument(
        "--cluster", action="store_true", help="the cluster scenarios, on three private nodes"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON summary")
    parser.add_argument("--verbose", action="store_true", help="show the library's log")
    args = parser.parse_args(argv)
    scale = Scale("full" if args.full else "test" if args.quick else "default")
    names = LOCAL if args.local else args.only or (CLUSTER if args.cluster else ALL)
    if args.cluster != all(name in CLUSTER for name in names):
        parser.error("--cluster runs only (and all of) the cluster scenarios " + str(CLUSTER))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    def say(text: str) -> None:
        if not args.json_only:
            print(text, flush=True)

    if args.cluster:
        return _run_cluster(names, scale, say)
    results: list[ScenarioResult] = []
    unavailable: list[str] = []
    errors: dict[str, str] = {}
    began = time.monotonic()
    modules = {name: load(name) for name in names}
    rabbit = any(getattr(m, "NEEDS_RABBITMQ", True) for m in modules.values() if m is not None)
    with contextlib.ExitStack() as stack:
        node: RabbitNode | None = None
        if rabbit:
            node = stack.enter_context(RabbitNode())  # started here, removed at the end
            say(f"private RabbitMQ node {node.name} on port {node.port}; scale {scale.name}")
        else:
            say(f"local brokers only; scale {scale.name}")
        for name, module in modules.items():
            if module is None:
                say(f"{name}: not available")
                unavailable.append(name)
                continue
            if node is not None and getattr(module, "NEEDS_RABBITMQ", True):
                ensure_running(node)
                node.reset_env()
            result = _run_scenario(name, module, node, scale, say, errors)
            if result is not None:
                results.append(result)
    return _report(results, began, say, aggregate(results, unavailable, errors))


def _run_scenario(
    name: str,
    module: ModuleType,
    target: object,
    scale: Scale,
    say: Callable[[str], None],
    errors: dict[str, str],
) -> ScenarioResult | None:
    """Run one scenario on ``target`` (a node or a cluster); ``None`` when it raised (noted in
    ``errors``)."""
    say(f"{name}: running ...")
    started = time.monotonic()
    try:
        result: ScenarioResult = module.run(target, scale)
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        say(traceback.format_exc())
        return None
    say(f"{name}: done in {time.monotonic() - started:.1f} s")
    for note in result.notes:
        say(f"  note: {note}")
    return result


def _report(
    results: list[ScenarioResult],
    began: float,
    say: Callable[[str], None],
    summary: dict[str, Any],
    where: str = "",
) -> int:
    """The table, the time taken and, last, the JSON line; the exit code."""
    say("")
    say(format_table(results))
    say(f"total {time.monotonic() - began:.1f} s{where}")
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if passed(summary) else 1


def _run_cluster(names: list[str], scale: Scale, say: Callable[[str], None]) -> int:
    results: list[ScenarioResult] = []
    unavailable: list[str] = []
    errors: dict[str, str] = {}
    misses: dict[str, list[str]] = {}
    began = time.monotonic()
    with RabbitCluster() as cluster:  # started by __enter__, removed (and checked) at the end
        say(
            f"private 3-node RabbitMQ cluster on ports {cluster.ports}, up in "
            f"{cluster.startup_time or 0:.1f} s; scale {scale.name}"
        )
        for name in names:
            module = load(name)
            if module is None:
                say(f"{name}: not available")
                unavailable.append(name)
                continue
            cluster.ensure_running(_START_TIMEOUT)
            result = _run_scenario(name, module, cluster, scale, say, errors)
            if result is None:
                continue
            missed = module.misses(result.figures)
            for miss in missed:
                say(f"  MISSED: {miss}")
            if missed:
                misses[name] = missed
            results.append(result)
    summary = aggregate(results, unavailable, errors, misses)
    return _report(results, began, say, summary, " (no process of the cluster left)")


if __name__ == "__main__":
    sys.exit(main())
