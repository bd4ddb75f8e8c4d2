"""A `limits` storage on the node's SQLite state file, so Flask-Limiter counts node-wide.

Registered under the scheme `l104sqlite` (`l104sqlite:///path/to/state.db`); the Redis backend
uses Flask-Limiter's own `redis://` storage instead.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from limits.storage import Storage

from app.state.sqlite_db import SqliteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_limits (key TEXT PRIMARY KEY, count INTEGER NOT NULL,
    expires_at REAL NOT NULL);
"""


class SqliteLimitStorage(Storage, SqliteFile):
    """Fixed-window counters in SQLite, shared by every worker of the node."""

    STORAGE_SCHEME = ["l104sqlite"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: Any) -> None:
        Storage.__init__(self, uri, wrap_exceptions=wrap_exceptions, **options)
        SqliteFile.__init__(self, uri.split("://", 1)[1], _SCHEMA)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the window counter, starting a new window when it expired."""
        now = time.time()
        row = self._one(
            "INSERT INTO rate_limits (key, count, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET"
            " count = CASE WHEN expires_at <= ? THEN excluded.count"
            " ELSE count + excluded.count END,"
            " expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at"
            " ELSE expires_at END"
            " RETURNING count",
            (key, amount, now + expiry, now, now),
        )
        return int(row[0])

    def get(self, key: str) -> int:
        """The count of the current window (0 once it expired)."""
        row = self._one(
            "SELECT count FROM rate_limits WHERE key = ? AND expires_at > ?", (key, time.time())
        )
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """When the current window ends (epoch seconds)."""
        row = self._one("SELECT expires_at FROM rate_limits WHERE key = ?", (key,))
        return float(row[0]) if row else time.time()

    def check(self) -> bool:
        """The database answers."""
        try:
            self._one("SELECT 1")
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        """Forget every counter (healing)."""
        return self._write("DELETE FROM rate_limits")

    def clear(self, key: str) -> None:
        """Forget one counter."""
        self._write("DELETE FROM rate_limits WHERE key = ?", (key,))
