"""Shared state on Redis that degrades to the node's own SQLite while Redis is unreachable.

No client request fails because of Redis: a call that errors or times out is answered from
the local store, `state_backend_degraded` is logged once, and Redis is tried again after
`retry_after` seconds; `state_backend_restored` is logged when it answers again. Node-local
state (the recycle slot and reasons the master reads) always lives in SQLite.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from app.observability import metrics
from app.observability.logs import log_event
from app.state import Admission, BreakerRecord, Cooldown
from app.state.redis_store import RedisStateStore
from app.state.sqlite_store import SqliteStateStore

T = TypeVar("T")
log = logging.getLogger("l104.state")


class FailoverStateStore:
    """`StateStore` on Redis with SQLite standing in while Redis is down or slow."""

    def __init__(
        self, primary: RedisStateStore, local: SqliteStateStore, retry_after: float = 1.0
    ) -> None:
        self.primary = primary
        self.local = local
        self.clock = local.clock
        self.retry_after = retry_after
        self.degraded_since: float | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """Which backend answers now: `redis`, or `local` while degraded."""
        return "local" if self.degraded_since is not None else "redis"

    def _call(self, shared: Callable[[], T], fallback: Callable[[], T]) -> T:
        if self.degraded_since is not None and self.clock.monotonic() < self._next_try:
            return fallback()
        try:
            result = shared()
        except (redis.RedisError, OSError) as exc:
            self._degrade(exc)
            return fallback()
        if self.degraded_since is not None:
            self._restore()
        return result

    def _degrade(self, exc: BaseException) -> None:
        with self._lock:
            self._next_try = self.clock.monotonic() + self.retry_after
            if self.degraded_since is not None:
                return
            self.degraded_since = self.clock.now()
        log_event(
            log,
            "state_backend_degraded",
            logging.ERROR,
            error=type(exc).__name__,
            fallback="local",
            retry_after=self.retry_after,
        )
        metrics.STATE_BACKEND_DEGRADED.inc()
        metrics.STATE_BACKEND_LOCAL.set(1)

    def _restore(self) -> None:
        with self._lock:
            since, self.degraded_since = self.degraded_since, None
        if since is not None:
            log_event(
                log,
                "state_backend_restored",
                backend="redis",
                degraded_seconds=round(self.clock.now() - since, 3),
            )
            metrics.STATE_BACKEND_LOCAL.set(0)

    # shared state: Redis, else local
    def breaker(self, name: str) -> BreakerRecord:
        return self._call(lambda: self.primary.breaker(name), lambda: self.local.breaker(name))

    def admission(self, names: Sequence[str]) -> Admission:
        return self._call(
            lambda: self.primary.admission(names), lambda: self.local.admission(names)
        )

    def breaker_transition(self, name: str, expected: str | None, new: str) -> bool:
        return self._call(
            lambda: self.primary.breaker_transition(name, expected, new),
            lambda: self.local.breaker_transition(name, expected, new),
        )

    def breaker_count(self, name: str, field: str, delta: int) -> int:
        return self._call(
            lambda: self.primary.breaker_count(name, field, delta),
            lambda: self.local.breaker_count(name, field, delta),
        )

    def breaker_zero(self, name: str, field: str) -> None:
        self._call(
            lambda: self.primary.breaker_zero(name, field),
            lambda: self.local.breaker_zero(name, field),
        )

    def breaker_set_opened_at(self, name: str, opened_at: float) -> None:
        self._call(
            lambda: self.primary.breaker_set_opened_at(name, opened_at),
            lambda: self.local.breaker_set_opened_at(name, opened_at),
        )

    def acquire_probe(self, name: str, limit: int, stale_after: float) -> bool:
        return self._call(
            lambda: self.primary.acquire_probe(name, limit, stale_after),
            lambda: self.local.acquire_probe(name, limit, stale_after),
        )

    def release_probe(self, name: str) -> None:
        self._call(lambda: self.primary.release_probe(name), lambda: self.local.release_probe(name))

    def set_cooldown(self, model: str, until: float, reason: str) -> None:
        self._call(
            lambda: self.primary.set_cooldown(model, until, reason),
            lambda: self.local.set_cooldown(model, until, reason),
        )

    def cooldowns(self) -> dict[str, Cooldown]:
        return self._call(self.primary.cooldowns, self.local.cooldowns)

    def end_cooldowns(self, names: Sequence[str]) -> None:
        self.local.end_cooldowns(names)
        self._call(lambda: self.primary.end_cooldowns(names), lambda: None)

    def track_error(self, model: str, kind: str) -> None:
        self._call(
            lambda: self.primary.track_error(model, kind),
            lambda: self.local.track_error(model, kind),
        )

    def model_errors(self) -> dict[str, dict[str, int]]:
        return self._call(self.primary.model_errors, self.local.model_errors)

    def count_endpoint_error(self, endpoint: str, window: float) -> int:
        return self._call(
            lambda: self.primary.count_endpoint_error(endpoint, window),
            lambda: self.local.count_endpoint_error(endpoint, window),
        )

    def clear(self, what: str) -> None:
        self.local.clear(what)
        self._call(lambda: self.primary.clear(what), lambda: None)

    def record_heal(self, record: dict[str, Any]) -> int:
        return self._call(
            lambda: self.primary.record_heal(record), lambda: self.local.record_heal(record)
        )

    def heal_generation(self) -> int:
        return self._call(self.primary.heal_generation, self.local.heal_generation)

    def heal_history(self, limit: int) -> list[dict[str, Any]]:
        return self._call(
            lambda: self.primary.heal_history(limit), lambda: self.local.heal_history(limit)
        )

    def heal_epoch(self) -> str:
        """Heal generations count separately in each backend."""
        return self.backend

    # node-local state: always SQLite
    def acquire_recycle_slot(self, pid: int, reason: str, ttl: float) -> bool:
        return self.local.acquire_recycle_slot(pid, reason, ttl)

    def release_recycle_slot(self) -> None:
        self.local.release_recycle_slot()

    def note_recycle_reason(self, pid: int, reason: str) -> None:
        self.local.note_recycle_reason(pid, reason)

    def recycle_reason(self, pid: int) -> str | None:
        return self.local.recycle_reason(pid)
