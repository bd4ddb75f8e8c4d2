"""One SQLite file shared by the node's processes: a connection per thread, WAL mode."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any


def os_thread_local() -> threading.local:
    """Storage per OS thread. Under gevent, `threading.local` is per greenlet, which would
    open a connection per request; greenlets of one thread can share one, since a SQLite
    call never yields to another greenlet."""
    try:
        from gevent import monkey  # type: ignore[import-untyped]
    except ImportError:
        return threading.local()
    if monkey.is_module_patched("threading"):
        local: threading.local = monkey.get_original("threading", "local")()
        return local
    return threading.local()


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
    """Connections to one SQLite file, and statements that never linger."""

    def __init__(self, path: str, schema: str) -> None:
        self.path = path
        self._local = os_thread_local()
        _while_locked(lambda: self._db().executescript(schema))

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            # Switching to WAL needs the database to itself and does not wait on the busy
            # timeout: workers booting together would fail, and a worker that fails to boot
            # halts gunicorn's master. (The master creates the database first; this is the
            # belt to those braces.)
            _while_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("PRAGMA synchronous=OFF")
            self._local.db = db
        return db

    # Every statement is run to its end and its cursor closed: a statement left open keeps
    # its transaction, which pins an old snapshot for reads and holds the lock for writes.
    def _write(self, sql: str, params: Any = ()) -> int:
        cursor = self._db().execute(sql, params)
        try:
            cursor.fetchall()
            return cursor.rowcount
        finally:
            cursor.close()

    def _one(self, sql: str, params: Any = ()) -> Any:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: Any = ()) -> list[Any]:
        cursor = self._db().execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()
