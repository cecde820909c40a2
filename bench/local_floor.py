"""What bounds one awaited durable send on local://: the disk's fsync, and the rest.

    .venv/bin/python bench/local_floor.py              # 5 rounds of 500 operations
    .venv/bin/python bench/local_floor.py --rounds 3 --n 300 --dir /var/tmp

Each round measures, one after the other, in milliseconds per operation: an awaited send on the
local broker (default durability, then ``durability=process``), a raw ``pwrite`` of 4 KiB plus
``fdatasync`` (overwriting a file of 4 MiB, as a SQLite WAL is once it has wrapped), a SQLite WAL
commit of one task with ``synchronous=FULL`` and ``NORMAL`` (exclusive locking, like the broker),
and a Unix socket round trip. The difference between the two awaited figures is what the fsync
costs the broker; compare it with the raw figures. Printed: one line per round, the medians,
then one JSON line. ``--dir``: where the files go (the file system to measure; default /tmp).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable

from local_bench import awaited_sends_one_at_a_time, stop_broker

_WAL_SIZE = 4 << 20
_PAGE = 4120  # a 4 KiB page and its WAL frame header


def raw_fdatasync(path: str, n: int) -> float:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(descriptor).st_size < _WAL_SIZE:
            os.write(descriptor, b"\0" * _WAL_SIZE)
            os.fsync(descriptor)
        started = time.perf_counter()
        for i in range(n):
            os.pwrite(descriptor, b"x" * _PAGE, (i * _PAGE) % (_WAL_SIZE - _PAGE))
            os.fdatasync(descriptor)
        return 1000 * (time.perf_counter() - started) / n
    finally:
        os.close(descriptor)


def sqlite_commits(path: str, synchronous: str) -> Callable[[int], float]:
    """One task in and the previous one out per commit, as the broker does per send."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE IF NOT EXISTS task (id INTEGER PRIMARY KEY, body BLOB)")
    ids = iter(range(1, 2**62))

    def run(n: int) -> float:
        previous = None
        started = time.perf_counter()
        for _ in range(n):
            task = next(ids)
            db.execute("BEGIN")
            db.execute("INSERT INTO task VALUES (?, ?)", (task, b"x" * 60))
            if previous is not None:
                db.execute("DELETE FROM task WHERE id = ?", (previous,))
            db.execute("COMMIT")
            previous = task
        return 1000 * (time.perf_counter() - started) / n

    run(1200)  # past the first checkpoint: from now on the WAL is overwritten, not grown
    return run


def socket_round_trip(n: int) -> float:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        started = time.perf_counter()
        for _ in range(n):
            left.send(b"x" * 100)
            right.recv(100)
            right.send(b"y" * 20)
            left.recv(20)
        return 1000 * (time.perf_counter() - started) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--dir", default=None, help="where the files go (default: /tmp)")
    options = parser.parse_args()
    root = tempfile.mkdtemp(prefix="kiwipy-floor-", dir=options.dir)
    full = f"local://{root}/full?idle_timeout=60"
    process = f"local://{root}/process?idle_timeout=60&durability=process"
    durable = sqlite_commits(os.path.join(root, "full.sqlite3"), "FULL")
    normal = sqlite_commits(os.path.join(root, "normal.sqlite3"), "NORMAL")
    for url in (full, process):  # the brokers started, their WAL past its first wrap
        asyncio.run(awaited_sends_one_at_a_time(url, 1200))
    rows: dict[str, list[float]] = {}
    try:
        for _ in range(options.rounds):
            n = options.n
            row = {
                "local_full": 1000 / asyncio.run(awaited_sends_one_at_a_time(full, n)),
                "local_process": 1000 / asyncio.run(awaited_sends_one_at_a_time(process, n)),
                "raw_fdatasync_4k": raw_fdatasync(os.path.join(root, "raw"), n),
                "sqlite_full_commit": durable(n),
                "sqlite_normal_commit": normal(n),
                "unix_socket_round_trip": socket_round_trip(n),
            }
            row["full_minus_process"] = row["local_full"] - row["local_process"]
            for name, value in row.items():
                rows.setdefault(name, []).append(value)
            print("  ".join(f"{name} {value:.3f}" for name, value in row.items()), flush=True)
    finally:
        stop_broker(f"{root}/full")
        stop_broker(f"{root}/process")
    medians = {name: round(statistics.median(values), 4) for name, values in rows.items()}
    print("median (ms per operation): " + "  ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    print(json.dumps({"rounds": options.rounds, "n": options.n, "ms_medians": medians}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
