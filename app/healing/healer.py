"""Progressive healing: light, medium and heavy heals, escalation, and node-wide delivery.

A heal does its node-wide part once (through the shared store: breakers, cooldowns, model
error trackers, rate limits) and records itself; every worker watches the heal generation and
applies the per-worker part (a new HTTP client, a graceful recycle) within a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.clock import Clock
from app.healing.periodic import Periodic
from app.observability import events
from app.observability.logs import log_event
from app.resilience.breaker import BreakerBoard
from app.state import StateStore

log = logging.getLogger("l104.healing")

LEVELS = ("light", "medium", "heavy")
OPERATOR_TRIGGER = "admin"  # heals an operator asked for (POST /self/heal)
RESET_RATE_LIMITS = "reset_rate_limits"
RESET_CIRCUIT_BREAKER = "reset_circuit_breaker"
CLEAR_MODEL_ERRORS = "clear_model_errors"
CLEAR_COOLDOWNS = "clear_cooldowns"
RESET_HTTP_CLIENT = "reset_http_client"
RECYCLE_WORKERS = "recycle_workers"
RESET_KEYS = "reset_keys"  # refused upstream keys back into the pool (operator only)
ALL_ACTIONS = (
    RESET_RATE_LIMITS,
    RESET_CIRCUIT_BREAKER,
    CLEAR_MODEL_ERRORS,
    CLEAR_COOLDOWNS,
    RESET_HTTP_CLIENT,
    RECYCLE_WORKERS,
    RESET_KEYS,
)
LEVEL_ACTIONS = {
    "light": (RESET_RATE_LIMITS, RESET_CIRCUIT_BREAKER, CLEAR_MODEL_ERRORS),
    "medium": (RESET_RATE_LIMITS, RESET_CIRCUIT_BREAKER, CLEAR_MODEL_ERRORS, RESET_HTTP_CLIENT),
    "heavy": (
        RESET_RATE_LIMITS,
        RESET_CIRCUIT_BREAKER,
        CLEAR_MODEL_ERRORS,
        RESET_HTTP_CLIENT,
        RECYCLE_WORKERS,
    ),
}
# Parts of a heal that each worker must apply itself.
PER_WORKER_ACTIONS = frozenset({RESET_HTTP_CLIENT, RECYCLE_WORKERS})


@dataclass
class Escalation:
    """Repeated triggers climb light -> medium -> heavy; a quiet period steps back down."""

    clock: Clock
    quiet_period: float
    level_index: int = -1
    last_trigger: float | None = field(default=None)

    def trigger(self) -> str:
        """A heal is wanted now: the level it should run at."""
        self._cool_off()
        self.level_index = min(self.level_index + 1, len(LEVELS) - 1)
        self.last_trigger = self.clock.monotonic()
        return LEVELS[self.level_index]

    def passed(self) -> None:
        """A check passed: step one level back down."""
        self.level_index = max(self.level_index - 1, -1)

    @property
    def level(self) -> str | None:
        """The level of the last heal still in force, or None."""
        self._cool_off()
        return LEVELS[self.level_index] if self.level_index >= 0 else None

    def _cool_off(self) -> None:
        if self.last_trigger is None:
            return
        quiet = self.clock.monotonic() - self.last_trigger
        steps = int(quiet // self.quiet_period)
        if steps:
            self.level_index = max(self.level_index - steps, -1)
            self.last_trigger += steps * self.quiet_period


class Healer:
    """Runs heals and delivers their per-worker part to every worker of the node."""

    def __init__(
        self,
        store: StateStore,
        breakers: BreakerBoard,
        models: Sequence[str],
        *,
        reset_rate_limits: Callable[[], None],
        reset_http_client: Callable[[str], None],
        recycle_worker: Callable[[str, bool], object],
        reset_keys: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._breakers = breakers
        self._models = list(models)
        self._reset_rate_limits = reset_rate_limits
        self._reset_http_client = reset_http_client
        self._recycle_worker = recycle_worker
        self._reset_keys = reset_keys
        self._lock = threading.Lock()
        self.seen_epoch = store.heal_epoch()
        self.seen_generation = store.heal_generation()

    def heal(
        self,
        actions: Sequence[str],
        *,
        level: str,
        trigger: str,
        local: bool = False,
        **context: object,
    ) -> dict[str, object]:
        """Run a heal with `actions` now; returns what was done, as /self/heal reports it.

        Node-wide parts run once here. Per-worker parts reach every worker, or with `local`
        only this one (the watchdog heals the worker it watches).
        """
        unknown = set(actions) - set(ALL_ACTIONS)
        if unknown:
            raise ValueError(f"unknown heal actions: {sorted(unknown)}")
        done: list[str] = []
        if RESET_RATE_LIMITS in actions:
            self._reset_rate_limits()
            done.append(RESET_RATE_LIMITS)
        if RESET_CIRCUIT_BREAKER in actions:
            reopened = self._breakers.reset_all(self._models)
            self._store.clear("breakers")
            done.append(RESET_CIRCUIT_BREAKER + (f" ({', '.join(reopened)})" if reopened else ""))
        if CLEAR_MODEL_ERRORS in actions:
            self._store.clear("model_errors")
            self._store.clear("endpoint_errors")
            done.append(CLEAR_MODEL_ERRORS)
        if CLEAR_COOLDOWNS in actions:
            # Models' rests end; refused upstream keys stay out (that is reset_keys).
            keys = {n: c for n, c in self._store.cooldowns().items() if n.startswith("key@")}
            self._store.clear("cooldowns")
            for name, rest in keys.items():
                self._store.set_cooldown(name, rest.until, rest.reason)
            done.append(CLEAR_COOLDOWNS)
        if RESET_KEYS in actions:
            self._reset_keys()
            done.append(RESET_KEYS)
        per_worker = [a for a in actions if a in PER_WORKER_ACTIONS]
        shared = [a for a in actions if not (local and a in PER_WORKER_ACTIONS)]
        now = self._store.clock.now()
        record = {"at": now, "level": level, "trigger": trigger, "actions": shared}
        generation = self._store.record_heal(record)
        done.extend(per_worker)
        events.heal(level, trigger, done, generation=generation, **context)
        if local:
            self._apply(set(per_worker), by_operator=trigger == OPERATOR_TRIGGER)
        self.apply_pending()
        return {"actions": done, "generation": generation, "level": level, "at": now}

    def apply_pending(self) -> int:
        """Apply the per-worker part of heals recorded since this worker last looked."""
        generation = self._store.heal_generation()
        epoch = self._store.heal_epoch()
        if epoch != self.seen_epoch:
            # The state backend changed (Redis down or back): its generations are not ours.
            self.seen_epoch, self.seen_generation = epoch, generation
            return 0
        if generation == self.seen_generation:
            return 0
        with self._lock:
            if generation == self.seen_generation:
                return 0
            pending = [
                h
                for h in self._store.heal_history(generation - self.seen_generation)
                if h["generation"] > self.seen_generation
            ]
            self.seen_generation = generation
        actions = {a for h in pending for a in h["actions"]}
        by_operator = any(
            h.get("trigger") == OPERATOR_TRIGGER and RECYCLE_WORKERS in h["actions"]
            for h in pending
        )
        self._apply(actions, by_operator)
        log_event(
            log,
            "heal_applied",
            generations=[h["generation"] for h in pending],
            actions=sorted(actions),
        )
        return len(pending)

    def _apply(self, actions: set[str], by_operator: bool = False) -> None:
        if RESET_HTTP_CLIENT in actions:
            self._reset_http_client("heal")
        if RECYCLE_WORKERS in actions:
            self._recycle_worker("heal", by_operator)


def heal_watcher(healer: Healer, tick: Callable[[], object], interval: float = 0.25) -> Periodic:
    """A thread per worker that applies new heals within `interval` seconds, then runs `tick`
    (which retries a recycle waiting for its turn)."""

    def watch() -> None:
        healer.apply_pending()
        tick()

    return Periodic("heal_watcher", interval, watch)
