"""The simulator's mutable state: global config, keys, quotas, faults, the quota clock, call
counters and the request log."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from app.simulator.clock import SimClock
from app.simulator.errors import ControlError
from app.simulator.faults import FaultRegistry
from app.simulator.keys import KeyRing
from app.simulator.quotas import QuotaBook

REQUEST_LOG_SIZE = 200
DEFAULT_CONFIG: dict[str, Any] = {
    "stream_chunks": 4,
    "chunk_delay_ms": 0,
    "latency_ms": 0,
    # 1: every stream chunk carries `simSentAt`, the Unix time it was written (for benchmarks)
    "stamp_chunks": 0,
}
MAX_STREAM_CHUNKS = 10_000
MAX_DELAY_MS = 600_000
# The kinds `closed_by_client_by_fault` always shows (0 until counted); a write failing on any
# other call adds its fault's kind, or NO_FAULT. Both counters are left out of the stats until
# a client closed a call since the last reset, so the stats of a run without any keep the
# shape they always had.
WAITING_FAULTS = ("hang", "slow", "stall")
NO_FAULT = "none"


class ConfigError(ControlError):
    """A config change that cannot be accepted."""


class Config:
    """Global behaviour (`stream_chunks`, `chunk_delay_ms`, `latency_ms`), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict(DEFAULT_CONFIG)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the current values."""
        with self._lock:
            return dict(self._values)

    def reset(self) -> None:
        """Back to the defaults."""
        with self._lock:
            self._values = dict(DEFAULT_CONFIG)

    def merge(self, changes: object) -> dict[str, Any]:
        """Validate and apply `changes` (all or nothing); return the new config."""
        if not isinstance(changes, dict):
            raise ConfigError("the body must be a JSON object")
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in DEFAULT_CONFIG:
                raise ConfigError(f"unknown setting {name!r} (known: {', '.join(DEFAULT_CONFIG)})")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number")
            if name == "stream_chunks":
                if not isinstance(value, int) or not 1 <= value <= MAX_STREAM_CHUNKS:
                    raise ConfigError(f"stream_chunks must be an integer in 1..{MAX_STREAM_CHUNKS}")
            elif name == "stamp_chunks":
                if value not in (0, 1):
                    raise ConfigError("stamp_chunks must be 0 or 1")
            elif not 0 <= value <= MAX_DELAY_MS:
                raise ConfigError(f"{name} must be in 0..{MAX_DELAY_MS}")
            checked[name] = value
        with self._lock:
            self._values.update(checked)
            return dict(self._values)


class Recorder:
    """Counts API calls (by model, method and key id; in flight now, and the most at once
    since the last reset; closed by their client before they were answered) and keeps the
    last `REQUEST_LOG_SIZE` of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._total = 0
        self._by_model: dict[str, int] = {}
        self._by_method: dict[str, int] = {}
        self._by_key: dict[str, int] = {}
        self._by_key_model: dict[str, dict[str, int]] = {}
        self._faults_served = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._closed_by_client = 0
        self._closed_by_fault = dict.fromkeys(WAITING_FAULTS, 0)

    def call_started(self) -> None:
        """An API call is being answered (counted until `call_ended`)."""
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def call_ended(self) -> None:
        """An API call's answer is complete (or abandoned)."""
        with self._lock:
            self._in_flight -= 1

    def record(self, entry: dict[str, Any]) -> None:
        """Count one API call and append it to the log."""
        model = entry.get("model")
        method = entry.get("api_method")
        owner = entry.get("key_id")
        with self._lock:
            self._total += 1
            if model is not None:
                self._by_model[model] = self._by_model.get(model, 0) + 1
            if method is not None:
                self._by_method[method] = self._by_method.get(method, 0) + 1
            if owner is not None:
                self._by_key[owner] = self._by_key.get(owner, 0) + 1
                if model is not None:
                    models = self._by_key_model.setdefault(owner, {})
                    models[model] = models.get(model, 0) + 1
            self._log.append(entry)

    def fault_served(self) -> None:
        """Count one call answered (or delayed) by a fault."""
        with self._lock:
            self._faults_served += 1

    def closed_by_client(self, fault_kind: str | None) -> None:
        """Count one call whose client closed the connection before it was answered."""
        kind = fault_kind or NO_FAULT
        with self._lock:
            self._closed_by_client += 1
            self._closed_by_fault[kind] = self._closed_by_fault.get(kind, 0) + 1

    def stats(self) -> dict[str, Any]:
        """The counters in their JSON form."""
        with self._lock:
            closed: dict[str, Any] = {
                "closed_by_client": self._closed_by_client,
                "closed_by_client_by_fault": dict(self._closed_by_fault),
            }
            return {
                "total": self._total,
                "by_model": dict(self._by_model),
                "by_method": dict(self._by_method),
                "by_key": dict(self._by_key),
                "by_key_model": {k: dict(v) for k, v in self._by_key_model.items()},
                "faults_served": self._faults_served,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                **closed,
            }

    def requests(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` logged requests, oldest first."""
        with self._lock:
            entries = list(self._log)
        return entries[-limit:] if limit > 0 else []

    def reset(self) -> None:
        """Zero the counters and forget the log."""
        with self._lock:
            self._log.clear()
            self._total = 0
            self._by_model.clear()
            self._by_method.clear()
            self._by_key.clear()
            self._by_key_model.clear()
            self._faults_served = 0
            self._peak_in_flight = self._in_flight
            self._closed_by_client = 0
            self._closed_by_fault = dict.fromkeys(WAITING_FAULTS, 0)


class SimulatorState:
    """Everything the request handlers share."""

    def __init__(
        self,
        api_keys: Iterable[str],
        models: list[str],
        verbose: bool = False,
        clock: SimClock | None = None,
    ) -> None:
        self.keys = KeyRing(api_keys)
        self.models = list(models)
        self.model_set = frozenset(models)
        self.verbose = verbose
        self.config = Config()
        self.faults = FaultRegistry()
        self.quotas = QuotaBook()
        self.clock = clock or SimClock()
        self.recorder = Recorder()
        self.stopping = threading.Event()

    def reset(self) -> None:
        """Clear counters, faults, quotas, the request log, config, the clock's offset and
        the keys added at run time (the keys given at start stay)."""
        self.recorder.reset()
        self.faults.clear()
        self.quotas.clear()
        self.keys.reset()
        self.clock.reset()
        self.config.reset()
