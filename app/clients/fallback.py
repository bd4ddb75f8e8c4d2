"""A `limits` storage that keeps counting when the shared one cannot answer.

As the node's other shared state does (`app.state.failover`): when Redis errs or is slower
than STATE_TIMEOUT, a worker counts in its own memory, tries Redis again a second later, and
goes back to it when it answers. Nothing fails for a client because the counter is away;
limits are then per worker until it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from limits.storage import MemoryStorage, Storage

from app.clock import SYSTEM_CLOCK, Clock
from app.observability.logs import log_event

log = logging.getLogger("l104.clients")
T = TypeVar("T")


class FallbackStorage(Storage):
    """`primary`, or per-worker memory while `primary` errs."""

    STORAGE_SCHEME = None

    def __init__(self, primary: Storage, clock: Clock = SYSTEM_CLOCK, retry: float = 1.0) -> None:
        super().__init__(wrap_exceptions=False)
        self.primary = primary
        self.local = MemoryStorage()
        self._clock = clock
        self._retry = retry
        self._down_until: float | None = None

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return Exception

    def _use(self, call: Callable[[Storage], T]) -> T:
        now = self._clock.monotonic()
        if self._down_until is None or now >= self._down_until:
            try:
                result = call(self.primary)
            except Exception as error:  # any failure of the shared counter: count locally
                if self._down_until is None:
                    log_event(
                        log, "quota_storage_degraded", logging.WARNING, error=type(error).__name__
                    )
                self._down_until = now + self._retry
            else:
                if self._down_until is not None:
                    log_event(log, "quota_storage_restored")
                    self._down_until = None
                return result
        return call(self.local)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._use(lambda s: s.incr(key, expiry, amount=amount))

    def get(self, key: str) -> int:
        return self._use(lambda s: s.get(key))

    def get_expiry(self, key: str) -> float:
        return self._use(lambda s: s.get_expiry(key))

    def check(self) -> bool:
        return self._use(lambda s: s.check())

    def reset(self) -> int | None:
        self.local.reset()
        return self._use(lambda s: s.reset())

    def clear(self, key: str) -> None:
        self.local.clear(key)
        self._use(lambda s: s.clear(key))
