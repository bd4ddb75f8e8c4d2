"""Time as a dependency: breakers, cooldowns, deadlines and backoff take a clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time (comparable across processes and nodes) and monotonic time (one process)."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to (for tests)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._monotonic = 0.0

    def now(self) -> float:
        """The fake wall time."""
        return self._now

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._now += seconds
        self._monotonic += seconds


SYSTEM_CLOCK = SystemClock()
