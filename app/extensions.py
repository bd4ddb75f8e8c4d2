"""Builds the node's parts (state, breakers, gateway, upstream client, healer, watchdog, worker
file) and keeps them in `app.extensions`: the wiring under `create_app()`."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from functools import partial
from pathlib import Path

from flask import Flask
from flask_limiter import Limiter
from limits.storage import Storage, storage_from_string

from app.api.metrics_export import StateCollector
from app.clients.fallback import FallbackStorage
from app.clients.quotas import Quotas
from app.clients.source import ClientsSource
from app.clock import Clock
from app.healing import health_checks
from app.healing.auto_heal import count_errors_for_auto_heal, watchdog_heal
from app.healing.healer import (
    Escalation,
    Healer,
    heal_watcher,
)
from app.healing.watchdog import Watchdog, WatchdogConfig
from app.observability import events, metrics
from app.observability.request_context import RequestCounter
from app.resilience import rate_limits
from app.resilience.breaker import BreakerBoard
from app.resilience.cooldowns import CooldownPolicy, Cooldowns
from app.resilience.gateway import Gateway
from app.resilience.hedging import HedgeConfig, Hedging
from app.settings import Settings
from app.state import StateStore
from app.state.failover import FailoverStateStore
from app.state.redis_store import RedisStateStore
from app.state.sqlite_store import SqliteStateStore
from app.upstream.client import UpstreamClient
from app.upstream.key_pool import KeyPool
from app.upstream.retry_budget import RetryBudget
from app.workers import registry
from app.workers.recycling import Recycler


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
    clients = ClientsSource(settings.clients_file, settings.node_api_keys, clock)
    app.extensions["l104.clients"] = clients
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
        hedging=Hedging(hedge_config(settings), clock),
    )
    limiter = rate_limits.init_app(app, settings, limits_uri)
    quotas = Quotas(
        limits_storage(settings, limits_uri),
        limits_storage(settings, budgets_uri(limits_uri), key_prefix="l104-budgets"),
        clock,
    )
    app.extensions["l104.quotas"] = quotas

    recycler = Recycler(
        store, clock, slot_ttl=settings.graceful_timeout + 30, min_age=settings.worker_min_age
    )
    healer = Healer(
        store,
        breakers,
        pool.routes(settings.served_models),
        reset_rate_limits=partial(reset_request_windows, limiter, quotas),
        reset_keys=lambda: store.end_cooldowns([pool.rest_name(k) for k in pool.keys]),
        reset_http_client=client.reset,
        recycle_worker=recycler.request,
    )
    requests_seen: RequestCounter = app.extensions["l104.requests"]
    trail = registry.EventTrail()
    logging.getLogger("l104").addHandler(trail)
    worker_file = registry.WorkerFile(
        registry.workers_dir(path.parent),
        partial(describe_worker, requests_seen, recycler, gateway, trail),
    )

    def tick() -> None:
        recycler.try_now()
        worker_file.tick()
        export_hedge_delays(gateway)
        clients.current()  # a changed clients file is read (or rejected) without traffic too

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
        app.after_request(count_errors_for_auto_heal)
    app.before_request(watcher.start)


def describe_worker(
    requests_seen: RequestCounter,
    recycler: Recycler,
    gateway: Gateway,
    trail: registry.EventTrail,
) -> dict[str, object]:
    """What this worker's file says (app.workers.registry)."""
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
        "hedge_budget": gateway.hedging.budget.usage() if gateway.hedging else None,
        "recent_calls": gateway.recent.totals(),
        "events": list(trail.events),
        "written_at": now,
    }


def hedge_config(settings: Settings) -> HedgeConfig:
    """Hedging and stall detection as configured: the stall timeout's cap is the upstream
    read timeout, which would end a silent attempt there anyway."""
    return HedgeConfig(
        enabled=settings.hedge_enabled,
        percentile=settings.hedge_percentile,
        min_delay=settings.hedge_min_delay,
        max_hedges=settings.hedge_max,
        budget_ratio=settings.hedge_budget,
        stall_timeout=settings.upstream_stall_timeout or None,
        stall_cap=settings.upstream_timeout[1],
    )


def export_hedge_delays(gateway: Gateway) -> None:
    """The hedge delay gauge, refreshed with the worker's file (not on every call)."""
    if gateway.hedging is None:
        return
    for model, kinds in gateway.hedging.delays().items():
        for kind, delay in kinds.items():
            if delay is not None:
                metrics.HEDGE_DELAY.labels(metrics.model_label(model), kind).set(delay)


def budgets_uri(limits_uri: str) -> str:
    """Where token budgets count: a file of their own beside the node's SQLite state (Redis:
    the same server, under their own key prefix)."""
    if limits_uri.startswith("l104sqlite://"):
        return limits_uri.removesuffix("state.db") + "budgets.db"
    return limits_uri


def limits_storage(settings: Settings, uri: str, key_prefix: str = "") -> Storage:
    """A `limits` storage for the clients' quotas (with Redis: the state backend's short
    timeouts)."""
    redis = rate_limits.on_redis(uri)
    options = rate_limits.redis_options(settings) if redis else {}
    if redis and key_prefix:
        options["key_prefix"] = key_prefix
    storage = storage_from_string(uri, **options)
    assert isinstance(storage, Storage)  # a synchronous scheme
    return FallbackStorage(storage) if redis else storage


def reset_request_windows(limiter: Limiter, quotas: Quotas) -> None:
    """Healing's reset_rate_limits: the per-IP limits and every client's request windows
    (token budgets stay)."""
    rate_limits.reset(limiter)
    quotas.reset_requests()
