"""A bounded background load of concurrent clients that records every outcome."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import requests


class Load:
    """`clients` threads calling `call(session)` until stopped (or `max_calls` each)."""

    def __init__(
        self,
        call: Callable[[requests.Session], requests.Response],
        clients: int = 8,
        max_calls: int = 2000,
    ) -> None:
        self._call = call
        self._stop = threading.Event()
        self._max_calls = max_calls
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        session = requests.Session()
        for _ in range(self._max_calls):
            if self._stop.is_set():
                break
            try:
                outcome = str(self._call(session).status_code)
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with self._lock:
                self.outcomes[outcome] += 1
        session.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def total(self) -> int:
        """Calls made so far."""
        return sum(self.outcomes.values())

    def failures(self) -> dict[str, int]:
        """Every outcome other than 200."""
        return {k: v for k, v in self.outcomes.items() if k != "200"}
