"""Upstream socket timeouts that never outlast the client request's deadline.

urllib3 clones the `Timeout` it is given for every attempt, retries included, and reads its
`connect_timeout`/`read_timeout` when the attempt starts; `DeadlineTimeout` answers those with
what is left of the deadline at that moment. Body reads go on after urllib3 returns, so
`fit_read_timeout` shortens the socket's timeout before each read.
"""

from __future__ import annotations

from typing import Any

from urllib3.response import BaseHTTPResponse
from urllib3.util.timeout import _DEFAULT_TIMEOUT, Timeout

from app.upstream.backoff import Deadline

MIN_TIMEOUT = 0.001  # seconds: zero would mean "non-blocking" to a socket


class DeadlineTimeout(Timeout):
    """A (connect, read) timeout, each shortened to what is left of `deadline`."""

    def __init__(self, connect: float, read: float, deadline: Deadline) -> None:
        super().__init__(connect=connect, read=read)
        self.deadline = deadline

    def clone(self) -> DeadlineTimeout:
        """A fresh copy for one attempt (urllib3 makes one per attempt)."""
        return DeadlineTimeout(self._connect, self._read, self.deadline)  # type: ignore[arg-type]

    @property
    def connect_timeout(self) -> Any:
        """The connect timeout, no later than the deadline."""
        return self._fit(super().connect_timeout)

    @property
    def read_timeout(self) -> float | None:
        """The read timeout, no later than the deadline."""
        fitted: float | None = self._fit(super().read_timeout)
        return fitted

    def _fit(self, seconds: Any) -> Any:
        left = max(self.deadline.remaining(), MIN_TIMEOUT)
        if seconds is None or seconds is _DEFAULT_TIMEOUT:
            return left
        return min(float(seconds), left)


def fit_read_timeout(raw: BaseHTTPResponse, read: float, deadline: Deadline | None) -> None:
    """Before reading more of a body: wait at most `read`, and not past the deadline."""
    connection = raw.connection
    sock = getattr(connection, "sock", None) if connection is not None else None
    if sock is None:
        return
    seconds = read if deadline is None else min(read, deadline.remaining())
    sock.settimeout(max(seconds, MIN_TIMEOUT))
