"""When to hedge a call and when to give up on an attempt, from the latencies of each model's
recent successful attempts.

The hedge delay (Envoy's `hedge_on_per_try_timeout`; Dean and Barroso, "The Tail at Scale")
is a high percentile (HEDGE_PERCENTILE) of a sliding window of one model's latencies for one
kind of call (a unary answer, a stream's first event, an embedding), never below
HEDGE_MIN_DELAY and never past what is left of the request's deadline. The stall timeout is a
multiple of the window's 99th percentile between a floor and a cap (UPSTREAM_STALL_TIMEOUT
fixes it): an attempt silent for that long is abandoned as a failure, where a hedge only
trims a tail. A window with too few samples gives the defaults: no hedge sooner than
`default_delay`, no stall sooner than the cap.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from app.clock import SYSTEM_CLOCK, Clock
from app.upstream.retry_budget import RetryBudget

UNARY = "unary"  # a whole answer
STREAM = "stream"  # a stream's first event
EMBED = "embed"  # an embedding (never rotated)
COUNT = "count"  # countTokens: quick, whatever the model would write


@dataclass(frozen=True)
class HedgeConfig:
    """The settings of hedging and stall detection (see README, Hedged attempts)."""

    enabled: bool = True
    percentile: float = 95.0
    min_delay: float = 0.5
    default_delay: float = 5.0
    max_hedges: int = 1
    budget_ratio: float = 0.05
    budget_allowance: int = 2
    stall_timeout: float | None = None  # fixed; None: adaptive
    stall_multiple: float = 4.0
    # A model whose answers suddenly take 10 s instead of 1 s (overloaded upstream) must not
    # see every attempt cut off: the floor is far above any window's usual latency.
    stall_floor: float = 30.0
    stall_cap: float = 110.0
    window: int = 200
    min_samples: int = 20
    max_age: float = 300.0


class LatencyWindow:
    """The latencies of the last `size` successful attempts of one (model, kind), none older
    than `max_age` seconds; percentiles are recomputed at most every `size // 20` samples."""

    def __init__(self, size: int, max_age: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.size = size
        self.max_age = max_age
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._sorted: list[float] | None = None
        self._stale = 0

    def add(self, seconds: float) -> None:
        """One successful attempt's latency."""
        with self._lock:
            self._samples.append((self._clock.monotonic(), seconds))
            self._stale += 1
            if self._stale >= max(1, self.size // 20):
                self._sorted = None

    def count(self) -> int:
        """Samples in the window now."""
        with self._lock:
            return len(self._recent())

    def percentile(self, p: float) -> float | None:
        """The `p`th percentile (nearest rank) of the window, or None when it is empty."""
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(seconds for _, seconds in self._recent())
                self._stale = 0
            values = self._sorted
        if not values:
            return None
        rank = min(len(values) - 1, max(0, math.ceil(p * len(values) / 100 - 1e-9) - 1))
        return values[rank]

    def _recent(self) -> deque[tuple[float, float]]:
        horizon = self._clock.monotonic() - self.max_age
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
            self._sorted = None
        return self._samples


class Hedging:
    """Per-worker latency windows, the hedge budget, and the delays drawn from them."""

    def __init__(self, config: HedgeConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self._clock = clock
        self.budget = RetryBudget(config.budget_ratio, config.budget_allowance, clock=clock)
        self._windows: dict[tuple[str, str], LatencyWindow] = {}
        self._lock = threading.Lock()

    def window(self, model: str, kind: str) -> LatencyWindow:
        """The window of one (model, kind), made on first use."""
        found = self._windows.get((model, kind))
        if found is not None:
            return found
        with self._lock:
            return self._windows.setdefault(
                (model, kind),
                LatencyWindow(self.config.window, self.config.max_age, self._clock),
            )

    def observe(self, model: str, kind: str, seconds: float) -> None:
        """A successful attempt of `model` took `seconds` (to its answer or first event)."""
        self.window(model, kind).add(seconds)

    def _percentile(self, model: str, kind: str, p: float) -> float | None:
        window = self.window(model, kind)
        if window.count() < self.config.min_samples:
            return None
        return window.percentile(p)

    def delay(self, model: str, kind: str, remaining: float) -> float | None:
        """Seconds to wait before hedging an attempt of `model`; None: no hedge (hedging off,
        or the delay would not leave the hedge any time before the deadline)."""
        if not self.config.enabled or self.config.max_hedges < 1:
            return None
        observed = self._percentile(model, kind, self.config.percentile)
        delay = max(
            self.config.min_delay, observed if observed is not None else self.config.default_delay
        )
        return delay if delay < remaining else None

    def stall_timeout(self, model: str, kind: str) -> float:
        """Seconds of silence after which an attempt of `model` is abandoned."""
        if self.config.stall_timeout is not None:
            return self.config.stall_timeout
        p99 = self._percentile(model, kind, 99.0)
        if p99 is None:
            return self.config.stall_cap
        return min(
            self.config.stall_cap, max(self.config.stall_floor, self.config.stall_multiple * p99)
        )

    def delays(self) -> dict[str, dict[str, float | None]]:
        """The current hedge delay of every (model, kind) seen, for status and metrics."""
        with self._lock:
            keys = list(self._windows)
        shown: dict[str, dict[str, float | None]] = {}
        for model, kind in keys:
            shown.setdefault(model, {})[kind] = self.delay(model, kind, float("inf"))
        return shown
