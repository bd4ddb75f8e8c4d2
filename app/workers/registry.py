"""What each worker of this node is doing, for `/self/status` and the console: a small JSON
file per worker in the node's state directory, rewritten every few seconds by the worker
itself and removed by the master when the worker leaves.

Workers belong to one node, so this is node-local on purpose (unlike breakers and heals,
which Redis shares between nodes). A worker also keeps its last healing events and its
calls per model over the last minutes in memory; the files carry them to whichever worker
answers `/self/status`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

WRITE_EVERY = 2.0  # seconds between two writes of a worker's file
RECENT_MINUTES = 5
# The log events the console lists as "the last healing events".
HEALING_EVENTS = frozenset(
    {
        "auto_heal_triggered",
        "heal",
        "heal_held_back",
        "watchdog_heal",
        "circuit_breaker_open",
        "circuit_breaker_half_open",
        "circuit_breaker_closed",
        "http_client_auto_reset",
        "model_cooldown",
        "model_rotation",
        "api_key_disabled",
        "worker_recycle_requested",
        "worker_recycling",
        "worker_overloaded",
        "worker_overload_cleared",
        "state_backend_degraded",
        "state_backend_restored",
    }
)
EVENTS_KEPT = 50


class RecentCalls:
    """Upstream calls per model in one-minute buckets, the last RECENT_MINUTES minutes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, dict[str, list[int]]] = {}

    def count(self, model: str, ok: bool) -> None:
        """One upstream call of `model` ended, answered or not."""
        minute = int(self._clock() // 60)
        with self._lock:
            bucket = self._buckets.setdefault(minute, {})
            pair = bucket.setdefault(model, [0, 0])
            pair[0] += 1
            pair[1] += not ok
            for old in [m for m in self._buckets if m <= minute - RECENT_MINUTES]:
                del self._buckets[old]

    def totals(self) -> dict[str, dict[str, int]]:
        """`{model: {"calls", "errors"}}` over the last RECENT_MINUTES minutes."""
        since = int(self._clock() // 60) - RECENT_MINUTES
        result: dict[str, dict[str, int]] = {}
        with self._lock:
            for minute, bucket in self._buckets.items():
                if minute <= since:
                    continue
                for model, (calls, errors) in bucket.items():
                    entry = result.setdefault(model, {"calls": 0, "errors": 0})
                    entry["calls"] += calls
                    entry["errors"] += errors
        return result


class EventTrail(logging.Handler):
    """Keeps this worker's last healing events (the JSON log lines' fields)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)

    def emit(self, record: logging.LogRecord) -> None:
        """Remember a record whose `event` is a healing event."""
        event = getattr(record, "event", None)
        if event not in HEALING_EVENTS:
            return
        fields = {
            k: v
            for k, v in record.__dict__.items()
            if k in _EVENT_FIELDS and isinstance(v, str | int | float | bool | None)
        }
        self.events.append({"at": record.created, "event": event, "pid": record.process, **fields})


# Fields worth showing; anything else (and every secret) stays out of the trail.
_EVENT_FIELDS = frozenset(
    {
        "model",
        "key",
        "reason",
        "level",
        "trigger",
        "from_model",
        "to_model",
        "from_state",
        "failures",
        "seconds",
        "errors",
        "endpoint",
        "by_operator",
        "limit",
    }
)


def workers_dir(state_dir: Path) -> Path:
    """Where the node's workers write their files."""
    return state_dir / "workers"


class WorkerFile:
    """This worker's file: rewritten at most every WRITE_EVERY seconds."""

    def __init__(self, directory: Path, describe: Callable[[], dict[str, Any]]) -> None:
        self.directory = directory
        self._describe = describe
        self._written = 0.0

    def tick(self, force: bool = False) -> None:
        """Write the file if it is due (or `force`)."""
        now = time.monotonic()
        if not force and now - self._written < WRITE_EVERY:
            return
        self._written = now
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._describe(), default=str))
        temporary.replace(path)  # readers never see half a file


def read_workers(directory: Path) -> list[dict[str, Any]]:
    """Every live worker's last file, oldest worker first."""
    workers = []
    for path in directory.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(entry.get("pid", 0))):
            workers.append(entry)
    return sorted(workers, key=lambda w: w.get("started", 0))


def remove_worker(directory: Path, pid: int) -> None:
    """The master: a worker left, forget its file."""
    (directory / f"{pid}.json").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
