"""The default state backend: one SQLite database (WAL) in the node's state directory.

Every worker of the node opens the same file; SQLite does the locking between processes, so a
breaker opened by one worker fails fast in all of them. Each process keeps a small pool of
connections (`app.state.sqlite_db`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.clock import SYSTEM_CLOCK, Clock
from app.state import Admission, BreakerRecord, Cooldown
from app.state.sqlite_db import SqliteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS breakers (
    name TEXT PRIMARY KEY, state TEXT NOT NULL DEFAULT 'closed',
    failures INTEGER NOT NULL DEFAULT 0, successes INTEGER NOT NULL DEFAULT 0,
    opened_at REAL, probes INTEGER NOT NULL DEFAULT 0, probes_since REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cooldowns (model TEXT PRIMARY KEY, until REAL NOT NULL,
    reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS model_errors (model TEXT NOT NULL, kind TEXT NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (model, kind));
CREATE TABLE IF NOT EXISTS endpoint_errors (endpoint TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS endpoint_errors_at ON endpoint_errors (endpoint, at);
CREATE TABLE IF NOT EXISTS heals (generation INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recycle_slot (id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER, since REAL NOT NULL DEFAULT 0);
INSERT OR IGNORE INTO recycle_slot (id, pid, since) VALUES (1, NULL, 0);
CREATE TABLE IF NOT EXISTS recycles (pid INTEGER PRIMARY KEY, reason TEXT NOT NULL,
    at REAL NOT NULL);
"""
_FIELDS = frozenset({"failures", "successes"})
_CLEARABLE = {
    "breakers": "DELETE FROM breakers",
    "cooldowns": "DELETE FROM cooldowns",
    "model_errors": "DELETE FROM model_errors",
    "endpoint_errors": "DELETE FROM endpoint_errors",
}
HEAL_HISTORY_KEPT = 200


