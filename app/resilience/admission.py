"""Bounded admission: at most MAX_CALLS_IN_FLIGHT client calls per worker, refused past it.

A call past the limit is answered at once with 503 UNAVAILABLE and a retry hint, never queued
(Envoy's overload manager and its circuit breakers' `max_requests` do the same). Only the
blueprints that call upstream are guarded: `/health`, `/ready`, `/metrics` and `/self/...`
keep answering while the worker is full.
"""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, Flask, current_app, g

from app.errors import ApiError
from app.observability import metrics
from app.observability.logs import log_event
from app.resilience.gateway import retry_hint

log = logging.getLogger("l104.admission")
RETRY_SECONDS = 1.0
# Below this share of the limit an overloaded worker counts as recovered (no log flapping).
RECOVERED_SHARE = 0.9
OVERLOADED = "overloaded"


class CallSlots:
    """A worker's slots for calls in flight; `try_take()` never waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.overloaded = False
        self._lock = threading.Lock()
        metrics.CALLS_IN_FLIGHT_LIMIT.set(limit)
        metrics.REFUSED.labels(OVERLOADED)  # exported as 0 before the first refusal

    def try_take(self) -> bool:
        """Take a slot; False (and the refusal counted) when all are taken."""
        with self._lock:
            if self.in_flight < self.limit:
                self.in_flight += 1
                metrics.CALLS_IN_FLIGHT.inc()
                return True
            started = not self.overloaded
            self.overloaded = True
        metrics.REFUSED.labels(OVERLOADED).inc()
        if started:
            metrics.OVERLOADS.inc()
            log_event(
                log, "worker_overloaded", logging.WARNING, limit=self.limit, in_flight=self.limit
            )
        return False

    def give_back(self) -> None:
        """Return a slot taken by `try_take()`."""
        with self._lock:
            self.in_flight -= 1
            metrics.CALLS_IN_FLIGHT.dec()
            recovered = self.overloaded and self.in_flight <= self.limit * RECOVERED_SHARE
            if recovered:
                self.overloaded = False
        if recovered:
            log_event(log, "worker_overload_cleared", limit=self.limit, in_flight=self.in_flight)


def init_app(app: Flask, limit: int) -> CallSlots:
    """This worker's call slots, kept in `app.extensions`."""
    slots = CallSlots(limit)
    app.extensions["l104.admission"] = slots
    return slots


def guard(bp: Blueprint) -> None:
    """Admit every request of `bp` through the call slots; the slot is given back when the
    request ends, after the last byte of a stream."""
    bp.before_request(_admit)
    bp.teardown_request(_release)


def _admit() -> None:
    slots: CallSlots = current_app.extensions["l104.admission"]
    if not slots.try_take():
        details, headers = retry_hint(RETRY_SECONDS)
        error = ApiError(
            503,
            f"This node is at its limit of {slots.limit} calls in flight per worker. "
            f"Retry in {RETRY_SECONDS:g}s.",
            details=details,
            headers=headers,
        )
        error.fail_fast = True  # the node protecting itself: no heal, no recycle
        raise error
    g.l104_call_slot = True


def _release(error: BaseException | None) -> None:
    if g.pop("l104_call_slot", False):
        slots: CallSlots = current_app.extensions["l104.admission"]
        slots.give_back()
