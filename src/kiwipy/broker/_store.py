"""The local broker's storage: one SQLite file in WAL mode, the broker its only writer.

Writes go into an open transaction; :meth:`Store.commit` ends it. The broker commits once per
loop turn when a publish waits for its confirm (group commit: one commit covers every publish
of that turn) and on a short timer otherwise, so acks and delivery counts never force a commit
of their own: a lost ack only means a redelivery.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ("SCHEMA_VERSION", "StateError", "Store", "StoredTask")

SCHEMA_VERSION = 1
_APPLICATION_ID = 0x6B697769  # "kiwi": marks the file as ours

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS queue (name TEXT PRIMARY KEY, declared REAL NOT NULL);
CREATE TABLE IF NOT EXISTS task (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    props TEXT NOT NULL,
    body BLOB NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0
);
"""

StoredTask = tuple[int, str, str, bytes, int]  # id, queue, props, body, deliveries


class StateError(RuntimeError):
    """The state file cannot be used (not ours, corrupt, or of a newer schema)."""


class Store:
    """The durable part of the broker's state: declared queues and their tasks."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        self._connection = _open(path)
        self._connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.epoch = self._start()
        self._in_transaction = False

    def _start(self) -> int:
        db = self._connection
        with _as_state_error("read"):
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if application_id not in (0, _APPLICATION_ID) or (application_id == 0 and tables):
                raise StateError("it is not a kiwipy broker database")
            if not tables:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            db.execute("BEGIN IMMEDIATE")
            version = self._meta("schema_version", SCHEMA_VERSION)
            if version != SCHEMA_VERSION:
                db.execute("ROLLBACK")
                raise StateError(f"its schema version {version} is not {SCHEMA_VERSION}")
            epoch = self._meta("epoch", 0) + 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (epoch,))
            db.execute("COMMIT")
        return int(epoch)

    def _meta(self, key: str, default: int) -> int:
        row = self._connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            self._connection.execute("INSERT INTO meta VALUES (?, ?)", (key, default))
            return default
        return int(row[0])

    def _begin(self) -> None:
        if not self._in_transaction:
            self._connection.execute("BEGIN")
            self._in_transaction = True

    @property
    def dirty(self) -> bool:
        return self._in_transaction

    def commit(self) -> None:
        if self._in_transaction:
            self._connection.execute("COMMIT")
            self._in_transaction = False

    def queues(self) -> list[str]:
        return [row[0] for row in self._connection.execute("SELECT name FROM queue")]

    def tasks(self) -> Iterator[StoredTask]:
        """Every stored task, oldest first."""
        yield from self._connection.execute(
            "SELECT id, queue, props, body, deliveries FROM task ORDER BY id"
        )

    def declare(self, queue: str) -> None:
        self._begin()
        self._connection.execute("INSERT OR IGNORE INTO queue VALUES (?, ?)", (queue, time.time()))

    def add(self, queue: str, props: str, body: bytes) -> int:
        self._begin()
        cursor = self._connection.execute(
            "INSERT INTO task (queue, props, body) VALUES (?, ?, ?)", (queue, props, body)
        )
        return int(cursor.lastrowid or 0)

    def delivered(self, task_id: int) -> None:
        self._begin()
        self._connection.execute(
            "UPDATE task SET deliveries = deliveries + 1 WHERE id = ?", (task_id,)
        )

    def remove(self, task_id: int) -> None:
        self._begin()
        self._connection.execute("DELETE FROM task WHERE id = ?", (task_id,))

    def close(self) -> None:
        self.commit()
        self._connection.close()


def _open(path: Path) -> sqlite3.Connection:
    with _as_state_error("open"):
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StateError(f"SQLite cannot use WAL mode there (it uses {mode!r})")
        return connection


@contextlib.contextmanager
def _as_state_error(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise StateError(f"cannot {what} the state file: {exc}") from exc
