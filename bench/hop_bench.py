"""The blocking communicator's cross-thread hop, alone and inside a send; how sends scale.

    python bench/hop_bench.py hop                 # the hop alone (no broker), ~20 s
    python bench/hop_bench.py send [--reps 5]     # blocking vs raw aiormq one at a time
    python bench/hop_bench.py scaling [--reps 2]  # 500 vs 8,000 gathered sends, GC per message
    python bench/hop_bench.py all

``hop``: a blocking caller hands a trivial call to an event loop on another thread and waits
for its answer, in several ways (what ``kiwipy.sync`` does today and alternatives), and the
same call made on the loop itself as the floor. Figures are µs per call (p50 and mean).

``send``: the driver patterns of ``run.py`` (``patterns_ours.py`` / ``patterns_raw.py``),
ours and raw side by side, their order rotating: blocking ``task_send`` one at a time with and
without replies (raw: one confirm awaited at a time), and the blocking RPC round trip. Prints
medians and ours / raw.

``scaling``: the asyncio reply pattern of ``run.py`` at N = 500 and 8,000 (ours and raw),
with the driver's garbage collections over the timed part: collections per generation, the
time spent collecting (``gc.callbacks``) per message, and objects the collector found.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import broker  # noqa: E402
import plan  # noqa: E402
import report  # noqa: E402
from common import DEFAULT_URL, Names, payload  # noqa: E402

# -- the hop alone -------------------------------------------------------------------------------


class LoopThread:
    """An event loop on a daemon thread: ``kiwipy.sync``'s portal."""

    def __init__(self) -> None:
        from kiwipy.sync._portal import Portal

        self.portal = Portal("hop-bench")
        self.loop = self.portal.loop

    def stop(self) -> None:
        self.portal.stop()


async def _answer() -> int:
    return 1


def _plain() -> int:
    return 1


def hop_variants(lt: LoopThread) -> dict[str, Callable[[], Any]]:
    """name -> one blocking call from this thread to ``lt``'s loop and back."""
    loop = lt.loop
    portal = lt.portal

    def kiwipy_portal() -> Any:
        return portal.call(_answer, 10.0, "hop")

    def task_cfuture() -> Any:
        """What the portal did before: a task that sets a concurrent future at its end."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()

        async def deliver() -> None:
            future.set_result(await _answer())

        def start() -> None:
            task = loop.create_task(deliver())
            future.add_done_callback(lambda done: done.cancelled() and task.cancel())

        loop.call_soon_threadsafe(start)
        return future.result(10.0)

    def run_coroutine_threadsafe() -> Any:
        return asyncio.run_coroutine_threadsafe(_answer(), loop).result(10.0)

    def soon_cfuture() -> Any:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        loop.call_soon_threadsafe(lambda: future.set_result(_plain()))
        return future.result(10.0)

    def soon_lock() -> Any:
        lock = threading.Lock()
        lock.acquire()
        box: list[Any] = []

        def run() -> None:
            box.append(_plain())
            lock.release()

        loop.call_soon_threadsafe(run)
        lock.acquire(timeout=10.0)
        return box[0]

    def soon_task_lock() -> Any:
        lock = threading.Lock()
        lock.acquire()
        box: list[Any] = []

        async def deliver() -> None:
            box.append(await _answer())
            lock.release()

        loop.call_soon_threadsafe(loop.create_task, deliver())
        lock.acquire(timeout=10.0)
        return box[0]

    def soon_task_eager_lock() -> Any:
        """The coroutine's first step run inside the callback (no loop turn for the task)."""
        lock = threading.Lock()
        lock.acquire()
        box: list[Any] = []

        async def deliver() -> None:
            box.append(await _answer())
            lock.release()

        def start() -> None:
            coro = deliver()
            try:  # a coroutine that never suspends ends right here, with no task at all
                coro.send(None)
            except StopIteration:
                return
            raise AssertionError("the hop bench's coroutine suspended")

        loop.call_soon_threadsafe(start)
        lock.acquire(timeout=10.0)
        return box[0]

    rfd, wfd = os.pipe()

    def soon_pipe() -> Any:
        """The loop wakes the caller with os.write, which lets go of the GIL first."""
        box: list[Any] = []

        def run() -> None:
            box.append(_plain())
            os.write(wfd, b"x")

        loop.call_soon_threadsafe(run)
        os.read(rfd, 1)
        return box[0]

    return {
        "kiwipy.sync portal (Portal.call)": kiwipy_portal,
        "call_soon_threadsafe + pipe (plain function)": soon_pipe,
        "call_soon_threadsafe + Task + concurrent Future (the portal before)": task_cfuture,
        "asyncio.run_coroutine_threadsafe": run_coroutine_threadsafe,
        "call_soon_threadsafe + concurrent Future (no task)": soon_cfuture,
        "call_soon_threadsafe + Task + Lock waiter": soon_task_lock,
        "call_soon_threadsafe + Lock waiter (no task)": soon_task_eager_lock,
        "call_soon_threadsafe + Lock (plain function)": soon_lock,
    }


