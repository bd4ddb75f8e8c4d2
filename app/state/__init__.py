"""Node-wide state shared by every gunicorn worker: breakers, cooldowns, trackers, heals.

`open_state(url)` picks the backend from one URL; the code above never knows which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.clock import Clock


@dataclass(frozen=True)
class BreakerRecord:
    """One breaker as stored: pybreaker's fields plus the half-open probes in flight."""

    state: str = "closed"
    failures: int = 0
    successes: int = 0
    opened_at: float | None = None
    probes: int = 0


@dataclass(frozen=True)
class Cooldown:
    """A model rests until `until` (epoch seconds) because of `reason`."""

    until: float
    reason: str


@dataclass(frozen=True)
class Admission:
    """One read of what decides where a request may go."""

    resting: dict[str, Cooldown]
    breakers: dict[str, BreakerRecord]


class StateStore(Protocol):
    """What the node keeps node-wide. Every method is atomic on its own."""

    clock: Clock

    def breaker(self, name: str) -> BreakerRecord:
        """The stored breaker (closed and zeroed if never seen)."""
        ...

    def admission(self, names: Sequence[str]) -> Admission:
        """The models resting now and the breakers of `names`, in one read (one round trip):
        what the gateway needs to choose where a request may go."""
        ...

    def breaker_transition(self, name: str, expected: str | None, new: str) -> bool:
        """Move the breaker to `new` if it is in `expected` (None: any); True if moved.

        Entering a state zeroes its counters; entering `open` sets `opened_at` to now.
        """
        ...

    def breaker_count(self, name: str, field: str, delta: int) -> int:
        """Add `delta` to `failures` or `successes`; return the new value."""
        ...

    def breaker_zero(self, name: str, field: str) -> None:
        """Set `failures` or `successes` to 0 (no write when already 0)."""
        ...

    def breaker_set_opened_at(self, name: str, opened_at: float) -> None:
        """Record when the breaker opened."""
        ...

    def acquire_probe(self, name: str, limit: int, stale_after: float) -> bool:
        """Admit one half-open probe if fewer than `limit` are in flight."""
        ...

    def release_probe(self, name: str) -> None:
        """A half-open probe ended."""
        ...

    def set_cooldown(self, model: str, until: float, reason: str) -> None:
        """Rest `model` until `until` (a later existing cooldown is kept)."""
        ...

    def cooldowns(self) -> dict[str, Cooldown]:
        """Models resting now."""
        ...

    def end_cooldowns(self, names: Sequence[str]) -> None:
        """End the cooldowns of `names` now (the others stay)."""
        ...

    def track_error(self, model: str, kind: str) -> None:
        """Count one upstream error of `kind` for `model`."""
        ...

    def model_errors(self) -> dict[str, dict[str, int]]:
        """Upstream errors per model and kind since the last heal."""
        ...

    def count_endpoint_error(self, endpoint: str, window: float) -> int:
        """Count one error on `endpoint`; return the errors in the last `window` seconds."""
        ...

    def clear(self, what: str) -> None:
        """Forget `breakers`, `cooldowns`, `model_errors` or `endpoint_errors`."""
        ...

    def record_heal(self, record: dict[str, Any]) -> int:
        """Store a heal and return the new heal generation (workers watch it)."""
        ...

    def heal_generation(self) -> int:
        """How many heals the node has recorded."""
        ...

    def heal_history(self, limit: int) -> list[dict[str, Any]]:
        """The latest heals, newest first."""
        ...

    def heal_epoch(self) -> str:
        """Which backend's heal generations these are (they restart when it changes)."""
        ...

    def acquire_recycle_slot(self, pid: int, reason: str, ttl: float) -> bool:
        """Take the node's one recycle slot for worker `pid` (a slot older than `ttl` is
        taken over); the reason is kept for the master's log."""
        ...

    def release_recycle_slot(self) -> None:
        """A fresh worker is serving: the next worker may recycle."""
        ...

    def note_recycle_reason(self, pid: int, reason: str) -> None:
        """Record why worker `pid` is leaving (for the master's log)."""
        ...

    def recycle_reason(self, pid: int) -> str | None:
        """Why worker `pid` recycled itself, if it did (read once by the master)."""
        ...
