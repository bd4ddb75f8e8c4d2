"""The node's state as operators read it: per model, readiness, and the admin status."""

from __future__ import annotations

import os
from typing import Any

from flask import current_app

from app.admission import CallSlots
from app.breaker import BreakerBoard
from app.cooldowns import Cooldowns
from app.settings import Settings
from app.state import StateStore
from app.upstream import UpstreamClient


def model_states() -> dict[str, dict[str, Any]]:
    """Breaker, cooldown and error trackers of every configured model, node-wide."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    store: StateStore = current_app.extensions["l104.state"]
    breakers: BreakerBoard = current_app.extensions["l104.breakers"]
    cooldowns: Cooldowns = current_app.extensions["l104.cooldowns"]
    resting = cooldowns.active()
    errors = store.model_errors()
    states: dict[str, dict[str, Any]] = {}
    for model in settings.served_models:
        record = store.breaker(model)
        cooldown = resting.get(model)
        states[model] = {
            "circuit_state": record.state,
            "failures": record.failures,
            "opened_at": record.opened_at,
            "retry_after_seconds": round(breakers.get(model).retry_after(), 3),
            "cooldown_seconds": round(cooldowns.remaining(cooldown), 3) if cooldown else 0.0,
            "cooldown_reason": cooldown.reason if cooldown else None,
            "errors": errors.get(model, {}),
        }
    return states


def unusable_reason(state: dict[str, Any]) -> str | None:
    """Why a model cannot be used right now (None when it can)."""
    if state["circuit_state"] == "open":
        return "circuit_open"
    return state["cooldown_reason"] if state["cooldown_seconds"] > 0 else None


def all_open(states: dict[str, dict[str, Any]]) -> bool:
    """The node as a whole is "open" when no breaker of GEMINI_MODELS lets calls through."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    return all(states[m]["circuit_state"] == "open" for m in settings.gemini_models)


def node_status() -> dict[str, Any]:
    """Breakers, cooldowns, trackers and heal history (for /self/status)."""
    store: StateStore = current_app.extensions["l104.state"]
    client: UpstreamClient = current_app.extensions["l104.upstream"]
    slots: CallSlots = current_app.extensions["l104.admission"]
    states = model_states()
    return {
        "circuit_open": all_open(states),
        "models": states,
        "heals": store.heal_history(20),
        "worker": {
            "pid": os.getpid(),
            "http_client_errors": client.health.errors,
            "last_http_reset": client.last_reset,
            "calls_in_flight": slots.in_flight,
            "calls_in_flight_limit": slots.limit,
            "overloaded": slots.overloaded,
        },
    }
