"""What kiwipy.observe costs: the core with its hooks compiled out, with nobody listening, and
with both extras (OpenTelemetry tracing and Prometheus metrics) listening.

    .venv/bin/python bench/hooks_bench.py              # about a minute, in-memory transport
    .venv/bin/python bench/hooks_bench.py --url amqp://guest:guest@127.0.0.1/ --n 1000
    .venv/bin/python bench/hooks_bench.py --tiny       # seconds (tests/test_bench_smoke.py)

Every event site in the core has the shape ``if (hooks := ...hooks) is not None:`` (or
``... observed ...``). The *baseline* imports kiwipy through an import hook that rewrites those
tests to ``False`` before compiling, so the compiler drops the hook branches: the same code as
if the hooks had never been written (a few ``= None`` attribute stores aside). Each variant
runs in its own process; the processes of the variants alternate, their order rotating, and
every figure is the median over the repetitions.

The workload is the core's hot path with as little else as possible: on the in-memory
transport (no broker, no network: the hooks' share is the largest it can be) a gather of N
tasks with replies to a subscriber in the same process, then N pipelined RPCs. Throughput is
messages per second of CPU time of the process (less sensitive than wall time to the other
processes of this shared machine); wall-time rates are printed too. The last line is JSON.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.abc
import importlib.machinery
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

#: baseline: hooks compiled out; hooks: nobody listens; metrics, tracing: one extra listens;
#: extras: both listen.
VARIANTS = ("baseline", "hooks", "metrics", "tracing", "extras")
PATTERNS = ("tasks", "rpc")
#: Names whose ``is not None`` test guards an event site (see kiwipy/aio/_hooks.py).
_GUARDS = {"hooks", "observed", "_observed"}


# -- the baseline: hooks compiled out ------------------------------------------------------------


class _StripHooks(ast.NodeTransformer):
    def __init__(self) -> None:
        self.stripped = 0

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) != 1 or not _is_none(node.comparators[0]) or not _guard(node.left):
            return node
        if isinstance(node.ops[0], ast.IsNot):
            self.stripped += 1
            return ast.copy_location(ast.Constant(False), node)
        if isinstance(node.ops[0], ast.Is):
            self.stripped += 1
            return ast.copy_location(ast.Constant(True), node)
        return node


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _guard(node: ast.expr) -> bool:
    if isinstance(node, ast.NamedExpr):
        return node.target.id in _GUARDS
    if isinstance(node, ast.Name):
        return node.id in _GUARDS
    return isinstance(node, ast.Attribute) and node.attr in _GUARDS


class _StrippingLoader(importlib.machinery.SourceFileLoader):
    stripped = 0

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        tree = ast.parse(self.get_data(path), path)
        stripper = _StripHooks()
        tree = ast.fix_missing_locations(stripper.visit(tree))
        _StrippingLoader.stripped += stripper.stripped
        return compile(tree, path, "exec", dont_inherit=True)  # never the cached bytecode


class _StrippingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "kiwipy" and not fullname.startswith("kiwipy."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _StrippingLoader(fullname, spec.loader.path)
        return spec


# -- one measurement process ---------------------------------------------------------------------


def _listeners(variant: str) -> list[Any]:
    listeners: list[Any] = []
    if variant in ("tracing", "extras"):
        from opentelemetry.sdk.trace import TracerProvider

        from kiwipy.observe.otel import Tracing

        # Spans are made, propagated and ended, not exported: the exporter is the user's choice.
        listeners.append(Tracing(TracerProvider()))
    if variant in ("metrics", "extras"):
        from prometheus_client import CollectorRegistry

        from kiwipy.observe.prometheus import Metrics

        listeners.append(Metrics(CollectorRegistry()))
    return listeners


async def _measure(url: str, variant: str, n: int, rounds: int) -> dict[str, Any]:
    import kiwipy.aio

    if url.startswith("memory"):
        url = f"memory://hooks-bench-{uuid.uuid4().hex[:8]}"
    prefix = f"hooks-bench-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"testing_mode": True, "task_queue": f"{prefix}.tasks"}
    options.update(message_exchange=f"{prefix}.messages", task_exchange=f"{prefix}.tasks")
    comm = await kiwipy.aio.connect(url, **options)
    try:
        for listener in _listeners(variant):
            comm.add_listener(listener)
        await comm.add_task_subscriber(lambda _c, task: task)
        await comm.add_rpc_subscriber(lambda _c, msg: msg, f"{prefix}-echo")

        async def tasks() -> None:
            futures = await comm.task_send_many(range(n))
            await asyncio.gather(*(f for f in futures if f is not None))

        async def rpc() -> None:
            sends = [comm.rpc_send(f"{prefix}-echo", i) for i in range(n)]
            await asyncio.gather(*await asyncio.gather(*sends))

        result: dict[str, Any] = {}
        for name, pattern in (("tasks", tasks), ("rpc", rpc)):
            await pattern()  # warm-up
            cpu, wall = [], []
            for _ in range(rounds):
                started, started_cpu = time.perf_counter(), time.process_time()
                await pattern()
                cpu.append(n / max(time.process_time() - started_cpu, 1e-9))
                wall.append(n / max(time.perf_counter() - started, 1e-9))
            result[name] = {"cpu_rate": statistics.median(cpu), "rate": statistics.median(wall)}
        return result
    finally:
        await comm.close()


def _child(args: argparse.Namespace) -> int:
    if args.variant == "baseline":
        sys.meta_path.insert(0, _StrippingFinder())
    import kiwipy.aio  # noqa: F401  (imported here: after the finder, for the baseline)

    result = asyncio.run(_measure(args.url, args.variant, args.n, args.rounds))
    result["stripped"] = _StrippingLoader.stripped
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the driver ----------------------------------------------------------------------------------


def _run_child(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", variant, "--url", args.url]
    command += ["--n", str(args.n), "--rounds", str(args.rounds)]
    done = subprocess.run(  # noqa: S603 (this script)
        command, capture_output=True, text=True, timeout=600, check=False, env=os.environ.copy()
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--n", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per process")
    parser.add_argument("--reps", type=int, default=5, help="processes per variant")
    parser.add_argument("--tiny", action="store_true", help="a few seconds: n 200, 1 rep")
    parser.add_argument("--child", choices=VARIANTS, dest="variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        return _child(args)
    if args.tiny:
        args.n, args.rounds, args.reps = 200, 2, 1
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for rep in range(args.reps):
        shift = rep % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            runs[variant].append(_run_child(args, variant))
            _log(f"rep {rep + 1}/{args.reps} {variant}: {runs[variant][-1]}")
    if runs["baseline"][0]["stripped"] < 10:
        raise RuntimeError("the baseline stripped too few hook sites: is the pattern still used?")
    figures: dict[str, Any] = {"stripped_sites": runs["baseline"][0]["stripped"]}
    print(f"kiwipy hooks cost, {args.url.split(':')[0]}, n={args.n}, {args.reps} reps, medians")
    header = ("pattern", "variant", "msg/s (CPU)", "msg/s (wall)", "vs baseline")
    print("{:8} {:9} {:>12} {:>13} {:>12}".format(*header))
    for pattern in PATTERNS:
        base = statistics.median(run[pattern]["cpu_rate"] for run in runs["baseline"])
        for variant in VARIANTS:
            cpu = statistics.median(run[pattern]["cpu_rate"] for run in runs[variant])
            wall = statistics.median(run[pattern]["rate"] for run in runs[variant])
            ratio = cpu / base
            figures[f"{pattern}_{variant}"] = {"cpu_rate": round(cpu), "vs_baseline": ratio}
            print(f"{pattern:8} {variant:9} {cpu:12.0f} {wall:13.0f} {ratio:12.3f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
