"""The local broker's store: what a crash leaves behind reads back whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kiwipy.broker._store import Store

pytestmark = pytest.mark.timeout(60)

CRASH_AFTER_COMMITS = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from kiwipy.broker._store import Store
    store = Store(Path(sys.argv[1]), durable=True)
    for i in range(int(sys.argv[2])):
        store.add("q", "{}", b"task %d" % i)
        store.commit()
    os._exit(0)  # no close: the WAL stays as a crash leaves it
    """
)


def test_the_wal_is_grown_once_and_committed_tasks_survive_a_crash(tmp_path: Path) -> None:
    database = tmp_path / "broker.sqlite3"
    wal = tmp_path / "broker.sqlite3-wal"
    for round_, count in enumerate([5, 1200]):  # 1,200 commits: the WAL wraps at 1,000 pages
        run = [sys.executable, "-c", CRASH_AFTER_COMMITS, str(database), str(count)]
        subprocess.run(run, check=True, timeout=60)
        assert wal.stat().st_size > 4_000_000, "the WAL was not grown in advance"
        store = Store(database, durable=True)
        bodies = [body for _id, _queue, _props, body, _deliveries in store.tasks()]
        store.close()
        assert len(bodies) == [5, 1205][round_]
        assert bodies[-1] == b"task %d" % (count - 1)