def _in_loop_floor(lt: LoopThread, calls: int) -> dict[str, list[float]]:
    """The same call made on the loop: awaited directly, and as a task (one loop turn)."""

    async def measure() -> dict[str, list[float]]:
        direct, task = [], []
        clock = time.perf_counter
        for _ in range(calls):
            start = clock()
            await _answer()
            direct.append(clock() - start)
        for _ in range(calls):
            start = clock()
            await asyncio.get_running_loop().create_task(_answer())
            task.append(clock() - start)
        return {"on the loop: await (no hop)": direct, "on the loop: await a Task": task}

    return asyncio.run_coroutine_threadsafe(measure(), lt.loop).result()


def run_hop(calls: int, rounds: int) -> dict[str, dict[str, float]]:
    lt = LoopThread()
    try:
        variants = hop_variants(lt)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, float] = {name: 0.0 for name in variants}
        clock = time.perf_counter
        for call in variants.values():  # warm up
            for _ in range(200):
                call()
        for _ in range(rounds):  # interleaved rounds
            for name, call in variants.items():
                times = samples[name]
                before = time.process_time()  # both threads
                for _ in range(calls):
                    start = clock()
                    call()
                    times.append(clock() - start)
                cpu[name] += time.process_time() - before
        samples.update(_in_loop_floor(lt, calls * rounds))
    finally:
        lt.stop()
    out = {name: _micro(times) for name, times in samples.items()}
    for name, total in cpu.items():
        out[name]["cpu_us"] = round(total / (calls * rounds) * 1e6, 1)
    return out


def _micro(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 1),
        "p90_us": round(ordered[int(len(ordered) * 0.9)] * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
    }


