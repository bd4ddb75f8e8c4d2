"""File descriptors: what the node's settings can use, the soft limit raised toward it at
start (as Go's runtime and nginx's `worker_rlimit_nofile` do), and a warning when the hard
limit is below it."""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable

from app.observability.logs import log_event
from app.settings import Settings

log = logging.getLogger("l104.fd_limits")
# Beyond its sockets a worker holds logs, the state database, metric files, Redis and the
# listening socket: a few dozen.
BASE_FDS = 64
Limits = tuple[int, int]


def needed_per_worker(settings: Settings) -> int:
    """Descriptors one worker can use: every connection it holds, one upstream connection per
    call in flight (or per pooled connection), and the rest."""
    upstream = max(settings.upstream_pool_size, settings.max_calls_in_flight)
    return settings.worker_connections + upstream + BASE_FDS


def ensure(
    settings: Settings,
    get: Callable[[int], Limits] = resource.getrlimit,
    set_: Callable[[int, Limits], None] = resource.setrlimit,
) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward what a worker needs (workers inherit
    it); log `fd_limit_low` when it stays below. Returns the soft limit in force."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    needed = needed_per_worker(settings)
    if soft >= needed:
        return soft
    ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if ceiling > soft:
        try:
            set_(resource.RLIMIT_NOFILE, (ceiling, hard))
        except (ValueError, OSError):
            pass
        else:
            log_event(log, "fd_limit_raised", soft_limit=ceiling, previous=soft, needed=needed)
            soft = ceiling
    if soft < needed:
        log_event(
            log,
            "fd_limit_low",
            logging.WARNING,
            soft_limit=soft,
            hard_limit=hard,
            needed=needed,
            hint="raise LimitNOFILE (systemd) or `ulimit -n`, or lower MAX_CALLS_IN_FLIGHT "
            "and WORKER_CONNECTIONS",
        )
    return soft
