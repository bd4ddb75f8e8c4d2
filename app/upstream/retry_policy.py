"""urllib3 `Retry` for Gemini: POST included, full-jitter backoff, bounded by the request deadline.

The deadline of the client request being served is in `current_deadline` (a context variable,
so each thread or greenlet sees its own); a retry that cannot finish before it is not made,
nor one the worker's retry budget (`current_budget`) has no room for. The timeouts of every
attempt, retries included, fit the deadline too (`app.upstream.timeouts`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ReadTimeoutError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from app.upstream.attempts import ENDED_BY_NODE, ended_reason
from app.upstream.backoff import Backoff, Deadline
from app.upstream.retry_budget import RetryBudget

current_deadline: ContextVar[Deadline | None] = ContextVar("l104_deadline", default=None)
current_budget: ContextVar[RetryBudget | None] = ContextVar("l104_retry_budget", default=None)

RETRY_STATUSES = frozenset({500, 502, 503, 504})


class DeadlineRetry(Retry):
    """Retries connect errors, resets and 500/502/503/504, never 4xx; sleeps full jitter."""

    def __init__(
        self,
        *args: Any,
        backoff: Backoff | None = None,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
        min_attempt: float = 0.05,
        next_delay: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.backoff = backoff or Backoff()
        self.rand = rand
        self.sleep_fn = sleep
        self.min_attempt = min_attempt
        self.next_delay = next_delay

    @classmethod
    def for_gemini(cls, retries: int, backoff: Backoff, **kw: Any) -> DeadlineRetry:
        """The policy the upstream client mounts: `retries` retries after the first attempt."""
        return cls(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET", "POST"}),
            status_forcelist=RETRY_STATUSES,
            respect_retry_after_header=False,
            raise_on_status=False,
            raise_on_redirect=False,
            backoff=backoff,
            **kw,
        )

    def new(self, **kw: Any) -> DeadlineRetry:
        """A copy with changed counters; keeps our own settings."""
        kw.setdefault("backoff", self.backoff)
        kw.setdefault("rand", self.rand)
        kw.setdefault("sleep", self.sleep_fn)
        kw.setdefault("min_attempt", self.min_attempt)
        kw.setdefault("next_delay", self.next_delay)
        retry: DeadlineRetry = super().new(**kw)
        return retry

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> DeadlineRetry:
        """Count one failed attempt; refuse the retry if it cannot finish before the deadline.

        A read timeout is not retried: a model that did not answer in time is not asked
        again in the same request, the gateway rotates to the next one instead.
        """
        if isinstance(error, ReadTimeoutError) or ended_reason() in ENDED_BY_NODE:
            # An ended attempt (a hedge won, or it stalled) is over: no retry either.
            raise MaxRetryError(_pool, url, error) from error  # type: ignore[arg-type]
        new: DeadlineRetry = super().increment(method, url, response, error, _pool, _stacktrace)
        delay = self.backoff.delay(len(new.history), self.rand)
        deadline = current_deadline.get()
        if deadline is not None and not deadline.allows(delay + self.min_attempt):
            reason = error or ResponseError("no time left before the request deadline")
            raise MaxRetryError(_pool, url, reason) from reason  # type: ignore[arg-type]
        budget = current_budget.get()
        if budget is not None and not budget.try_extra():
            reason = error or ResponseError("the retry budget is spent")
            raise MaxRetryError(_pool, url, reason) from reason  # type: ignore[arg-type]
        new.next_delay = delay
        return new

    def get_backoff_time(self) -> float:
        """The delay drawn when this retry was granted."""
        return self.next_delay

    def _sleep_backoff(self) -> None:
        if self.next_delay > 0:
            self.sleep_fn(self.next_delay)

    @property
    def retried(self) -> int:
        """How many retries this request needed."""
        return len(self.history)
