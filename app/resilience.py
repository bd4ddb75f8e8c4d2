"""Builds the self-healing parts of the node and keeps them in `app.extensions`."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from flask import Flask, Response, current_app, g, request

from app import events, health_checks, metrics, rate_limits, worker_registry
from app.breaker import BreakerBoard
from app.clock import Clock
from app.cooldowns import CooldownPolicy, Cooldowns
from app.gateway import Gateway
from app.healing import (
    LEVEL_ACTIONS,
    LEVELS,
    PER_WORKER_ACTIONS,
    Escalation,
    Healer,
    heal_watcher,
)
from app.key_pool import KeyPool
from app.metrics_export import StateCollector
from app.recycling import Recycler
from app.request_context import RequestCounter
from app.retry_budget import RetryBudget
from app.settings import Settings
from app.state import StateStore
from app.state.failover import FailoverStateStore
from app.state.redis_store import RedisStateStore
from app.state.sqlite_store import SqliteStateStore
from app.upstream import UpstreamClient
from app.watchdog import Watchdog, WatchdogConfig

log = logging.getLogger("l104.resilience")
AUTO_TRIGGER = "auto_errors"
WATCHDOG_TRIGGER = "watchdog"
AUTOMATIC = (AUTO_TRIGGER, WATCHDOG_TRIGGER)  # heals the node decides on itself


def state_path(settings: Settings) -> Path:
    """The SQLite file all workers of this node share."""
    directory = (
        settings.state_dir
        or os.environ.get("L104_STATE_DIR")
        or tempfile.mkdtemp(prefix="l104-state-")
    )
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory) / "state.db"


def init_app(app: Flask, settings: Settings, clock: Clock) -> None:
    """Store, breakers, cooldowns, gateway, rate limits, healer and its watcher."""
    metrics.model_label.configured = frozenset(settings.served_models)
    path = state_path(settings)
    local = SqliteStateStore(path, clock)
    store: StateStore = local
    limits_uri = f"l104sqlite://{path}"
    if settings.state_url:
        shared = RedisStateStore.from_url(settings.state_url, settings.state_timeout, clock)
        store = FailoverStateStore(shared, local)
        limits_uri = settings.state_url
    pool = KeyPool(settings.upstream_keys)
    client = UpstreamClient(settings, clock)
    breakers = BreakerBoard(
        store,
        fail_max=settings.circuit_breaker_threshold,
        reset_timeout=settings.circuit_breaker_timeout,
        max_probes=settings.circuit_breaker_probes,
        probe_ttl=settings.request_deadline,
        listeners=[events.BreakerEvents()],
    )
    cooldowns = Cooldowns(store, CooldownPolicy(default=settings.model_cooldown_seconds))
    gateway = Gateway(
        settings.gemini_models,
        breakers.get,
        cooldowns,
        store,
        clock,
        settings.request_deadline,
        settings.allow_unlisted_models,
        RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min, clock=clock),
        keys=pool,
        key_probe_interval=settings.key_probe_interval,
    )
    limiter = rate_limits.init_app(app, settings, limits_uri)

    recycler = Recycler(
        store, clock, slot_ttl=settings.graceful_timeout + 30, min_age=settings.worker_min_age
    )
    healer = Healer(
        store,
        breakers,
        pool.routes(settings.served_models),
        reset_rate_limits=lambda: rate_limits.reset(limiter),
        reset_keys=lambda: store.end_cooldowns([pool.rest_name(k) for k in pool.keys]),
        reset_http_client=client.reset,
        recycle_worker=recycler.request,
    )
    requests_seen: RequestCounter = app.extensions["l104.requests"]
    trail = worker_registry.EventTrail()
    logging.getLogger("l104").addHandler(trail)
    worker_file = worker_registry.WorkerFile(
        worker_registry.workers_dir(path.parent),
        partial(describe_worker, requests_seen, recycler, gateway, trail),
    )

    def tick() -> None:
        recycler.try_now()
        worker_file.tick()

    watcher = heal_watcher(healer, tick=tick)
    watchdog = Watchdog(
        {
            "upstream": health_checks.upstream_reachable(
                store, pool.routes(settings.gemini_models)
            ),
            "error_rate": health_checks.error_rate(requests_seen, settings.watchdog_error_ratio),
            "stuck_requests": health_checks.stuck_requests(
                requests_seen, settings.request_deadline + 30
            ),
            "memory": health_checks.memory(settings.watchdog_max_rss_mb * 2**20),
        },
        Escalation(clock, quiet_period=settings.watchdog_interval * 4),
        watchdog_heal(healer, store, settings.auto_heal_min_interval),
        recycler.request,
        WatchdogConfig(
            settings.watchdog_interval,
            settings.watchdog_failure_threshold,
            settings.watchdog_exit_on_failure,
        ),
    )
    app.extensions.update(
        {
            "l104.upstream": client,
            "l104.keys": pool,
            "l104.state_dir": path.parent,
            "l104.worker_file": worker_file,
            "l104.state": store,
            "l104.breakers": breakers,
            "l104.cooldowns": cooldowns,
            "l104.gateway": gateway,
            "l104.healer": healer,
            "l104.heal_watcher": watcher,
            "l104.recycler": recycler,
            "l104.watchdog": watchdog,
            "l104.state_collector": StateCollector(
                store, breakers, cooldowns, settings.served_models, settings.gemini_models, pool
            ),
        }
    )
    if settings.auto_heal_enabled:
        app.after_request(_count_errors_for_auto_heal)
    app.before_request(watcher.start)


def describe_worker(
    requests_seen: RequestCounter,
    recycler: Recycler,
    gateway: Gateway,
    trail: worker_registry.EventTrail,
) -> dict[str, object]:
    """What this worker's file says (app.worker_registry)."""
    now = time.time()
    age = recycler.age()
    return {
        "pid": os.getpid(),
        "started": now - age,
        "age_seconds": round(age, 1),
        "requests": requests_seen.total,
        "in_flight": len(requests_seen.in_flight),
        "rss_mb": round(health_checks.rss_bytes() / 2**20, 1),
        "pending_recycle": recycler.pending,
        "recycle_waits_until": recycler.waits_until(),
        "retry_budget": gateway.budget.usage() if gateway.budget else None,
        "recent_calls": gateway.recent.totals(),
        "events": list(trail.events),
        "written_at": now,
    }


def get_gateway() -> Gateway:
    """The current app's gateway."""
    gateway: Gateway = current_app.extensions["l104.gateway"]
    return gateway


def _count_errors_for_auto_heal(response: Response) -> Response:
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
