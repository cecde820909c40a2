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


SMALL_FILES_ONLY = textwrap.dedent(
    """
    import logging, resource, signal, sys
    from pathlib import Path
    from kiwipy.broker._store import Store
    logging.basicConfig()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-large write fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    store = Store(Path(sys.argv[1]), durable=True)
    wal = Path(sys.argv[1] + "-wal")
    print(wal.stat().st_size)
    store.add("q", "{}", b"still stored")
    store.commit()
    store.close()
    """
)


def test_a_wal_that_cannot_be_grown_leaves_the_broker_working(tmp_path: Path) -> None:
    """No room for the WAL's zeros (a full disk, a quota; here a file size limit): the store
    opens anyway, with the WAL as it was, and commits as before."""
    database = tmp_path / "broker.sqlite3"
    run = [sys.executable, "-c", SMALL_FILES_ONLY, str(database)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 1 << 20
    assert "Could not grow the WAL" in done.stderr
    store = Store(database, durable=True)
    bodies = [body for _id, _queue, _props, body, _deliveries in store.tasks()]
    store.close()
    assert bodies == [b"still stored"]
