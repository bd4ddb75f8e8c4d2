"""One call's attempts racing: the first good answer wins, the others are ended.

The primary attempt runs on the request's own thread or greenlet. A hedge is started by the
timer (`app.resilience.timer`) when the primary has produced nothing within the hedge
delay, on a thread of its own (a greenlet under gevent) with a copy of the request's
context. Whoever claims the race first wins; the losers' connections are shut at once
(`Attempt.end`), which ends their reads.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import UpstreamError
from app.resilience.timer import TimerEntry
from app.upstream.attempts import CANCELLED, Attempt
from app.upstream.backoff import Deadline
from app.upstream.key_pool import UpstreamKey

T = TypeVar("T")
# Whether the last call made on this thread or greenlet was answered by a hedge (set by
# `Gateway.call`, read by the blueprints for the answer's X-L104-Hedged header).
answered_by_hedge: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "l104_answered_by_hedge", default=False
)


@dataclass
class CallPlan(Generic[T]):
    """What a hedge of one call needs: the operation, the attempt it hedges (its model and
    key, the call's candidates and usable keys), the routes resting when the call was
    admitted, and its context. Where a hedge may go is worked out only for a hedge."""

    requested: str
    op: Callable[[str], T]
    kind: str
    deadline: Deadline
    discard: Callable[[T], None] | None
    key: UpstreamKey
    candidates: list[str]
    keys: list[UpstreamKey]
    resting: Container[str]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


@dataclass
class Attempted:
    """What happened to each candidate model of one request."""

    skipped: dict[str, str]
    last_error: UpstreamError | None = None
    shortest_wait: float | None = None

    def wait(self, seconds: float) -> None:
        """Remember the soonest moment some model may be usable again."""
        if self.shortest_wait is None or seconds < self.shortest_wait:
            self.shortest_wait = seconds


class Race(Generic[T]):
    """The attempts of one call and its winner."""

    def __init__(self, plan: CallPlan[T], primary: Attempt) -> None:
        self.plan = plan
        self.primary = primary
        self.winner: tuple[T, str, bool] | None = None  # result, model, hedged
        self.hedges: list[Attempt] = []
        self.tried: set[str] = set()  # routes the hedges took
        self.stalled: set[str] = set()  # ... and of those, the ones that stalled
        self.entries: list[TimerEntry] = []
        self._running = 0
        self._started = 0
        self._cond = threading.Condition(threading.Lock())

    @property
    def settled(self) -> bool:
        """A winner is known."""
        return self.winner is not None

    def hedges_started(self) -> int:
        """How many hedges this call started."""
        return self._started

    def hedge_began(self) -> None:
        """A hedge is about to run."""
        with self._cond:
            self._running += 1
            self._started += 1

    def hedge_ended(self) -> None:
        """A hedge's thread is done (won, lost or failed)."""
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def add_hedge(self, attempt: Attempt, route: str) -> bool:
        """Register a hedge's attempt; False when the race is already over."""
        with self._cond:
            if self.winner is not None:
                return False
            self.hedges.append(attempt)
            self.tried.add(route)
            return True

    def claim(self, result: T, model: str, by: Attempt) -> bool:
        """Offer `by`'s answer; True when it wins. The winner ends every other attempt."""
        with self._cond:
            if self.winner is not None:
                return False
            self.winner = (result, model, by is not self.primary)
            losers = [a for a in (self.primary, *self.hedges) if a is not by]
            self._cond.notify_all()
        for attempt in losers:
            attempt.end(CANCELLED)
        return True

    def wait_for_hedges(self, timeout: float) -> tuple[T, str, bool] | None:
        """After the primary failed: wait until a running hedge wins or every hedge is
        done; the winner, or None."""
        with self._cond:
            self._cond.wait_for(lambda: self.winner is not None or self._running == 0, timeout)
            return self.winner

    def end_hedges(self) -> None:
        """The call is over without a hedge's answer: end the hedges still running."""
        with self._cond:
            hedges = list(self.hedges)
        for attempt in hedges:
            attempt.end(CANCELLED)

    def close(self) -> None:
        """The call is over: no timer of it may fire, the primary can no longer be ended."""
        for entry in self.entries:
            entry.cancel()
        self.primary.finish()


def discard_result(plan: CallPlan[Any], result: Any) -> None:
    """Release what a losing answer holds (a stream's connection)."""
    if plan.discard is not None:
        plan.discard(result)