class SqliteStateStore(SqliteFile):
    """`StateStore` on a SQLite file shared by the node's processes."""

    def __init__(self, path: Path | str, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(str(path), _SCHEMA)
        self.clock = clock

    def _ensure_breaker(self, name: str) -> None:
        self._write("INSERT OR IGNORE INTO breakers (name) VALUES (?)", (name,))

    # breakers
    def breaker(self, name: str) -> BreakerRecord:
        """The stored breaker (closed and zeroed if never seen)."""
        row = self._one(
            "SELECT state, failures, successes, opened_at, probes FROM breakers WHERE name = ?",
            (name,),
        )
        return BreakerRecord(*row) if row else BreakerRecord()

    def admission(self, names: Sequence[str]) -> Admission:
        """Resting models and the breakers of `names` (two indexed reads)."""
        marks = ", ".join("?" * len(names))
        rows = self._all(
            "SELECT name, state, failures, successes, opened_at, probes FROM breakers"
            f" WHERE name IN ({marks})",
            tuple(names),
        )
        stored = {row[0]: BreakerRecord(*row[1:]) for row in rows}
        return Admission(self.cooldowns(), {n: stored.get(n, BreakerRecord()) for n in names})

    def breaker_transition(self, name: str, expected: str | None, new: str) -> bool:
        """Compare-and-set the state; entering a state zeroes its counters."""
        self._ensure_breaker(name)
        zero = {
            "closed": "failures = 0, successes = 0, probes = 0",
            "open": "successes = 0, probes = 0",
            "half-open": "successes = 0, probes = 0",
        }[new]
        now = self.clock.now()
        sql = (
            f"UPDATE breakers SET state = ?, {zero}, probes_since = ?,"
            " opened_at = CASE WHEN ? = 'open' THEN ? ELSE opened_at END WHERE name = ?"
        )
        params: tuple[Any, ...] = (new, now, new, now, name)
        if expected is not None:
            sql += " AND state = ?"
            params += (expected,)
        return self._write(sql, params) == 1

    def breaker_count(self, name: str, field: str, delta: int) -> int:
        """Add `delta` to `failures` or `successes`; return the new value."""
        if field not in _FIELDS:
            raise ValueError(field)
        # One statement: a heal clearing the breakers between an insert and an update would
        # leave the update nothing to count on.
        row = self._one(
            f"INSERT INTO breakers (name, {field}) VALUES (?, ?) ON CONFLICT (name)"
            f" DO UPDATE SET {field} = {field} + excluded.{field} RETURNING {field}",
            (name, delta),
        )
        return int(row[0])

    def breaker_zero(self, name: str, field: str) -> None:
        """Set a counter to 0, reading first so the common case writes nothing."""
        if field not in _FIELDS:
            raise ValueError(field)
        row = self._one(f"SELECT {field} FROM breakers WHERE name = ?", (name,))
        if row and row[0]:
            self._write(f"UPDATE breakers SET {field} = 0 WHERE name = ?", (name,))

    def breaker_set_opened_at(self, name: str, opened_at: float) -> None:
        """Record when the breaker opened."""
        self._ensure_breaker(name)
        self._write("UPDATE breakers SET opened_at = ? WHERE name = ?", (opened_at, name))

    def acquire_probe(self, name: str, limit: int, stale_after: float) -> bool:
        """Admit a probe; probes older than `stale_after` s (a dead worker's) are forgotten."""
        now = self.clock.now()
        stale = now - stale_after
        return (
            self._write(
                "UPDATE breakers SET"
                " probes = CASE WHEN probes_since < :stale THEN 1 ELSE probes + 1 END,"
                " probes_since = CASE WHEN probes_since < :stale THEN :now ELSE probes_since END"
                " WHERE name = :name AND state = 'half-open'"
                " AND (probes < :limit OR probes_since < :stale)",
                {"stale": stale, "now": now, "name": name, "limit": limit},
            )
            == 1
        )

    def release_probe(self, name: str) -> None:
        """A half-open probe ended."""
        self._write("UPDATE breakers SET probes = MAX(probes - 1, 0) WHERE name = ?", (name,))

    # cooldowns and trackers
    def set_cooldown(self, model: str, until: float, reason: str) -> None:
        """Rest `model` until `until`; a later existing cooldown is kept."""
        self._write(
            "INSERT INTO cooldowns (model, until, reason) VALUES (?, ?, ?)"
            " ON CONFLICT (model) DO UPDATE SET until = excluded.until, reason = excluded.reason"
            " WHERE excluded.until > cooldowns.until",
            (model, until, reason),
        )

    def cooldowns(self) -> dict[str, Cooldown]:
        """Models resting now."""
        rows = self._all(
            "SELECT model, until, reason FROM cooldowns WHERE until > ?", (self.clock.now(),)
        )
        return {model: Cooldown(until, reason) for model, until, reason in rows}

    def end_cooldowns(self, names: Sequence[str]) -> None:
        """End the cooldowns of `names` now."""
        if names:
            marks = ", ".join("?" * len(names))
            self._write(f"DELETE FROM cooldowns WHERE model IN ({marks})", tuple(names))

    def track_error(self, model: str, kind: str) -> None:
        """Count one upstream error of `kind` for `model`."""
        self._write(
            "INSERT INTO model_errors (model, kind, count) VALUES (?, ?, 1)"
            " ON CONFLICT (model, kind) DO UPDATE SET count = count + 1",
            (model, kind),
        )

    def model_errors(self) -> dict[str, dict[str, int]]:
        """Upstream errors per model and kind since the last heal."""
        result: dict[str, dict[str, int]] = {}
        for model, kind, count in self._all("SELECT model, kind, count FROM model_errors"):
            result.setdefault(model, {})[kind] = count
        return result

    def count_endpoint_error(self, endpoint: str, window: float) -> int:
        """Count one error on `endpoint`; return the errors in the last `window` seconds."""
        now = self.clock.now()
        self._write("DELETE FROM endpoint_errors WHERE at <= ?", (now - window,))
        self._write("INSERT INTO endpoint_errors (endpoint, at) VALUES (?, ?)", (endpoint, now))
        row = self._one("SELECT COUNT(*) FROM endpoint_errors WHERE endpoint = ?", (endpoint,))
        return int(row[0])

    def clear(self, what: str) -> None:
        """Forget `breakers`, `cooldowns`, `model_errors` or `endpoint_errors`."""
        self._write(_CLEARABLE[what])

    # heals
    def record_heal(self, record: dict[str, Any]) -> int:
        """Store a heal and return the new heal generation."""
        generation = self._one(
            "INSERT INTO heals (record) VALUES (?) RETURNING generation", (json.dumps(record),)
        )[0]
        self._write("DELETE FROM heals WHERE generation <= ?", (generation - HEAL_HISTORY_KEPT,))
        return int(generation)

    def heal_generation(self) -> int:
        """How many heals the node has recorded."""
        row = self._one("SELECT MAX(generation) FROM heals")
        return int(row[0] or 0)

    def heal_epoch(self) -> str:
        """Heal generations of this node's own database."""
        return "local"

    def heal_history(self, limit: int) -> list[dict[str, Any]]:
        """The latest heals, newest first."""
        rows = self._all(
            "SELECT generation, record FROM heals ORDER BY generation DESC LIMIT ?", (limit,)
        )
        return [{"generation": g, **json.loads(r)} for g, r in rows]

    # worker recycling
    def acquire_recycle_slot(self, pid: int, reason: str, ttl: float) -> bool:
        """Take the node's one recycle slot for `pid`; a slot older than `ttl` is taken over."""
        now = self.clock.now()
        taken = self._write(
            "UPDATE recycle_slot SET pid = ?, since = ? WHERE id = 1"
            " AND (pid IS NULL OR pid = ? OR since < ?)",
            (pid, now, pid, now - ttl),
        )
        if taken:
            self.note_recycle_reason(pid, reason)
        return taken == 1

    def note_recycle_reason(self, pid: int, reason: str) -> None:
        """Record why worker `pid` is leaving (for the master's log)."""
        self._write(
            "INSERT OR REPLACE INTO recycles (pid, reason, at) VALUES (?, ?, ?)",
            (pid, reason, self.clock.now()),
        )

    def release_recycle_slot(self) -> None:
        """A fresh worker is serving: the next worker may recycle."""
        self._write("UPDATE recycle_slot SET pid = NULL WHERE id = 1 AND pid IS NOT NULL")

    def recycle_reason(self, pid: int) -> str | None:
        """Why worker `pid` recycled itself, if it did (read once, then forgotten)."""
        row = self._one("DELETE FROM recycles WHERE pid = ? RETURNING reason", (pid,))
        return str(row[0]) if row else None
