"""A retry budget, as Envoy has: extra upstream attempts (retries and rotations) may add at
most `ratio` to the client requests of the last `window` seconds, plus a small allowance, so
a failing upstream never sees a retry storm."""

from __future__ import annotations

import threading
from collections import deque

from app.clock import SYSTEM_CLOCK, Clock


class RetryBudget:
    """Counts first attempts and extra attempts in a sliding window; grants extra ones."""

    def __init__(
        self, ratio: float, allowance: int, window: float = 10.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.ratio = ratio
        self.allowance = allowance
        self.window = window
        self._clock = clock
        self._requests: deque[float] = deque()
        self._extra: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        for times in (self._requests, self._extra):
            while times and times[0] <= horizon:
                times.popleft()

    def request(self) -> None:
        """A client request starts (its first upstream attempt is always allowed)."""
        now = self._clock.monotonic()
        with self._lock:
            self._trim(now)
            self._requests.append(now)

    def try_extra(self) -> bool:
        """May one more attempt (a retry or another model) go upstream now?"""
        now = self._clock.monotonic()
        with self._lock:
            self._trim(now)
            if len(self._extra) >= self.ratio * len(self._requests) + self.allowance:
                return False
            self._extra.append(now)
            return True

    def usage(self) -> dict[str, float]:
        """This worker's window now: client requests, extra attempts, and the extra
        attempts the budget allows."""
        now = self._clock.monotonic()
        with self._lock:
            self._trim(now)
            requests, extra = len(self._requests), len(self._extra)
        return {
            "window_seconds": self.window,
            "requests": requests,
            "extra_attempts": extra,
            "extra_allowed": round(self.ratio * requests + self.allowance, 1),
        }