def print_hop(results: dict[str, dict[str, float]]) -> None:
    print("\n## The hop alone: one trivial call from a thread to the loop thread and back\n")
    print("CPU: the process's CPU (both threads) per call.\n")
    print("| way | p50 µs | p90 µs | mean µs | CPU µs |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        cells = (row["p50_us"], row["p90_us"], row["mean_us"], row.get("cpu_us", ""))
        print(f"| {name} | " + " | ".join(map(str, cells)) + " |")


# -- the send alone, in this process (no worker) ------------------------------------------------


def _send_only_raw(url: str, queue: str, count: int) -> list[float]:
    import patterns_raw

    async def go() -> list[float]:
        times = []
        clock = time.perf_counter
        async with patterns_raw.confirmed_channel(url) as channel:
            await channel.queue_declare(queue, durable=True)
            for i in range(count):
                start = clock()
                await patterns_raw.publish(channel, queue, payload(i), persistent=True)
                times.append(clock() - start)
        return times

    return asyncio.run(go())


def _send_only_aio(url: str, queue: str, count: int) -> list[float]:
    import kiwipy.aio

    async def go() -> list[float]:
        times = []
        clock = time.perf_counter
        async with kiwipy.aio.connect(url, task_queue=queue) as comm:
            for i in range(count):
                start = clock()
                await comm.task_send(payload(i), no_reply=True)
                times.append(clock() - start)
        return times

    return asyncio.run(go())


def _send_only_sync(url: str, queue: str, count: int) -> list[float]:
    import kiwipy.sync

    times = []
    clock = time.perf_counter
    with kiwipy.sync.connect(url, task_queue=queue) as comm:
        for i in range(count):
            start = clock()
            comm.task_send(payload(i), no_reply=True)
            times.append(clock() - start)
    return times


SEND_ONLY = {
    "raw aiormq: await publish + confirm": _send_only_raw,
    "ours kiwipy.aio: await task_send(no_reply)": _send_only_aio,
    "ours kiwipy.sync: task_send(no_reply)": _send_only_sync,
}


def run_send_only(url: str, count: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each way ``count`` confirmed persistent sends, ``rounds`` times interleaved, no worker."""
    samples: dict[str, list[float]] = {name: [] for name in SEND_ONLY}
    cpu: dict[str, list[float]] = {name: [] for name in SEND_ONLY}
    used = []
    try:
        for r in range(rounds + 1):  # the first round warms up (imports, first declarations)
            names = list(SEND_ONLY)
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                used.append(Names.fresh())
                before = time.process_time()
                times = SEND_ONLY[name](url, used[-1].task_queue, count)
                if r:
                    samples[name] += times[10:]
                    cpu[name].append((time.process_time() - before) / count)
    finally:
        broker.cleanup(url, used)
    out = {name: _micro(times) for name, times in samples.items()}
    for name, row in out.items():  # connect and close included: compare, do not read alone
        row["cpu_us_per_send"] = round(statistics.median(cpu[name]) * 1e6, 1)
    return out


def print_send_only(results: dict[str, dict[str, float]]) -> None:
    print("\n## One confirmed persistent send at a time, this process, no worker\n")
    print("CPU: this process's CPU per send, connect and close included (median of rounds).\n")
    print("| way | p50 µs | p90 µs | mean µs | CPU µs |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        cells = (row["p50_us"], row["p90_us"], row["mean_us"], row["cpu_us_per_send"])
        print(f"| {name} | " + " | ".join(map(str, cells)) + " |")


# -- the RPC round trip alone: callers in this process, one worker process ----------------------


def _worker_args(url: str, names: Names) -> argparse.Namespace:
    return argparse.Namespace(names=names.to_json(), url=url)


def _rpc_raw(url: str, names: Names, calls: int, _worker: str) -> tuple[list[float], float]:
    import patterns_raw
    import workers

    async def go() -> tuple[list[float], float]:
        async with patterns_raw.confirmed_channel(url) as channel:
            requester = await patterns_raw.Requester.open(channel)
            pool.ready()
            for i in range(-10, 0):
                await (await requester.call(names.raw_rpc_queue, payload(i), False))
            return await _timed_async(
                calls,
                lambda i: _await_twice(requester.call(names.raw_rpc_queue, payload(i), False)),
            )

    script = str(HERE / "patterns_raw.py")
    with workers.pool(script, _worker_args(url, names), "rpc", 10**9) as pool:
        return asyncio.run(go())


async def _await_twice(sending: Any) -> Any:
    return await (await sending)


async def _timed_async(calls: int, call: Callable[[int], Any]) -> tuple[list[float], float]:
    times = []
    clock = time.perf_counter
    cpu = time.process_time()
    for i in range(calls):
        start = clock()
        await call(i)
        times.append(clock() - start)
    return times, (time.process_time() - cpu) / calls


def _rpc_ours_aio(url: str, names: Names, calls: int, worker: str) -> tuple[list[float], float]:
    import workers

    import kiwipy.aio

    async def go() -> tuple[list[float], float]:
        async with kiwipy.aio.connect(url, **names.kiwipy_options()) as comm:
            pool.ready()
            for i in range(-10, 0):
                await (await comm.rpc_send(names.rpc_id, payload(i)))
            return await _timed_async(
                calls, lambda i: _await_twice(comm.rpc_send(names.rpc_id, payload(i)))
            )

    script = str(HERE / "patterns_ours.py")
    args = _worker_args(url, names)
    with workers.pool(script, args, "rpc", 10**9, flavour=worker) as pool:
        return asyncio.run(go())


def _rpc_ours_sync(url: str, names: Names, calls: int, worker: str) -> tuple[list[float], float]:
    import workers

    import kiwipy.sync

    script = str(HERE / "patterns_ours.py")
    args = _worker_args(url, names)
    with (
        workers.pool(script, args, "rpc", 10**9, flavour=worker) as pool,
        kiwipy.sync.connect(url, **names.kiwipy_options()) as comm,
    ):
        pool.ready()
        for i in range(-10, 0):
            comm.rpc_send(names.rpc_id, payload(i)).result(10.0)
        times = []
        clock = time.perf_counter
        cpu = time.process_time()
        for i in range(calls):
            start = clock()
            comm.rpc_send(names.rpc_id, payload(i)).result(10.0)
            times.append(clock() - start)
        return times, (time.process_time() - cpu) / calls


RPC_ONLY: dict[str, tuple[Callable[[str, Names, int, str], tuple[list[float], float]], str]] = {
    "raw aiormq caller, raw worker": (_rpc_raw, "async"),
    "ours asyncio caller, asyncio worker": (_rpc_ours_aio, "async"),
    "ours asyncio caller, blocking worker": (_rpc_ours_aio, "sync"),
    "ours blocking caller, asyncio worker": (_rpc_ours_sync, "async"),
    "ours blocking caller, blocking worker": (_rpc_ours_sync, "sync"),
}


def run_rpc_only(url: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each way ``calls`` round trips, ``rounds`` times interleaved (order rotating)."""
    samples: dict[str, list[float]] = {name: [] for name in RPC_ONLY}
    cpu: dict[str, list[float]] = {name: [] for name in RPC_ONLY}
    used: list[Names] = []
    try:
        for r in range(rounds):
            names = list(RPC_ONLY)
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                used.append(Names.fresh())
                measure, worker = RPC_ONLY[name]
                times, cpu_per_call = measure(url, used[-1], calls, worker)
                samples[name] += times
                cpu[name].append(cpu_per_call)
                print(f"round {r + 1}: {name}: done", file=sys.stderr)
    finally:
        broker.cleanup(url, used)
    out = {name: _micro(times) for name, times in samples.items()}
    for name, row in out.items():
        row["cpu_us_per_call"] = round(statistics.median(cpu[name]) * 1e6, 1)
    return out


def print_rpc_only(results: dict[str, dict[str, float]]) -> None:
    print("\n## RPC round trips one at a time, the caller in this process (all rounds)\n")
    print("CPU: the caller process's CPU per round trip (its loop thread included).\n")
    raw = results.get("raw aiormq caller, raw worker", {}).get("p50_us")
    print("| way | p50 µs | p90 µs | mean µs | caller CPU µs | p50 / raw |")
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        ratio = f"{row['p50_us'] / raw:.2f}" if raw else "?"
        cells = (row["p50_us"], row["p90_us"], row["mean_us"], row["cpu_us_per_call"], ratio)
        print(f"| {name} | " + " | ".join(map(str, cells)) + " |")


# -- sends and RPC through run.py's drivers ------------------------------------------------------


def _runner(url: str, warmup: int) -> Any:
    import run

    mode = plan.Mode("hop", 500, 2000, 8000, 1, 1, warmup, 0, False)
    return run.Runner(mode, url, {"ours": sys.executable, "raw": sys.executable})


def run_keys(
    url: str, groups: list[list[plan.Key]], reps: int, warmup: int
) -> dict[plan.Key, dict[str, Any]]:
    """Every group ``reps`` times, the order inside a group rotating; medians per key."""
    import run

    run.compile_ours()
    runner = _runner(url, warmup)
    records: list[report.Record] = []
    used: list[Names] = []
    try:
        for rep in range(reps):
            for keys in groups:
                shift = rep % len(keys)
                for key in keys[shift:] + keys[:shift]:
                    used.append(Names.fresh())
                    records.append(runner.measure(key, rep, used[-1]))
                    record = records[-1]
                    print(f"rep {rep + 1}: {key.label}: {record.error or 'ok'}", file=sys.stderr)
    finally:
        broker.cleanup(url, used)
    out: dict[plan.Key, dict[str, Any]] = {}
    for record in records:
        if record.result is None:
            continue
        row = out.setdefault(record.key, {})
        for metric, value in record.result.items():
            if isinstance(value, (int, float)):
                row.setdefault(metric, []).append(value)
    return {key: {m: statistics.median(v) for m, v in row.items()} for key, row in out.items()}


SendRow = tuple[str, float, float, dict[str, Any], dict[str, Any]]


def run_send(url: str, reps: int, n: int, calls: int, only: str = "") -> list[SendRow]:
    """(figure, ours, raw, ours' medians, raw's medians) for the blocking patterns."""
    pairs = [
        ("tasks_reply_sync (/s)", "rate_per_s", "tasks_sync", "tasks_seq", n, False, 0),
        ("tasks_noreply_sync (/s)", "rate_per_s", "tasks_sync", "tasks_seq", n, True, 0),
        ("rpc_p50_ms_sync (ms)", "p50_ms", "rpc_latency", "rpc_latency", 0, False, calls),
    ]
    pairs = [pair for pair in pairs if re.search(only, pair[0])]
    groups = []
    for _figure, _metric, ours, raw, size, no_reply, ncalls in pairs:
        groups.append(
            [
                plan.Key("ours", ours, size, no_reply, 0, ncalls),
                plan.Key("raw", raw, size, no_reply, 0, ncalls),
            ]
        )
    medians = run_keys(url, groups, reps, warmup=20)
    rows: list[SendRow] = []
    for (figure, metric, *_), keys in zip(pairs, groups, strict=True):
        ours, raw = medians.get(keys[0], {}), medians.get(keys[1], {})
        rows.append((figure, ours.get(metric, float("nan")), raw.get(metric, 0.0), ours, raw))
        if metric == "p50_ms":
            p99 = "rpc_p99_ms_sync (ms)"
            rows.append((p99, ours.get("p99_ms", float("nan")), raw.get("p99_ms", 0.0), ours, raw))
    return rows


def _cpu_us(row: dict[str, Any], metric: str, count: float) -> str:
    return f"{row[metric] / count * 1e6:.0f}" if metric in row and count else "?"


def print_send(rows: list[SendRow], n: int, calls: int) -> None:
    print("\n## Blocking, one at a time: ours against raw aiormq (medians)\n")
    print("CPU µs per message over the timed part (tasks) or the whole run (RPC), ours / raw.\n")
    print("| figure | ours | raw | ours / raw | driver CPU µs | worker CPU µs |")
    print("|---|---|---|---|---|---|")
    for figure, ours, raw, ours_row, raw_row in rows:
        ratio = ours / raw if raw else float("nan")
        if figure.startswith("rpc"):
            driver, worker, count = "driver_cpu_s", "worker_cpu_s", calls
        else:
            driver, worker, count = "driver_cpu_busy_s", "worker_cpu_busy_s", n
        cpu_d = f"{_cpu_us(ours_row, driver, count)} / {_cpu_us(raw_row, driver, count)}"
        cpu_w = f"{_cpu_us(ours_row, worker, count)} / {_cpu_us(raw_row, worker, count)}"
        print(f"| {figure} | {ours:g} | {raw:g} | {ratio:.2f} | {cpu_d} | {cpu_w} |")


SCALING_METRICS = (
    "rate_per_s",
    "gc_ms_per_1k",
    "gc_collections_0",
    "gc_collections_1",
    "gc_collections_2",
    "gc_collected",
    "gc_full_ms_max",
    "driver_rss_mb",
)


def run_scaling(url: str, reps: int) -> dict[plan.Key, dict[str, Any]]:
    groups = [
        [plan.Key(impl, pattern, n) for impl, pattern in (("ours", "tasks_async"),)]
        for n in (500, 8000)
    ]
    groups += [[plan.Key("raw", "tasks_pipelined", n)] for n in (500, 8000)]
    return run_keys(url, groups, reps, warmup=5)


def print_scaling(medians: dict[plan.Key, dict[str, Any]]) -> None:
    print("\n## Scaling: the asyncio reply pattern at N = 500 and 8,000 (medians)\n")
    print("| impl | N | " + " | ".join(SCALING_METRICS) + " |")
    print("|---|---|" + "---|" * len(SCALING_METRICS))
    rates: dict[tuple[str, int], float] = {}
    for key, row in sorted(medians.items(), key=lambda kv: (kv[0].impl, kv[0].n)):
        cells = [f"{row.get(m, float('nan')):g}" for m in SCALING_METRICS]
        print(f"| {key.impl} | {key.n} | " + " | ".join(cells) + " |")
        rates[(key.impl, key.n)] = row.get("rate_per_s", float("nan"))
    for impl in ("ours", "raw"):
        if (impl, 500) in rates and (impl, 8000) in rates:
            ratio = rates[(impl, 8000)] / rates[(impl, 500)]
            print(f"\n{impl}: rate at 8000 / at 500 = {ratio:.3f}")


# -- command line --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["hop", "sendonly", "rpconly", "send", "scaling", "all"])
    parser.add_argument("--url", default=os.environ.get("KIWIPY_TEST_AMQP_URL") or DEFAULT_URL)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=2000, help="send: tasks per measurement")
    parser.add_argument("--calls", type=int, default=1000, help="send: RPC round trips")
    parser.add_argument("--hop-calls", type=int, default=2000)
    parser.add_argument("--only", default="", help="send: the figures matching this regex")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.what in ("hop", "all"):
        hop = run_hop(args.hop_calls, rounds=5)
        print_hop(hop)
        out["hop"] = hop
    if args.what in ("sendonly", "all"):
        alone = run_send_only(args.url, args.n // 4, rounds=4)
        print_send_only(alone)
        out["sendonly"] = alone
    if args.what in ("rpconly", "all"):
        rpc = run_rpc_only(args.url, args.calls // 2, rounds=max(args.reps, 2))
        print_rpc_only(rpc)
        out["rpconly"] = rpc
    if args.what in ("send", "all"):
        rows = run_send(args.url, args.reps, args.n, args.calls, args.only)
        print_send(rows, args.n, args.calls)
        out["send"] = {figure: {"ours": o, "raw": r} for figure, o, r, _o, _r in rows}
    if args.what in ("scaling", "all"):
        medians = run_scaling(args.url, args.reps)
        print_scaling(medians)
        out["scaling"] = {key.label: row for key, row in medians.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    gc.collect()
    sys.exit(main())
