"""One SQLite file shared by the node's processes: a small pool of connections, WAL mode."""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
MAX_CONNECTIONS = 4  # per process; a statement holds one for microseconds


def _while_locked(step: Callable[[], object], patience: float = 10.0) -> None:
    """Run `step`, retrying while another process holds the database locked."""
    give_up = time.monotonic() + patience
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                raise
            time.sleep(0.01)


class SqliteFile:
    """Connections to one SQLite file, and statements that never linger.

    Connections are pooled, not kept per thread: a statement holds one for microseconds, so
    `max_connections` serve a worker's hundreds of gthread threads (a connection per thread
    cost ~176 kB and three file descriptors each, and grew with the busiest moment's
    concurrency). A SQLite call never yields to another greenlet, so under gevent the same
    holds. Connections are never carried across fork: a process opens its own.
    """

    def __init__(self, path: str, schema: str, max_connections: int = MAX_CONNECTIONS) -> None:
        self.path = path
        self.max_connections = max_connections
        self._pid = os.getpid()
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(max_connections)
        _while_locked(lambda: self._run(lambda db: db.executescript(schema)))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        # Switching to WAL needs the database to itself and does not wait on the busy
        # timeout: workers booting together would fail, and a worker that fails to boot
        # halts gunicorn's master. (The master creates the database first; this is the
        # belt to those braces.)
        _while_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
        db.execute("PRAGMA synchronous=OFF")
        return db

    def _run(self, use: Callable[[sqlite3.Connection], T]) -> T:
        """`use` one connection of this process's pool (a new one if all are busy)."""
        if os.getpid() != self._pid:  # forked: the parent's connections are not ours
            self._pid, self._pool = os.getpid(), queue.SimpleQueue()
            self._slots = threading.BoundedSemaphore(self.max_connections)
        with self._slots:  # SQLite has one writer at a time: more would only wait inside
            try:
                db = self._pool.get_nowait()
            except queue.Empty:
                db = self._connect()
            try:
                return use(db)
            finally:
                self._pool.put(db)

    @property
    def connections(self) -> int:
        """Idle connections in this process's pool (all of them, between statements)."""
        return self._pool.qsize()

    # Every statement is run to its end and its cursor closed: a statement left open keeps
    # its transaction, which pins an old snapshot for reads and holds the lock for writes.
    def _write(self, sql: str, params: Any = ()) -> int:
        def write(db: sqlite3.Connection) -> int:
            cursor = db.execute(sql, params)
            try:
                cursor.fetchall()
                return cursor.rowcount
            finally:
                cursor.close()

        return self._run(write)

    def _one(self, sql: str, params: Any = ()) -> Any:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: Any = ()) -> list[Any]:
        def read(db: sqlite3.Connection) -> list[Any]:
            cursor = db.execute(sql, params)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()

        return self._run(read)
