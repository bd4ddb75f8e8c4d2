"""The watchdog's checks: cheap, local, and never a generation call upstream.

Each check returns None when healthy, or a short description of what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from app.observability.request_context import RequestCounter
from app.state import StateStore

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident memory, from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def upstream_reachable(store: StateStore, models: tuple[str, ...]) -> Callable[[], str | None]:
    """Fails when every model's breaker is open (the breakers' view of upstream)."""

    def check() -> str | None:
        states = [store.breaker(m).state for m in models]
        return "every model's circuit is open" if all(s == "open" for s in states) else None

    return check


def error_rate(
    requests: RequestCounter, max_ratio: float, min_requests: int = 10
) -> Callable[[], str | None]:
    """Fails when this worker answered too many 5xx since the last round."""

    def check() -> str | None:
        total, errors = requests.take_window()
        if total >= min_requests and errors / total > max_ratio:
            return f"{errors} of {total} requests failed"
        return None

    return check


def stuck_requests(requests: RequestCounter, limit: float) -> Callable[[], str | None]:
    """Fails when a request has been running longer than the deadline allows."""

    def check() -> str | None:
        age = requests.oldest_in_flight()
        return f"a request has run for {age:.0f}s" if age > limit else None

    return check


def memory(max_bytes: int, read_rss: Callable[[], int] = rss_bytes) -> Callable[[], str | None]:
    """Fails when this worker's memory has grown past the limit."""

    def check() -> str | None:
        rss = read_rss()
        return f"resident memory {rss // 2**20} MiB" if rss > max_bytes else None

    return check
