"""Per-model circuit breakers on pybreaker's states, storage and listeners.

pybreaker's `CircuitBreaker.call()` holds the breaker's lock across the protected call, which
serialises every upstream call of a worker. Here the lock is held only while deciding
(`admit`) and while recording the outcome; the upstream call runs between the two, unlocked.
State lives in the node-wide `StateStore`, so every worker sees the same breaker, and
transitions are compare-and-set, so exactly one process announces each one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pybreaker
from pybreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN

from app.state import BreakerRecord, StateStore


class BreakerOpenError(Exception):
    """The breaker refused a call without trying it; retry after `retry_after` seconds."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker {name} is open")
        self.name = name
        self.retry_after = max(retry_after, 0.0)


@dataclass(frozen=True)
class Permit:
    """Leave to make one upstream call; `probe` marks a half-open trial call, `clean` one
    admitted while the breaker was closed with no failure counted."""

    name: str
    probe: bool
    clean: bool = False


class SharedBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage over the node-wide `StateStore`."""

    def __init__(self, name: str, store: StateStore) -> None:
        super().__init__(name)
        self._store = store

    @property
    def state(self) -> str:
        return self._store.breaker(self.name).state

    @state.setter
    def state(self, state: str) -> None:
        self._store.breaker_transition(self.name, None, state)

    def increment_counter(self) -> None:
        self._store.breaker_count(self.name, "failures", 1)

    def reset_counter(self) -> None:
        self._store.breaker_zero(self.name, "failures")

    def increment_success_counter(self) -> None:
        self._store.breaker_count(self.name, "successes", 1)

    def reset_success_counter(self) -> None:
        self._store.breaker_zero(self.name, "successes")

    @property
    def counter(self) -> int:
        return self._store.breaker(self.name).failures

    @property
    def success_counter(self) -> int:
        return self._store.breaker(self.name).successes

    @property
    def opened_at(self) -> datetime | None:
        opened_at = self._store.breaker(self.name).opened_at
        return None if opened_at is None else datetime.fromtimestamp(opened_at, UTC)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._store.breaker_set_opened_at(self.name, value.timestamp())


class ModelBreaker(pybreaker.CircuitBreaker):
    """A breaker for one model: `admit()`, call upstream unlocked, then record the outcome."""

    def __init__(
        self,
        name: str,
        store: StateStore,
        *,
        fail_max: int,
        reset_timeout: float,
        max_probes: int = 1,
        probe_ttl: float = 60.0,
        listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        self._store = store
        self.max_probes = max_probes
        self.probe_ttl = probe_ttl
        super().__init__(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=SharedBreakerStorage(name, store),
            listeners=listeners,
            name=name,
            throw_new_error_on_trip=False,
        )

    @property
    def name(self) -> str:
        return str(self._name)

    @name.setter
    def name(self, name: str) -> None:
        self._name = name

    @property
    def state(
        self,
    ) -> pybreaker.CircuitClosedState | pybreaker.CircuitHalfOpenState | pybreaker.CircuitOpenState:
        """The current state; a change made by another process is adopted silently."""
        return self._adopt(self.current_state)

    @state.setter
    def state(self, state_str: str) -> None:
        self._state = self._create_new_state(state_str, prev_state=self._state, notify=True)

    def _adopt(
        self, current: str
    ) -> pybreaker.CircuitClosedState | pybreaker.CircuitHalfOpenState | pybreaker.CircuitOpenState:
        if current != self._state.name:
            self._state = self._create_new_state(current, prev_state=self._state, notify=False)
        return self._state

    def _move(self, expected: str | None, new: str) -> bool:
        """Compare-and-set in the store; only the process that wins tells the listeners."""
        with self._lock:
            if not self._store.breaker_transition(self.name, expected, new):
                return False
            self._state = self._create_new_state(new, prev_state=self._state, notify=True)
            return True

    def open(self) -> bool:
        """Trip the breaker (from whatever state this process last saw)."""
        self._move(self._state.name, STATE_OPEN)
        return False  # let pybreaker re-raise the original error, which the caller expects

    def half_open(self) -> None:
        """Let a bounded number of probes through."""
        self._move(STATE_OPEN, STATE_HALF_OPEN)

    def close(self) -> None:
        """Back to normal after a successful probe."""
        self._move(STATE_HALF_OPEN, STATE_CLOSED)

    def reset(self) -> bool:
        """Force the breaker closed (healing); True if it was not closed."""
        with self._lock:
            if self.state.name == STATE_CLOSED:
                self._store.breaker_zero(self.name, "failures")
                return False
            return self._move(None, STATE_CLOSED)

    def retry_after(self) -> float:
        """Seconds until an open breaker lets probes through (0 if not open)."""
        return self._retry_after(self._store.breaker(self.name))

    def _retry_after(self, record: BreakerRecord) -> float:
        if record.state != STATE_OPEN:
            return 0.0
        return max(0.0, (record.opened_at or 0.0) + self.reset_timeout - self._store.clock.now())

    def admit(self, record: BreakerRecord | None = None) -> Permit:
        """Decide at once whether a call may go upstream; raise BreakerOpenError if not.

        `record` is this breaker as the caller just read it (`StateStore.admission`), which
        saves a read; without it the breaker reads it.
        """
        with self._lock:
            if record is None:
                record = self._store.breaker(self.name)
            state = self._adopt(record.state).name
            if state == STATE_OPEN:
                wait = self._retry_after(record)
                if wait > 0:
                    raise BreakerOpenError(self.name, wait)
                self.half_open()
                state = self.state.name
            if state == STATE_HALF_OPEN:
                if self._store.acquire_probe(self.name, self.max_probes, self.probe_ttl):
                    return Permit(self.name, probe=True)
                raise BreakerOpenError(self.name, 1.0)
            clean = record.state == STATE_CLOSED and record.failures == 0
            return Permit(self.name, probe=False, clean=clean)

    def record_success(self, permit: Permit) -> None:
        """The call succeeded: reset failures; a successful probe closes the breaker.

        After a clean admission there is nothing to reset, and nothing is read or written
        (listeners still hear of the success). A failure another worker counted meanwhile
        then stays counted: the race errs towards opening, never towards staying closed.
        """
        with self._lock:
            if permit.probe:
                self._store.release_probe(self.name)
            elif permit.clean:
                for listener in self.listeners:
                    listener.success(self)
                return
            self.state._handle_success()

    def record_failure(self, permit: Permit, error: BaseException) -> None:
        """The call failed in a way that counts: may open (or reopen) the breaker."""
        with self._lock:
            if permit.probe:
                self._store.release_probe(self.name)
            try:
                self.state._handle_error(error, reraise=False)
            except BaseException as raised:  # pybreaker re-raises `error` when it trips
                if raised is not error:
                    raise

    def unadmitted(self) -> Permit:
        """A permit for recording an outcome seen outside `admit` (a stream that broke later)."""
        return Permit(self.name, probe=False)

    def release(self, permit: Permit) -> None:
        """The call ended in a way that says nothing about upstream health."""
        if permit.probe:
            self._store.release_probe(self.name)


class BreakerBoard:
    """One breaker per model, created on first use, all on the same store and listeners."""

    def __init__(
        self,
        store: StateStore,
        *,
        fail_max: int,
        reset_timeout: float,
        max_probes: int,
        probe_ttl: float,
        listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        self._store = store
        self._options = {
            "fail_max": fail_max,
            "reset_timeout": reset_timeout,
            "max_probes": max_probes,
            "probe_ttl": probe_ttl,
        }
        self._listeners = list(listeners)
        self._breakers: dict[str, ModelBreaker] = {}

    def get(self, model: str) -> ModelBreaker:
        """The breaker of `model`."""
        breaker = self._breakers.get(model)
        if breaker is None:
            breaker = self._breakers.setdefault(
                model,
                ModelBreaker(model, self._store, listeners=self._listeners, **self._options),  # type: ignore[arg-type]
            )
        return breaker

    def reset_all(self, models: Sequence[str]) -> list[str]:
        """Close every breaker of `models`; returns those that were not closed."""
        return [model for model in models if self.get(model).reset()]
