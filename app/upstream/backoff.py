"""Retry delays and per-request deadlines, as small pure pieces with injected time."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from app.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n: full jitter over base x multiplier^(n-1), capped."""

    base: float = 0.25
    multiplier: float = 2.0
    cap: float = 8.0

    def ceiling(self, retry: int) -> float:
        """The largest delay before retry number `retry` (1 for the first retry)."""
        if retry < 1:
            return 0.0
        return min(self.cap, self.base * self.multiplier ** (retry - 1))

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """A delay drawn uniformly from [0, ceiling(retry)] ("full jitter")."""
        return rand() * self.ceiling(retry)


class Deadline:
    """One deadline per client request: bounds attempts, rotations and sleeps together."""

    def __init__(self, seconds: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self.seconds = seconds
        self.expires_at = clock.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; never negative."""
        return max(0.0, self.expires_at - self._clock.monotonic())

    def expired(self) -> bool:
        """True once no time is left."""
        return self.remaining() <= 0.0

    def allows(self, seconds: float) -> bool:
        """True when `seconds` more still end before the deadline."""
        return self.remaining() > seconds
