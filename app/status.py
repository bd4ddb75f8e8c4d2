"""The node's state as operators read it: per model, readiness, and the admin status."""

from __future__ import annotations

import os
from typing import Any

from flask import current_app

from app import metrics_export
from app.admission import CallSlots
from app.route_states import RouteStates
from app.settings import Settings
from app.state import StateStore
from app.upstream import UpstreamClient


def route_states() -> RouteStates:
    """Every model's and upstream key's state, read now."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    return RouteStates(
        current_app.extensions["l104.state"],
        current_app.extensions["l104.breakers"],
        current_app.extensions["l104.cooldowns"],
        current_app.extensions["l104.keys"],
        settings.served_models,
    )


def model_states(states: RouteStates | None = None) -> dict[str, dict[str, Any]]:
    """Breaker, cooldown and error trackers of every configured model, node-wide, with the
    state of each upstream key for it."""
    store: StateStore = current_app.extensions["l104.state"]
    states = states or route_states()
    errors = store.model_errors()
    return {
        model: {
            **states.model(model).as_dict(),
            "errors": errors.get(model, {}),
            "keys": {key: states.key_entry(model, key) for key in routes},
        }
        for model, routes in states.routes.items()
    }


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
    """Breakers, cooldowns, trackers, upstream keys and heal history (for /self/status)."""
    store: StateStore = current_app.extensions["l104.state"]
    client: UpstreamClient = current_app.extensions["l104.upstream"]
    slots: CallSlots = current_app.extensions["l104.admission"]
    routes = route_states()
    states = model_states(routes)
    return {
        "circuit_open": all_open(states),
        "models": states,
        "keys": {
            key.id: {
                "usable": key.disabled_seconds <= 0,
                "disabled_until": key.disabled_until,
                "disabled_seconds": round(key.disabled_seconds, 3),
                "calls": key_calls().get(key.id, {}),
            }
            for key in routes.keys.values()
        },
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


def key_calls() -> dict[str, dict[str, int]]:
    """Upstream calls per key id and outcome, node-wide (every worker's metrics)."""
    registry = metrics_export.scrape_registry(current_app.extensions["l104.state_collector"])
    calls: dict[str, dict[str, int]] = {}
    for family in registry.collect():
        if family.name != "l104_upstream_key_calls":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                per_key = calls.setdefault(sample.labels["key"], {})
                per_key[sample.labels["outcome"]] = int(sample.value)
    return calls
