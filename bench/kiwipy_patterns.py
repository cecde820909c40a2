"""The measured patterns for any kiwipy with the 0.9-style API (ours and kiwipy 0.9 itself).

:class:`KiwipyApi` says how to connect, close and batch-send with one implementation; the
drivers and workers here are the same for both. Each driver starts its worker processes, runs
the pattern once and returns its figures; the driver process's own connect and close are not
timed (except in ``connect``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import workers
from common import (
    WAIT_TIMEOUT_S,
    Driver,
    Names,
    Result,
    Timer,
    Worker,
    answer,
    check_answers,
    latency_summary,
    monotonic,
    payload,
)

Connect = Callable[[str, dict[str, Any]], contextlib.AbstractContextManager[Any]]
AsyncConnect = Callable[[str, dict[str, Any]], contextlib.AbstractAsyncContextManager[Any]]
BatchSend = Callable[[Any, list[Any], bool], list[Any]]


@dataclasses.dataclass(frozen=True)
class KiwipyApi:
    """How one kiwipy implementation does what the patterns need."""

    #: The module file: worker processes run it with ``worker``.
    script: str
    #: Import the library and its AMQP client (imported on first use otherwise).
    load: Callable[[], None]
    #: A blocking communicator as a context manager (closed on exit).
    connect: Connect
    #: An asyncio communicator as an async context manager.
    connect_async: AsyncConnect
    #: Send many tasks from blocking code; return their result futures.
    send_batch: BatchSend


def payloads(first: int, stop: int) -> list[dict[str, Any]]:
    return [payload(i) for i in range(first, stop)]


def options(args: argparse.Namespace) -> dict[str, Any]:
    return Names.from_json(args.names).kiwipy_options()


def results_time(futures: Sequence[Any], first: int = 0) -> float:
    """Wait for every (concurrent) future; return when the last result was in."""
    results = [future.result(timeout=WAIT_TIMEOUT_S) for future in futures]
    end = monotonic()
    check_answers(results, first)
    return end


async def async_results_time(futures: Sequence[Any], first: int = 0) -> float:
    results = await asyncio.wait_for(asyncio.gather(*futures), WAIT_TIMEOUT_S)
    end = monotonic()
    check_answers(results, first)
    return end


class KiwipyPatterns:
    """Drivers and workers of one implementation."""

    def __init__(self, api: KiwipyApi) -> None:
        self.api = api

    def driver_table(self) -> dict[str, Driver]:
        return {
            "tasks_sync": self.tasks_sync,
            "tasks_batch": self.tasks_batch,
            "tasks_async": self.tasks_async,
            "rpc_async": self.rpc_async,
            "rpc_latency": self.rpc_latency,
            "broadcast_sync": self.broadcast_sync,
            "connect": self.connect,
        }

    def worker_table(self) -> dict[str, Worker]:
        return {"tasks": self.tasks_worker, "rpc": self.rpc_worker, "broadcast": self.bcast_worker}

    def _pool(
        self, args: argparse.Namespace, kind: str, count: int, flavour: str = "sync", size: int = 1
    ) -> workers.WorkerPool:
        return workers.pool(self.api.script, args, kind, count, flavour=flavour, size=size)

    # -- tasks -----------------------------------------------------------------------------------

    def tasks_sync(self, args: argparse.Namespace) -> Result:
        """(a) blocking code, one ``task_send`` at a time (each waits for its confirm)."""

        def one_by_one(comm: Any, tasks: list[Any], no_reply: bool) -> list[Any]:
            return [comm.task_send(task, no_reply=no_reply) for task in tasks]

        return self._tasks_blocking(args, one_by_one)

    def tasks_batch(self, args: argparse.Namespace) -> Result:
        """(b) blocking code, the batch way (confirms in flight together)."""
        return self._tasks_blocking(args, self.api.send_batch)

    def _tasks_blocking(self, args: argparse.Namespace, send: BatchSend) -> Result:
        tasks = payloads(0, args.n)
        with (
            self._pool(args, "tasks", args.warmup + args.n) as pool,
            self.api.connect(args.url, options(args)) as comm,
        ):
            pool.ready()
            results_time(send(comm, payloads(-args.warmup, 0), False), -args.warmup)
            timer = Timer()
            futures = send(comm, tasks, args.no_reply)
            timer.all_sent()
            end = pool.done_time() if args.no_reply else results_time(futures)
        return {**timer.throughput(args.n, end), **pool.summary()}

    def tasks_async(self, args: argparse.Namespace) -> Result:
        """(c) asyncio, every ``task_send`` in flight at once (gather)."""
        return asyncio.run(self._tasks_async(args))

    async def _tasks_async(self, args: argparse.Namespace) -> Result:
        tasks = payloads(0, args.n)
        with self._pool(args, "tasks", args.warmup + args.n, "async") as pool:
            async with self.api.connect_async(args.url, options(args)) as comm:
                pool.ready()

                async def send_all(batch: list[Any], no_reply: bool) -> list[Any]:
                    sends = (comm.task_send(task, no_reply=no_reply) for task in batch)
                    return list(await asyncio.gather(*sends))

                warm = await send_all(payloads(-args.warmup, 0), False)
                await async_results_time(warm, -args.warmup)
                timer = Timer()
                futures = await send_all(tasks, args.no_reply)
                timer.all_sent()
                if args.no_reply:
                    end = await asyncio.to_thread(pool.done_time)
                else:
                    end = await async_results_time(futures)
        return {**timer.throughput(args.n, end), **pool.summary()}

    # -- rpc -------------------------------------------------------------------------------------

    def rpc_async(self, args: argparse.Namespace) -> Result:
        """RPC pipelined from asyncio: every ``rpc_send`` at once, then every answer."""
        return asyncio.run(self._rpc_async(args))

    async def _rpc_async(self, args: argparse.Namespace) -> Result:
        rpc_id = Names.from_json(args.names).rpc_id
        messages = payloads(0, args.n)
        with self._pool(args, "rpc", args.warmup + args.n, "async") as pool:
            async with self.api.connect_async(args.url, options(args)) as comm:
                pool.ready()

                async def send_all(batch: list[Any]) -> list[Any]:
                    return list(await asyncio.gather(*(comm.rpc_send(rpc_id, m) for m in batch)))

                await async_results_time(await send_all(payloads(-args.warmup, 0)), -args.warmup)
                timer = Timer()
                futures = await send_all(messages)
                timer.all_sent()
                end = await async_results_time(futures)
        return {**timer.throughput(args.n, end), **pool.summary()}

    def rpc_latency(self, args: argparse.Namespace) -> Result:
        """Sequential RPC round trips from blocking code."""
        rpc_id = Names.from_json(args.names).rpc_id
        samples: list[float] = []
        with (
            self._pool(args, "rpc", args.warmup + args.calls) as pool,
            self.api.connect(args.url, options(args)) as comm,
        ):
            pool.ready()
            for i in range(-args.warmup, args.calls):
                start = monotonic()
                result = comm.rpc_send(rpc_id, payload(i)).result(timeout=WAIT_TIMEOUT_S)
                if i >= 0:
                    samples.append(monotonic() - start)
                check_answers([result], i)
        return {**latency_summary(samples), **pool.summary()}

    # -- broadcasts ------------------------------------------------------------------------------

    def broadcast_sync(self, args: argparse.Namespace) -> Result:
        """Blocking ``broadcast_send`` one at a time; done when every subscriber has all."""
        bodies = payloads(0, args.n)
        with (
            self._pool(args, "broadcast", args.warmup + args.n, size=args.subs) as pool,
            self.api.connect(args.url, options(args)) as comm,
        ):
            pool.ready()
            for body in payloads(-args.warmup, 0):
                comm.broadcast_send(body, sender="bench", subject="warmup")
            timer = Timer()
            for body in bodies:
                comm.broadcast_send(body, sender="bench", subject="bench")
            timer.all_sent()
            end = pool.done_time()
        return {**timer.throughput(args.n, end), **pool.summary()}

    # -- connect ---------------------------------------------------------------------------------

    def connect(self, args: argparse.Namespace) -> Result:
        """Blocking connect plus the first task round trip (a worker already subscribed).

        The library (with its AMQP client) is imported before the clock starts; the import
        time is added for ``cold_first_reply_s``. A second connect in the same process shows
        what the first one paid for loading code on first use.
        """
        start = monotonic()
        self.api.load()
        load_s = monotonic() - start
        with self._pool(args, "tasks", 2) as pool:
            pool.ready()
            first = self._connect_and_ask(args, 0)
            second = self._connect_and_ask(args, 1)
        cold = round(load_s + first["first_reply_s"], 4)
        return {
            **first,
            "second_first_reply_s": second["first_reply_s"],
            "cold_first_reply_s": cold,
            **pool.summary(),
        }

    def _connect_and_ask(self, args: argparse.Namespace, i: int) -> Result:
        start = monotonic()
        with self.api.connect(args.url, options(args)) as comm:
            connected = monotonic()
            result = comm.task_send(payload(i)).result(timeout=WAIT_TIMEOUT_S)
            end = monotonic()
        check_answers([result], i)
        return {"first_reply_s": round(end - start, 4), "connect_s": round(connected - start, 4)}

    # -- workers ---------------------------------------------------------------------------------

    def tasks_worker(self, args: argparse.Namespace) -> None:
        counter = workers.Counter(args.count)

        def on_task(_comm: Any, task: Any) -> Any:
            return counter.answer(answer(task))

        self._serve(args, counter, lambda comm: comm.add_task_subscriber(on_task))

    def rpc_worker(self, args: argparse.Namespace) -> None:
        counter = workers.Counter(args.count)
        rpc_id = Names.from_json(args.names).rpc_id

        def on_rpc(_comm: Any, message: Any) -> Any:
            return counter.answer(answer(message))

        self._serve(args, counter, lambda comm: comm.add_rpc_subscriber(on_rpc, rpc_id))

    def bcast_worker(self, args: argparse.Namespace) -> None:
        counter = workers.Counter(args.count)

        def on_broadcast(_comm: Any, _body: Any, _sender: Any, _subject: Any, _corr: Any) -> None:
            counter.bump()

        self._serve(args, counter, lambda comm: comm.add_broadcast_subscriber(on_broadcast))

    def _serve(
        self, args: argparse.Namespace, counter: workers.Counter, subscribe: Callable[[Any], Any]
    ) -> None:
        """Connect (blocking or asyncio flavour), subscribe, serve until the driver says stop."""
        if args.flavour == "async":
            asyncio.run(self._serve_async(args, counter, subscribe))
        else:
            with self.api.connect(args.url, options(args)) as comm:
                subscribe(comm)
                counter.ready()
                workers.wait_for_stop()
        workers.say_bye(counter)

    async def _serve_async(
        self, args: argparse.Namespace, counter: workers.Counter, subscribe: Callable[[Any], Any]
    ) -> None:
        async with self.api.connect_async(args.url, options(args)) as comm:
            await subscribe(comm)
            counter.ready()
            await asyncio.to_thread(workers.wait_for_stop)
