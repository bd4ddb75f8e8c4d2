"""One upstream attempt as something another thread or greenlet can end at once.

A hedged race and stall detection end attempts that are still waiting on Gemini. Python
cannot stop a thread, and killing a greenlet would skip the attempt's own bookkeeping, so an
attempt is ended by shutting down its connection's socket: the read it is blocked in
returns at once, in every worker class, and the connection is closed and never pooled again
(so Gemini stops generating for it). The connections an attempt uses are known because the
session's urllib3 pools are `TrackedHTTPConnectionPool`s, which hand each connection they
give out to the attempt of the calling thread or greenlet (`current_attempt`).
"""

from __future__ import annotations

import os
import socket
import threading
from contextvars import ContextVar
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CANCELLED = "cancelled"  # another attempt of the same call won: not the model's fault
STALLED = "stalled"  # produced nothing for the stall timeout: a failure of the model
FINISHED = "finished"  # over by itself; never shut after that
ENDED_BY_NODE = frozenset({CANCELLED, STALLED})


class Attempt:
    """The connections of one upstream attempt, and why it was ended, if it was."""

    __slots__ = ("_connections", "_lock", "ended", "first_read", "last_read")

    def __init__(self) -> None:
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()
        self.ended: str | None = None
        self.first_read: float | None = None  # monotonic time of the first bytes received
        self.last_read: float | None = None  # ... and of the latest

    def track(self, connection: HTTPConnection) -> None:
        """A connection this attempt now uses; shut at once if the attempt already ended."""
        with self._lock:
            self._connections.append(connection)
            ended = self.ended
        if ended is not None:
            _shut(connection)

    def untrack(self, connection: HTTPConnection) -> None:
        """The connection went back to the pool: it is no longer this attempt's to shut."""
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def finish(self) -> None:
        """The attempt is over (answered or failed): nothing may end it any more."""
        with self._lock:
            self.ended = self.ended or FINISHED
            self._connections.clear()

    def end(self, reason: str) -> bool:
        """End the attempt (CANCELLED or STALLED): its connections are shut; False when it
        had already ended."""
        with self._lock:
            if self.ended is not None:
                return False
            self.ended = reason
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)
        return True


current_attempt: ContextVar[Attempt | None] = ContextVar("l104_attempt", default=None)


def bytes_arrived(now: float) -> None:
    """The current attempt received bytes at `now`: it is not silent (a long answer that is
    still arriving is never taken for a stall)."""
    attempt = current_attempt.get()
    if attempt is not None:
        if attempt.first_read is None:
            attempt.first_read = now
        attempt.last_read = now


def ended_reason() -> str | None:
    """Why the current attempt was ended, or None (still running, or no attempt)."""
    attempt = current_attempt.get()
    return attempt.ended if attempt is not None else None


def _shut(connection: HTTPConnection) -> None:
    """Shut the connection's socket down for both directions, from any thread: on a
    duplicate of its descriptor, so that no TLS or gevent wrapper state is touched here."""
    sock = connection.sock
    if sock is None:
        return
    try:
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return  # already closed
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more
    finally:
        duplicate.close()


class _TrackedConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _track(self)


class _TrackedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _track(self)


def _track(connection: HTTPConnection) -> None:
    attempt = current_attempt.get()
    if attempt is not None:
        attempt.track(connection)


def _untrack(connection: HTTPConnection | None) -> None:
    attempt = current_attempt.get()
    if attempt is not None and connection is not None:
        attempt.untrack(connection)


class _Tracking(HTTPConnectionPool):
    """A pool that hands each connection it gives out to the current attempt."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection: Any = super()._get_conn(timeout)
        if connection.sock is not None:  # a pooled, connected one (a new one: on connect)
            _track(connection)
        return connection

    def _put_conn(self, conn: Any) -> None:
        _untrack(conn)
        super()._put_conn(conn)


class TrackedHTTPConnectionPool(_Tracking):
    """An HTTP pool whose connections are tracked by the attempt that uses them."""

    ConnectionCls = _TrackedConnection


class TrackedHTTPSConnectionPool(_Tracking, HTTPSConnectionPool):
    """The HTTPS pool with the same tracking."""

    ConnectionCls = _TrackedHTTPSConnection


TRACKED_POOLS = {"http": TrackedHTTPConnectionPool, "https": TrackedHTTPSConnectionPool}
