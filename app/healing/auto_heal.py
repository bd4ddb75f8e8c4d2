"""Healing the node decides on itself: the auto-heal middleware (node-side 5xx per endpoint)
and the watchdog's heal, both held back when another automatic heal touched node-wide state
within AUTO_HEAL_MIN_INTERVAL."""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, current_app, g, request

from app.healing.healer import LEVEL_ACTIONS, LEVELS, PER_WORKER_ACTIONS, Healer
from app.observability import events
from app.settings import Settings
from app.state import StateStore

AUTO_TRIGGER = "auto_errors"
WATCHDOG_TRIGGER = "watchdog"
AUTOMATIC = (AUTO_TRIGGER, WATCHDOG_TRIGGER)  # heals the node decides on itself


def count_errors_for_auto_heal(response: Response) -> Response:
    """Middleware: node-side 5xx per endpoint; past the threshold in the window, heal."""
    if response.status_code < 500 or g.get("l104_fail_fast"):
        return response
    settings: Settings = current_app.config["L104_SETTINGS"]
    store: StateStore = current_app.extensions["l104.state"]
    endpoint = request.endpoint or "unknown"
    errors = store.count_endpoint_error(endpoint, settings.auto_heal_window)
    if errors >= settings.auto_heal_error_threshold:
        store.clear("endpoint_errors")
        if recent_auto_heals(store, settings.auto_heal_min_interval, AUTOMATIC):
            return response  # no heal storm: healing again so soon would fight the breakers
        level = auto_heal_level(store, quiet_period=settings.auto_heal_window * 5)
        healer: Healer = current_app.extensions["l104.healer"]
        healer.heal(
            LEVEL_ACTIONS[level],
            level=level,
            trigger=AUTO_TRIGGER,
            endpoint=endpoint,
            errors=errors,
        )
    return response


def recent_auto_heals(
    store: StateStore, seconds: float, triggers: tuple[str, ...] = (AUTO_TRIGGER,)
) -> int:
    """How many of the latest heals came from `triggers`, touched node-wide state and
    happened in the last `seconds`."""
    since = store.clock.now() - seconds
    return sum(
        1
        for h in store.heal_history(len(LEVELS))
        if h.get("trigger") in triggers
        and h["at"] > since
        and any(a not in PER_WORKER_ACTIONS for a in h.get("actions", ()))
    )


def watchdog_heal(
    healer: Healer, store: StateStore, min_interval: float
) -> Callable[[list[str], str], object]:
    """The watchdog's heal: its worker's own part (a new HTTP client) every failed round, the
    node-wide part (breakers, model errors, rate limits) only when no automatic heal touched
    it within AUTO_HEAL_MIN_INTERVAL. Every worker's watchdog sees the same outage; resetting
    open breakers each round would only send traffic at an upstream that is down."""

    def heal(actions: list[str], level: str) -> object:
        if recent_auto_heals(store, min_interval, AUTOMATIC):
            own = [a for a in actions if a in PER_WORKER_ACTIONS]
            skipped = [a for a in actions if a not in PER_WORKER_ACTIONS]
            events.heal_held_back(level, WATCHDOG_TRIGGER, skipped, min_interval)
            if not own:
                return None
            actions = own
        return healer.heal(actions, level=level, trigger=WATCHDOG_TRIGGER, local=True)

    return heal


def auto_heal_level(store: StateStore, quiet_period: float) -> str:
    """Node-wide escalation: each auto heal within the quiet period climbs one level."""
    return LEVELS[min(recent_auto_heals(store, quiet_period), len(LEVELS) - 1)]
