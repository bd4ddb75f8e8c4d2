"""The node's state as operators read it: per model, readiness, and the admin status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from flask import current_app
from prometheus_client.core import Metric

from app.api import accounting, metrics_export
from app.api.client_auth import clients
from app.resilience.admission import CallSlots
from app.resilience.gateway import Gateway
from app.resilience.route_states import RouteStates
from app.settings import Settings
from app.state import StateStore
from app.upstream.client import UpstreamClient
from app.version import __version__
from app.workers import registry
from app.workers.supervision import NODE_FILE


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
    """The node at a glance (for /self/status and the console): mode, version, uptime,
    state backend, workers, breakers, cooldowns, upstream keys, retry budget, rate limit,
    the last heals (node-wide) and the last healing events of this node's workers."""
    settings: Settings = current_app.config["L104_SETTINGS"]
    store: StateStore = current_app.extensions["l104.state"]
    client: UpstreamClient = current_app.extensions["l104.upstream"]
    slots: CallSlots = current_app.extensions["l104.admission"]
    state_dir: Path = current_app.extensions["l104.state_dir"]
    current_app.extensions["l104.worker_file"].tick(force=True)  # this worker: fresh
    workers = registry.read_workers(registry.workers_dir(state_dir))
    routes = route_states()
    states = model_states(routes)
    recent = _recent_calls(workers)
    families = metrics_export.worker_families()  # one read of every worker's counters
    calls = key_calls(families)
    for model, state in states.items():
        state["recent"] = recent.get(model, {"calls": 0, "errors": 0})
    return {
        "mode": "simulator" if settings.simulator_mode else "live",
        "upstream": settings.upstream_kind,
        "version": __version__,
        "uptime_seconds": _uptime(state_dir),
        "state_backend": _backend(store, settings),
        "circuit_open": all_open(states),
        "models": states,
        "keys": {
            key.id: {
                "usable": key.disabled_seconds <= 0,
                "disabled_until": key.disabled_until,
                "disabled_seconds": round(key.disabled_seconds, 3),
                "calls": calls.get(key.id, {}),
            }
            for key in routes.keys.values()
        },
        "workers": [{k: v for k, v in w.items() if k != "events"} for w in workers],
        "hedges": _hedges(families),
        "clients": client_states(),
        "rate_limit": {
            "limit": settings.rate_limit or None,
            "refused": int(metrics_export.totals(families).get("l104_rate_limited_requests", 0)),
        },
        "heals": store.heal_history(20),
        "events": _last_events(workers),
        "worker": {
            "pid": os.getpid(),
            "http_client_errors": client.health.errors,
            "last_http_reset": client.last_reset,
            "calls_in_flight": slots.in_flight,
            "calls_in_flight_limit": slots.limit,
            "overloaded": slots.overloaded,
        },
    }


def client_states() -> dict[str, dict[str, Any]]:
    """Each client's limits, models, calls in flight and windows now (used, remaining,
    seconds to reset), by id: never a key or its hash."""
    quotas = accounting.quotas()
    shown: dict[str, dict[str, Any]] = {}
    for client_id, client in sorted(clients().by_id().items()):
        shown[client_id] = {
            "limits": client.limits.shown(),
            "models": list(client.models) if client.models is not None else None,
            "in_flight": quotas.in_flight(client),
            "windows": {
                name: {
                    "limit": w.limit,
                    "used": w.limit - w.remaining,
                    "remaining": w.remaining,
                    "reset_seconds": round(w.reset, 1),
                }
                for name, w in quotas.windows(client).items()
            },
        }
    return shown


def _hedges(families: list[Metric]) -> dict[str, Any]:
    """Hedges and stalls node-wide (every worker's counters), and this worker's delays."""
    gateway: Gateway = current_app.extensions["l104.gateway"]
    hedging = gateway.hedging
    outcomes = metrics_export.totals_by(families, "l104_hedges", "outcome")
    stalls = metrics_export.totals(families).get("l104_upstream_stalls", 0)
    return {
        "enabled": bool(hedging and hedging.config.enabled and hedging.config.max_hedges),
        "outcomes": {name: int(count) for name, count in sorted(outcomes.items())},
        "stalls": int(stalls),
        "delays": hedging.delays() if hedging else {},
    }


def _uptime(state_dir: Path) -> float | None:
    try:
        started = json.loads((state_dir / NODE_FILE).read_text())["started"]
    except (OSError, ValueError, KeyError):
        return None  # not under gunicorn
    return round(time.time() - float(started), 1)


def _backend(store: StateStore, settings: Settings) -> str:
    """local (SQLite in the node), redis, or degraded (STATE_URL set, Redis unreachable)."""
    backend = str(getattr(store, "backend", "local"))
    return "degraded" if settings.state_url and backend != "redis" else backend


def _recent_calls(workers: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for worker in workers:
        for model, counts in (worker.get("recent_calls") or {}).items():
            entry = total.setdefault(model, {"calls": 0, "errors": 0})
            entry["calls"] += int(counts.get("calls", 0))
            entry["errors"] += int(counts.get("errors", 0))
    return total


def _last_events(workers: list[dict[str, Any]], most: int = 30) -> list[dict[str, Any]]:
    merged = [e for w in workers for e in w.get("events") or []]
    return sorted(merged, key=lambda e: e.get("at", 0), reverse=True)[:most]


def key_calls(families: list[Metric]) -> dict[str, dict[str, int]]:
    """Upstream calls per key id and outcome, node-wide (every worker's metrics)."""
    calls: dict[str, dict[str, int]] = {}
    for family in families:
        if family.name != "l104_upstream_key_calls":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                per_key = calls.setdefault(sample.labels["key"], {})
                per_key[sample.labels["outcome"]] = int(sample.value)
    return calls
