"""A `limits` storage on the node's SQLite state file, so Flask-Limiter counts node-wide.

Registered under the scheme `l104sqlite` (`l104sqlite:///path/to/state.db`); the Redis backend
uses Flask-Limiter's own `redis://` storage instead.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

from limits.storage import Storage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_limits (key TEXT PRIMARY KEY, count INTEGER NOT NULL,
    expires_at REAL NOT NULL);
"""


class SqliteLimitStorage(Storage):
    """Fixed-window counters in SQLite, shared by every worker of the node."""

    STORAGE_SCHEME = ["l104sqlite"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.path = uri.split("://", 1)[1]
        self._local = threading.local()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            self._local.db = db
        return db

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the window counter, starting a new window when it expired."""
        now = time.time()
        row = (
            self._db()
            .execute(
                "INSERT INTO rate_limits (key, count, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                " count = CASE WHEN expires_at <= ? THEN excluded.count"
                " ELSE count + excluded.count END,"
                " expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at"
                " ELSE expires_at END"
                " RETURNING count",
                (key, amount, now + expiry, now, now),
            )
            .fetchone()
        )
        return int(row[0])

    def get(self, key: str) -> int:
        """The count of the current window (0 once it expired)."""
        row = (
            self._db()
            .execute(
                "SELECT count FROM rate_limits WHERE key = ? AND expires_at > ?", (key, time.time())
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """When the current window ends (epoch seconds)."""
        row = (
            self._db()
            .execute("SELECT expires_at FROM rate_limits WHERE key = ?", (key,))
            .fetchone()
        )
        return float(row[0]) if row else time.time()

    def check(self) -> bool:
        """The database answers."""
        try:
            self._db().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        """Forget every counter (healing)."""
        return int(self._db().execute("DELETE FROM rate_limits").rowcount)

    def clear(self, key: str) -> None:
        """Forget one counter."""
        self._db().execute("DELETE FROM rate_limits WHERE key = ?", (key,))
