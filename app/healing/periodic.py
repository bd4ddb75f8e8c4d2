"""A daemon thread that runs a function every few seconds in a worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Periodic:
    """Calls `fn` every `interval` seconds until stopped; an error is logged, never fatal."""

    def __init__(self, name: str, interval: float, fn: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self._fn = fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = logging.getLogger(f"l104.{name}")

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop after the current call."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._fn()
            except Exception:
                event = f"{self.name}_failed"
                self._log.exception(event, extra={"event": event})
