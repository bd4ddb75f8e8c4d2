"""One client request through the resilience layers: deadline, rotation, cooldowns, breakers.

`Gateway.call(requested, op)` tries the requested model first, then the rest of
GEMINI_MODELS in order, skipping models that are cooling down or whose breaker is open. Each
attempt runs `op(model)`, which makes the upstream call (with urllib3 retries inside it).
`rotate=False` (embeddings: vectors of two models are not comparable) tries only the
requested model, with the same breakers, cooldowns, deadline and retry budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from app import events, metrics
from app.backoff import Deadline
from app.breaker import BreakerOpenError, ModelBreaker, Permit
from app.clock import Clock
from app.cooldowns import Cooldowns
from app.errors import (
    ApiError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from app.retry_budget import RetryBudget
from app.retry_policy import current_budget, current_deadline
from app.state import StateStore
from app.surfaces import GEMINI, current_api

T = TypeVar("T")
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def retry_hint(seconds: float) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Gemini's RetryInfo detail and a Retry-After header for `seconds`."""
    seconds = max(seconds, 0.001)
    return (
        [{"@type": RETRY_INFO, "retryDelay": f"{seconds:.3f}s"}],
        {"Retry-After": str(max(1, int(seconds + 0.999)))},
    )


def counts_against_breaker(error: UpstreamError) -> bool:
    """Connection errors, timeouts, 5xx after retries and malformed bodies trip breakers."""
    if isinstance(error, UpstreamRateLimited | UpstreamRejected):
        return False
    return error.retryable or isinstance(error, UpstreamTimeout | UpstreamMalformed)


def error_kind(error: UpstreamError) -> str:
    """A short, bounded name for an upstream error (tracker and metric label)."""
    if isinstance(error, UpstreamRateLimited):
        return "per_day_quota" if error.per_day else "rate_limited"
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamMalformed):
        return "malformed"
    if isinstance(error, UpstreamRejected):
        return "rejected"
    return "unavailable" if error.code == 503 and "connection" in error.message else str(error.code)


def _api() -> str:
    """The API of the request being served (the `api` metric label)."""
    return current_api.get() or GEMINI


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


