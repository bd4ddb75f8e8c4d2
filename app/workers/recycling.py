"""Graceful worker recycling: a worker asks gunicorn to replace it, one worker at a time.

Under gunicorn the worker is bound in `post_worker_init`; recycling sets `worker.alive =
False`, so the worker stops accepting, finishes its in-flight requests and exits 0 (never 3
or 4, which would halt the master), and the master starts a fresh one. The node-wide recycle
slot makes workers take turns, so the node never runs out of live workers.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from app.clock import Clock
from app.observability.logs import log_event
from app.state import StateStore

log = logging.getLogger("l104.recycling")


class Recycler:
    """Recycles this worker when asked, once it is old enough and its turn has come."""

    def __init__(self, store: StateStore, clock: Clock, *, slot_ttl: float, min_age: float):
        self._store = store
        self._clock = clock
        self.slot_ttl = slot_ttl
        self.min_age = min_age
        self.started = clock.monotonic()
        self.pending: str | None = None
        self.pending_since: float | None = None
        self.by_operator = False  # an operator asked: no minimum age to wait for
        self.worker: Any = None
        self._lock = threading.Lock()

    def bind(self, worker: Any) -> None:
        """Called in gunicorn's post_worker_init: this worker is serving; a slot held for the
        worker this one replaces is released, so the next worker may take its turn."""
        self.worker = worker
        self._store.release_recycle_slot()

    def request(self, reason: str, by_operator: bool = False) -> bool:
        """Ask for this worker to be recycled; True if it starts now. WORKER_MIN_AGE guards
        against automatic recycling loops; an operator's recycle does not wait for it."""
        with self._lock:
            self.by_operator = self.by_operator or by_operator
            if self.pending is None:
                self.pending = reason
                self.pending_since = self._clock.now()
                log_event(
                    log,
                    "worker_recycle_requested",
                    logging.WARNING,
                    reason=reason,
                    by_operator=by_operator,
                )
        return self.try_now()

    def age(self) -> float:
        """Seconds since this worker started."""
        return self._clock.monotonic() - self.started

    def waits_until(self) -> float | None:
        """When a pending recycle may start at the earliest (Unix time), or None."""
        if self.pending is None:
            return None
        if self.by_operator:
            return self._clock.now()
        return self._clock.now() + max(0.0, self.min_age - self.age())

    def try_now(self) -> bool:
        """Recycle now if asked, old enough and the node's recycle slot is free."""
        with self._lock:
            reason = self.pending
            if reason is None or self.worker is None:
                return False
            if not self.by_operator and self.age() < self.min_age:
                return False
            if not self._store.acquire_recycle_slot(os.getpid(), reason, self.slot_ttl):
                return False
            self.pending = self.pending_since = None
            log_event(log, "worker_recycling", logging.WARNING, reason=reason)
            self.worker.alive = False  # graceful: drain in-flight requests, then exit 0
            return True
