"""Healing actions and state changes: each one JSON log line with its tag, and a metric."""

from __future__ import annotations

import logging
from typing import Any

import pybreaker

from app.observability import metrics
from app.observability.logs import log_event

log = logging.getLogger("l104.events")

_BREAKER_EVENTS = {
    pybreaker.STATE_OPEN: ("circuit_breaker_open", logging.WARNING),
    pybreaker.STATE_HALF_OPEN: ("circuit_breaker_half_open", logging.INFO),
    pybreaker.STATE_CLOSED: ("circuit_breaker_closed", logging.INFO),
}


class BreakerEvents(pybreaker.CircuitBreakerListener):
    """Logs and counts breaker state changes (called once per change, node-wide)."""

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        """One log line per transition; `circuit_breaks` counts openings."""
        event, level = _BREAKER_EVENTS[new_state.name]
        model, _, key = str(cb.name).partition("@")  # a (model, key) pair: app.upstream.key_pool
        log_event(
            log,
            event,
            level,
            model=model,
            from_state=old_state.name if old_state else None,
            failures=cb.fail_counter,
            **({"key": key} if key else {}),
        )
        label = metrics.model_label(model)
        metrics.BREAKER_TRANSITIONS.labels(label, new_state.name).inc()
        if new_state.name == pybreaker.STATE_OPEN:
            metrics.CIRCUIT_BREAKS.labels(label).inc()


def retry_success(model: str, retries: int) -> None:
    """An upstream call succeeded after `retries` retries."""
    log_event(log, "retry_success", model=model, retries=retries)
    metrics.RETRY_SUCCESSES.labels(metrics.model_label(model)).inc()


def hedge_started(requested: str, model: str, key: str, after: float) -> None:
    """A call's attempt produced nothing within the hedge delay: another one starts."""
    log_event(log, "hedge_started", model=requested, hedge_model=model, key=key, after=after)


def hedge_won(requested: str, model: str, key: str, seconds: float) -> None:
    """A hedge answered first; the attempt it raced was closed."""
    log_event(log, "hedge_won", model=requested, hedge_model=model, key=key, seconds=seconds)
    metrics.HEDGES.labels(metrics.model_label(requested), "won").inc()


def attempt_stalled(model: str, key: str, seconds: float) -> None:
    """An attempt produced nothing for the stall timeout and was abandoned."""
    log_event(log, "upstream_stalled", logging.WARNING, model=model, key=key, seconds=seconds)
    metrics.STALLS.labels(metrics.model_label(model)).inc()


def model_rotation(from_model: str, to_model: str, reasons: dict[str, str]) -> None:
    """A request was answered by another model than the first candidate."""
    log_event(log, "model_rotation", from_model=from_model, to_model=to_model, skipped=reasons)
    metrics.MODEL_ROTATIONS.labels(
        metrics.model_label(from_model), metrics.model_label(to_model)
    ).inc()


def model_cooldown(model: str, seconds: float, reason: str, key: str | None = None) -> None:
    """A model starts resting after a 429 (on one upstream key, when the pool has several)."""
    fields = {"key": key} if key is not None else {}
    log_event(
        log,
        "model_cooldown",
        logging.WARNING,
        model=model,
        seconds=round(seconds, 3),
        reason=reason,
        **fields,
    )
    metrics.COOLDOWNS.labels(metrics.model_label(model), reason).inc()


def api_key_disabled(key: str, reason: str, probe_in: float) -> None:
    """Gemini refused an upstream key: it leaves the pool node-wide until its next probe."""
    log_event(
        log,
        "api_key_disabled",
        logging.ERROR,
        key=key,
        reason=reason,
        probe_in_seconds=round(probe_in, 3),
    )
    metrics.KEYS_DISABLED.labels(key).inc()


def http_client_reset(reason: str, errors: int) -> None:
    """The upstream session and its pool were replaced."""
    log_event(log, "http_client_auto_reset", logging.WARNING, reason=reason, errors=errors)
    metrics.CONNECTION_RESETS.labels(reason).inc()


def heal(level: str, trigger: str, actions: list[str], **fields: Any) -> None:
    """A heal ran (`auto_heal_triggered` when the node decided it itself)."""
    event = "heal_requested" if trigger == "admin" else "auto_heal_triggered"
    log_event(
        log, event, logging.WARNING, heal_level=level, trigger=trigger, actions=actions, **fields
    )
    metrics.HEALS.labels(level, trigger).inc()
    if trigger != "admin":
        metrics.AUTO_HEALS.labels(level).inc()


def heal_held_back(level: str, trigger: str, skipped: list[str], min_interval: float) -> None:
    """An automatic heal kept off node-wide state: another ran less than the interval ago."""
    log_event(
        log,
        "heal_held_back",
        logging.INFO,
        heal_level=level,
        trigger=trigger,
        skipped_actions=skipped,
        min_interval=min_interval,
    )
    metrics.HEALS_HELD_BACK.labels(trigger).inc()
