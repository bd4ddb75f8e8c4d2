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
from app.logs import log_event
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
        self.worker: Any = None
        self._lock = threading.Lock()

    def bind(self, worker: Any) -> None:
        """Called in gunicorn's post_worker_init: this worker is serving; a slot held for the
        worker this one replaces is released, so the next worker may take its turn."""
        self.worker = worker
        self._store.release_recycle_slot()

    def request(self, reason: str) -> bool:
        """Ask for this worker to be recycled; True if it starts now."""
        with self._lock:
            if self.pending is None:
                self.pending = reason
                log_event(log, "worker_recycle_requested", logging.WARNING, reason=reason)
        return self.try_now()

    def try_now(self) -> bool:
        """Recycle now if asked, old enough and the node's recycle slot is free."""
        with self._lock:
            reason = self.pending
            if reason is None or self.worker is None:
                return False
            if self._clock.monotonic() - self.started < self.min_age:
                return False
            if not self._store.acquire_recycle_slot(os.getpid(), reason, self.slot_ttl):
                return False
            self.pending = None
            log_event(log, "worker_recycling", logging.WARNING, reason=reason)
            self.worker.alive = False  # graceful: drain in-flight requests, then exit 0
            return True
