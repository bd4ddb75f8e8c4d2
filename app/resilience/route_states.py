"""What each model and each (model, upstream key) pair can do right now, read from the
node-wide store: the one view `/self/status`, `/ready` and `/metrics` share.

A model's own state is that of its best usable key: a model is usable while one of its
keys is (closed or half-open breaker, no cooldown); otherwise it shows the key that can be
tried soonest. With one key this is exactly that key's (the model's) breaker and cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.resilience.breaker import BreakerBoard
from app.resilience.cooldowns import Cooldowns
from app.state import StateStore
from app.upstream.key_pool import KeyPool

KEY_REFUSED = "key_refused"


@dataclass(frozen=True)
class RouteState:
    """One (model, key) pair: its breaker and its cooldown."""

    circuit_state: str
    failures: int
    opened_at: float | None
    retry_after_seconds: float
    cooldown_seconds: float
    cooldown_reason: str | None
    cooldown_until: float | None

    @property
    def usable(self) -> bool:
        """A call may go this way now."""
        return self.circuit_state != "open" and self.cooldown_seconds <= 0

    def wait(self) -> float:
        """Seconds until this pair may be tried again."""
        return max(
            self.retry_after_seconds if self.circuit_state == "open" else 0.0, self.cooldown_seconds
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON fields of /self/status."""
        return {
            "circuit_state": self.circuit_state,
            "failures": self.failures,
            "opened_at": self.opened_at,
            "retry_after_seconds": round(self.retry_after_seconds, 3),
            "cooldown_seconds": round(self.cooldown_seconds, 3),
            "cooldown_reason": self.cooldown_reason,
        }


@dataclass(frozen=True)
class KeyState:
    """One upstream key, node-wide: refused by Gemini until its next probe, or not."""

    id: str
    disabled_until: float | None
    disabled_seconds: float


class RouteStates:
    """One read of every model's and key's state."""

    def __init__(
        self,
        store: StateStore,
        breakers: BreakerBoard,
        cooldowns: Cooldowns,
        pool: KeyPool,
        models: tuple[str, ...],
    ) -> None:
        resting = cooldowns.active()
        self.keys: dict[str, KeyState] = {}
        for key in pool.keys:
            rest = resting.get(pool.rest_name(key))
            seconds = cooldowns.remaining(rest) if rest else 0.0
            self.keys[key.id] = KeyState(key.id, rest.until if rest else None, seconds)
        self.routes: dict[str, dict[str, RouteState]] = {}
        for model in models:
            self.routes[model] = {}
            for key in pool.keys:
                route = pool.route(model, key)
                record = store.breaker(route)
                cooldown = resting.get(route)
                self.routes[model][key.id] = RouteState(
                    circuit_state=record.state,
                    failures=record.failures,
                    opened_at=record.opened_at,
                    retry_after_seconds=breakers.get(route).retry_after(),
                    cooldown_seconds=cooldowns.remaining(cooldown) if cooldown else 0.0,
                    cooldown_reason=cooldown.reason if cooldown else None,
                    cooldown_until=cooldown.until if cooldown else None,
                )

    def usable_keys(self) -> list[str]:
        """Ids of the keys Gemini has not refused (or whose probe is due)."""
        return [k.id for k in self.keys.values() if k.disabled_seconds <= 0]

    def model(self, model: str) -> RouteState:
        """The model's own state: its best usable key's (see the module docstring)."""
        usable = self.usable_keys()
        routes = [self.routes[model][k] for k in usable]
        if not routes:  # every key refused: the model waits for the first probe
            soonest = min(self.keys.values(), key=lambda k: k.disabled_seconds)
            first = self.routes[model][soonest.id]
            return RouteState(
                first.circuit_state,
                first.failures,
                first.opened_at,
                first.retry_after_seconds,
                soonest.disabled_seconds,
                KEY_REFUSED,
                soonest.disabled_until,
            )
        ready = [r for r in routes if r.usable]
        if ready:
            return min(ready, key=lambda r: (r.circuit_state != "closed", r.failures))
        return min(routes, key=lambda r: r.wait())

    def key_entry(self, model: str, key_id: str) -> dict[str, Any]:
        """One key of one model as /self/status shows it."""
        route = self.routes[model][key_id]
        key = self.keys[key_id]
        if key.disabled_seconds > 0:
            state = "disabled"
        elif route.circuit_state == "open":
            state = "circuit_open"
        elif route.cooldown_seconds > 0:
            state = "cooling"
        else:
            state = "usable"
        return {
            "state": state,
            **route.as_dict(),
            "cooling_until": route.cooldown_until,
            "disabled_until": key.disabled_until,
        }
