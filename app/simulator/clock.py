"""The simulator's clock for quota windows: wall time plus an offset that tests move forward
(`POST /_sim/clock`), so that no test has to sleep through a minute."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from app.simulator.errors import ControlError

MAX_ADVANCE = 366 * 86400.0


def parse_advance(body: object) -> float:
    """The seconds a `POST /_sim/clock` body (`{"advance": seconds}`) moves the clock."""
    if not isinstance(body, dict) or set(body) != {"advance"}:
        raise ControlError('the body must be {"advance": seconds}')
    value = body["advance"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ControlError("advance must be a number of seconds")
    if not 0 <= value <= MAX_ADVANCE:
        raise ControlError(f"advance must be in 0..{MAX_ADVANCE:g} (the clock never goes back)")
    return float(value)


class SimClock:
    """`source()` plus an offset; only quota windows read it."""

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._offset = 0.0

    def now(self) -> float:
        """The simulated Unix time."""
        return self._source() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` forward."""
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        """Back to wall time."""
        with self._lock:
            self._offset = 0.0

    def describe(self) -> dict[str, float]:
        """The JSON form shown by `/_sim/clock`."""
        offset = self._offset
        return {"now": self._source() + offset, "offset": offset}