class Gateway:
    """Answers one client request from the first usable model, within one deadline."""

    def __init__(
        self,
        models: tuple[str, ...],
        breakers: Callable[[str], ModelBreaker],
        cooldowns: Cooldowns,
        store: StateStore,
        clock: Clock,
        deadline_seconds: float,
        allow_unlisted: bool = False,
        budget: RetryBudget | None = None,
    ) -> None:
        self.models = models
        self._breaker = breakers
        self._cooldowns = cooldowns
        self._store = store
        self._clock = clock
        self.deadline_seconds = deadline_seconds
        self.allow_unlisted = allow_unlisted
        self.budget = budget

    def candidates(self, requested: str | None, rotate: bool = True) -> list[str]:
        """The requested model first (when served), then the rotation list in order."""
        if requested is None:
            return list(self.models)
        if not rotate:
            return [requested]
        if requested in self.models:
            return [requested, *(m for m in self.models if m != requested)]
        return [requested, *self.models] if self.allow_unlisted else []

    def call(
        self, requested: str | None, op: Callable[[str], T], rotate: bool = True
    ) -> tuple[T, str]:
        """Run `op` on the first model that answers; raise a Gemini-style error otherwise.
        Without `rotate`, only `requested` is tried."""
        deadline = Deadline(self.deadline_seconds, self._clock)
        token = current_deadline.set(deadline)
        budget_token = current_budget.set(self.budget)
        if self.budget is not None:
            self.budget.request()
        try:
            return self._rotate(self.candidates(requested, rotate), op, deadline)
        finally:
            current_deadline.reset(token)
            current_budget.reset(budget_token)

    def _rotate(
        self, candidates: list[str], op: Callable[[str], T], deadline: Deadline
    ) -> tuple[T, str]:
        attempted = Attempted(skipped={})
        seen = self._store.admission(candidates)  # one read: cooldowns and breakers
        resting = seen.resting
        for model in candidates:
            if deadline.expired():
                break
            if model in resting:
                attempted.skipped[model] = resting[model].reason
                attempted.wait(self._cooldowns.remaining(resting[model]))
                continue
            if attempted.last_error is not None and not self._budget_allows():
                attempted.skipped[model] = "retry_budget"
                break
            breaker = self._breaker(model)
            try:
                # The breaker as read above, unless an upstream call made since by this
                # request left time for it to change.
                fresh = seen.breakers[model] if attempted.last_error is None else None
                permit = breaker.admit(fresh)
            except BreakerOpenError as refused:
                attempted.skipped[model] = "circuit_open"
                attempted.wait(refused.retry_after)
                continue
            started = time.perf_counter()
            try:
                result = op(model)
            except UpstreamError as error:
                self._failed(model, breaker, permit, error, attempted, started)
                if isinstance(error, UpstreamRejected) and error.code != 404:
                    raise  # the request itself was refused: another model would refuse it too
                continue
            except BaseException:
                breaker.release(permit)
                raise
            breaker.record_success(permit)
            metrics.UPSTREAM_CALLS.labels(_api(), metrics.model_label(model), "ok").inc()
            metrics.UPSTREAM_SECONDS.labels(metrics.model_label(model)).observe(
                time.perf_counter() - started
            )
            if model != candidates[0]:
                events.model_rotation(candidates[0], model, attempted.skipped)
            return result, model
        raise self._exhausted(attempted, deadline)

    def _budget_allows(self) -> bool:
        """Another model after a failed attempt is an extra upstream call: budget it."""
        return self.budget is None or self.budget.try_extra()

    def _failed(
        self,
        model: str,
        breaker: ModelBreaker,
        permit: Permit,
        error: UpstreamError,
        attempted: Attempted,
        started: float,
    ) -> None:
        kind = error_kind(error)
        metrics.UPSTREAM_CALLS.labels(_api(), metrics.model_label(model), kind).inc()
        metrics.UPSTREAM_SECONDS.labels(metrics.model_label(model)).observe(
            time.perf_counter() - started
        )
        self._store.track_error(model, kind)
        if isinstance(error, UpstreamRateLimited):
            breaker.release(permit)
            cooldown = self._cooldowns.cool_down(model, error)
            events.model_cooldown(model, self._cooldowns.remaining(cooldown), cooldown.reason)
            attempted.wait(self._cooldowns.remaining(cooldown))
        elif counts_against_breaker(error):
            breaker.record_failure(permit, error)
            attempted.wait(breaker.retry_after())
        else:
            breaker.release(permit)
        attempted.skipped[model] = kind
        attempted.last_error = error

    def record_stream_failure(self, model: str, error: UpstreamError) -> None:
        """A stream broke after its first byte reached the client: count it, no rotation."""
        self._store.track_error(model, error_kind(error))
        label = metrics.model_label(model)
        metrics.UPSTREAM_CALLS.labels(_api(), label, error_kind(error)).inc()
        if counts_against_breaker(error):
            breaker = self._breaker(model)
            breaker.record_failure(breaker.unadmitted(), error)

    def _exhausted(self, attempted: Attempted, deadline: Deadline) -> ApiError:
        """The error for a request no model could answer."""
        error = self._exhausted_error(attempted, deadline)
        error.fail_fast = attempted.last_error is None
        return error

    def _exhausted_error(self, attempted: Attempted, deadline: Deadline) -> ApiError:
        if not attempted.skipped:
            if deadline.expired():
                return ApiError(504, "The request deadline passed before any model answered.")
            return ApiError(400, "No model is configured for this request.")
        wait = attempted.shortest_wait or 1.0
        details, headers = retry_hint(wait)
        reasons = set(attempted.skipped.values())
        if deadline.expired() and attempted.last_error is None:
            return ApiError(504, "The request deadline passed before any model answered.")
        if reasons <= {"rate_limited", "per_day_quota"}:
            last = attempted.last_error
            message = (
                last.message
                if isinstance(last, UpstreamRateLimited)
                else "Every model is rate-limited right now."
            )
            return ApiError(
                429, f"{message} Retry in {wait:.1f}s.", details=details, headers=headers
            )
        last = attempted.last_error
        if last is not None and not deadline.expired() and "circuit_open" not in reasons:
            last.details = last.details or details
            last.headers = {**last.headers, **headers}
            return last
        listing = ", ".join(f"{m}: {r}" for m, r in attempted.skipped.items())
        code = 504 if deadline.expired() else 503
        return ApiError(
            code,
            f"No model can answer right now ({listing}). Retry in {wait:.1f}s.",
            details=details,
            headers=headers,
        )
