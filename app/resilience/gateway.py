"""One client request through the resilience layers: deadline, rotation, cooldowns, breakers.

`Gateway.call(requested, op)` tries the requested model first, then the rest of
GEMINI_MODELS in order, skipping models that are cooling down or whose breaker is open. Each
attempt runs `op(model)`, which makes the upstream call (with urllib3 retries inside it).
`rotate=False` (embeddings: vectors of two models are not comparable) tries only the
requested model, with the same breakers, cooldowns, deadline and retry budget.

Each attempt is watched (`app.resilience.hedging`): one that has produced nothing within the
hedge delay gets a hedge, the same model on another key first, else the next model of the
rotation (`app.resilience.hedger`), and one silent for the stall timeout is ended and counted
as a failure of its model.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app

from app.clock import Clock
from app.errors import (
    ApiError,
    AttemptCancelled,
    UpstreamError,
    UpstreamKeyRefused,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamStalled,
    UpstreamTimeout,
)
from app.observability import events, metrics
from app.resilience.breaker import BreakerOpenError, ModelBreaker, Permit
from app.resilience.cooldowns import Cooldowns
from app.resilience.hedger import Hedger
from app.resilience.hedging import EMBED, UNARY, Hedging
from app.resilience.race import Attempted, CallPlan, answered_by_hedge, discard_result
from app.resilience.timer import Timer
from app.state import StateStore
from app.surfaces import GEMINI, current_api
from app.upstream.attempts import Attempt, current_attempt
from app.upstream.backoff import Deadline
from app.upstream.key_pool import KeyPool, UpstreamKey, current_key
from app.upstream.retry_budget import RetryBudget
from app.upstream.retry_policy import current_budget, current_deadline
from app.workers.registry import RecentCalls

T = TypeVar("T")


@dataclass(frozen=True)
class ModelScope:
    """The models one client may be answered by (its `models` globs), and who it is."""

    owner: str
    allows: Callable[[str], bool]


# Set by the client check of each request: the gateway neither calls nor rotates to a model
# outside it.
current_scope: ContextVar[ModelScope | None] = ContextVar("l104_model_scope", default=None)
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
    if isinstance(error, UpstreamStalled):
        return "stalled"
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
        keys: KeyPool | None = None,
        key_probe_interval: float = 300.0,
        recent: RecentCalls | None = None,
        hedging: Hedging | None = None,
        timer: Timer | None = None,
    ) -> None:
        self.models = models
        self.breaker_of = breakers
        self._cooldowns = cooldowns
        self._store = store
        self.clock = clock
        self.deadline_seconds = deadline_seconds
        self.allow_unlisted = allow_unlisted
        self.budget = budget
        self.keys = keys or KeyPool([""])
        self.key_probe_interval = key_probe_interval
        self._turn = itertools.count()
        self.recent = recent or RecentCalls()
        self.hedging = hedging
        self.timer = timer or Timer(clock)
        self.hedger = Hedger(self)

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
        self,
        requested: str | None,
        op: Callable[[str], T],
        rotate: bool = True,
        kind: str = UNARY,
        discard: Callable[[T], None] | None = None,
    ) -> tuple[T, str]:
        """Run `op` on the first model that answers; raise a Gemini-style error otherwise.
        Without `rotate`, only `requested` is tried. `kind` names the call's latency window
        (a unary answer, a stream's first event, an embedding); `discard` releases what a
        losing hedged answer holds (a stream)."""
        deadline = Deadline(self.deadline_seconds, self.clock)
        token = current_deadline.set(deadline)
        budget_token = current_budget.set(self.budget)
        if self.budget is not None:
            self.budget.request()
        if self.hedging is not None:
            self.hedging.budget.request()
        answered_by_hedge.set(False)
        try:
            candidates = self._in_scope(requested, self.candidates(requested, rotate))
            return self._rotate(candidates, op, deadline, kind if rotate else EMBED, discard)
        finally:
            current_deadline.reset(token)
            current_budget.reset(budget_token)

    @staticmethod
    def _in_scope(requested: str | None, candidates: list[str]) -> list[str]:
        """The candidates the request's client may use; 403 (nothing sent upstream) when it
        may not use the model it asked for."""
        scope = current_scope.get()
        if scope is None:
            return candidates
        if requested is not None and not scope.allows(requested):
            raise ApiError(403, f"Client {scope.owner} may not use model {requested}.")
        allowed = [m for m in candidates if scope.allows(m)]
        if not allowed:
            raise ApiError(403, f"Client {scope.owner} may use none of the models served.")
        return allowed

    def _rotate(
        self,
        candidates: list[str],
        op: Callable[[str], T],
        deadline: Deadline,
        kind: str = UNARY,
        discard: Callable[[T], None] | None = None,
    ) -> tuple[T, str]:
        attempted = Attempted(skipped={})
        pool = self.keys
        seen = self._store.admission([pool.route(m, k) for m in candidates for k in pool.keys])
        resting = seen.resting
        keys = pool.usable(resting)
        if not keys:
            raise self._every_key_refused()
        if candidates and len(keys) > 1:
            keys = self._spread(
                keys, [k for k in keys if pool.route(candidates[0], k) not in resting]
            )
        hedged: set[str] = set()
        stalled: set[str] = set()
        for model in candidates:
            order = list(keys)
            for key in order:
                if key not in keys:
                    continue  # refused by Gemini during this request
                if deadline.expired():
                    raise self._exhausted(attempted, deadline)
                route = pool.route(model, key)
                if route in hedged:
                    continue  # a hedge of this call already tried it
                if route in resting:
                    attempted.skipped[route] = resting[route].reason
                    attempted.wait(self._cooldowns.remaining(resting[route]))
                    continue
                if attempted.last_error is not None and not self._budget_allows():
                    attempted.skipped[route] = "retry_budget"
                    raise self._exhausted(attempted, deadline)
                breaker = self.breaker_of(route)
                try:
                    # The breaker as read above, unless an upstream call made since by this
                    # request left time for it to change.
                    fresh = seen.breakers.get(route) if attempted.last_error is None else None
                    permit = breaker.admit(fresh)
                except BreakerOpenError as refused:
                    attempted.skipped[route] = "circuit_open"
                    attempted.wait(refused.retry_after)
                    continue
                plan = CallPlan(model, op, kind, deadline, discard, key, candidates, keys, resting)
                race = self.hedger.start_race(plan)
                started = time.perf_counter()
                began = self.clock.monotonic()
                token = current_key.set(key)
                attempt_token = current_attempt.set(race.primary)
                try:
                    result = op(model)
                except AttemptCancelled:
                    breaker.release(permit)  # a hedge won: not this model's failure
                    return self.hedger.winner(race)
                except UpstreamKeyRefused as error:
                    breaker.release(permit)
                    self.disable_key(key, error)
                    keys.remove(key)
                    attempted.skipped[route] = "key_refused"
                    if (won := self.hedger.outcome(race, deadline, hedged)) is not None:
                        return won
                    continue
                except UpstreamError as error:
                    self.failed(model, key, breaker, permit, error, attempted, started)
                    if isinstance(error, UpstreamRejected) and error.code != 404:
                        race.end_hedges()
                        raise  # the request itself was refused: another model would refuse it too
                    if (won := self.hedger.outcome(race, deadline, hedged)) is not None:
                        return won
                    if isinstance(error, UpstreamStalled) and route not in stalled:
                        stalled.add(route)
                        if model == candidates[-1] and key is order[-1]:
                            order.append(key)  # nothing else left: this route once more
                        continue  # a hang: the same model on the other keys first
                    if isinstance(error, UpstreamRateLimited):
                        continue  # that key's quota: the same model on the pool's other keys
                    break  # the model's own failure: the next model
                except BaseException:
                    breaker.release(permit)
                    race.end_hedges()
                    raise
                finally:
                    current_attempt.reset(attempt_token)
                    current_key.reset(token)
                    race.close()
                self.succeeded(model, key, breaker, permit, started)
                self.observe_latency(model, kind, race.primary, began)
                if not race.claim(result, model, race.primary):
                    discard_result(plan, result)  # a hedge answered in the same instant
                    return self.hedger.winner(race)
                if model != candidates[0]:
                    events.model_rotation(candidates[0], model, attempted.skipped)
                return result, model
        if not keys:
            raise self._every_key_refused()
        raise self._exhausted(attempted, deadline)

    def succeeded(
        self,
        model: str,
        key: UpstreamKey,
        breaker: ModelBreaker,
        permit: Permit,
        started: float,
    ) -> None:
        """Record an attempt's answer: its breaker, metrics, recent calls."""
        seconds = time.perf_counter() - started
        breaker.record_success(permit)
        metrics.UPSTREAM_CALLS.labels(_api(), metrics.model_label(model), "ok").inc()
        metrics.KEY_CALLS.labels(key.id, "ok").inc()
        self.recent.count(model, ok=True)
        metrics.UPSTREAM_SECONDS.labels(metrics.model_label(model)).observe(seconds)

    def observe_latency(self, model: str, kind: str, attempt: Attempt, began: float) -> None:
        """A successful attempt's latency for the hedge windows: to its first bytes (a
        stream's first event; a unary answer), which a long answer does not stretch."""
        if self.hedging is not None:
            first = attempt.first_read
            until = first if first is not None else self.clock.monotonic()
            self.hedging.observe(model, kind, until - began)

    @contextmanager
    def any_usable_key(self) -> Iterator[None]:
        """For calls made outside `call` (model listings): the first key Gemini has not
        refused, so that one refused key does not break them."""
        usable = self.keys.usable(self._store.cooldowns())
        token = current_key.set((usable or list(self.keys.keys))[0])
        try:
            yield
        finally:
            current_key.reset(token)

    def _spread(self, keys: list[UpstreamKey], ready: list[UpstreamKey]) -> list[UpstreamKey]:
        """`keys` in the order to try them: those `ready` for the requested model first,
        each request starting one further along them (per worker), so that calls spread
        evenly over the usable keys; then the rest (resting for it: tried for other models)."""
        if not ready:
            return keys
        start = next(self._turn) % len(ready)
        return [*ready[start:], *ready[:start], *(k for k in keys if k not in ready)]

    def disable_key(self, key: UpstreamKey, error: UpstreamKeyRefused) -> None:
        """Take a refused key out of the pool node-wide until its next probe."""
        self._store.set_cooldown(
            self.keys.rest_name(key), self.clock.now() + self.key_probe_interval, "key_refused"
        )
        metrics.KEY_CALLS.labels(key.id, "key_refused").inc()
        events.api_key_disabled(key.id, error.reason, self.key_probe_interval)

    def _every_key_refused(self) -> ApiError:
        details, headers = retry_hint(self.key_probe_interval)
        error = ApiError(
            503,
            "This node cannot call Gemini: Gemini refuses every upstream key it has. "
            "An operator has to replace them.",
            details=details,
            headers=headers,
        )
        error.fail_fast = True
        return error

    def _budget_allows(self) -> bool:
        """Another model after a failed attempt is an extra upstream call: budget it."""
        return self.budget is None or self.budget.try_extra()

    def failed(
        self,
        model: str,
        key: UpstreamKey,
        breaker: ModelBreaker,
        permit: Permit,
        error: UpstreamError,
        attempted: Attempted,
        started: float,
    ) -> None:
        kind = error_kind(error)
        metrics.UPSTREAM_CALLS.labels(_api(), metrics.model_label(model), kind).inc()
        metrics.KEY_CALLS.labels(key.id, kind).inc()
        metrics.UPSTREAM_SECONDS.labels(metrics.model_label(model)).observe(
            time.perf_counter() - started
        )
        self.recent.count(model, ok=False)
        self._store.track_error(model, kind)
        if isinstance(error, UpstreamRateLimited):
            breaker.release(permit)
            route = self.keys.route(model, key)
            cooldown = self._cooldowns.cool_down(route, error)
            key_id = key.id if len(self.keys) > 1 else None
            events.model_cooldown(
                model, self._cooldowns.remaining(cooldown), cooldown.reason, key=key_id
            )
            attempted.wait(self._cooldowns.remaining(cooldown))
        elif counts_against_breaker(error):
            breaker.record_failure(permit, error)
            attempted.wait(breaker.retry_after())
        else:
            breaker.release(permit)
        attempted.skipped[self.keys.route(model, key)] = kind
        attempted.last_error = error

    def record_stream_failure(self, model: str, error: UpstreamError) -> None:
        """A stream broke after its first byte reached the client: count it, no rotation."""
        self._store.track_error(model, error_kind(error))
        metrics.UPSTREAM_CALLS.labels(_api(), metrics.model_label(model), error_kind(error)).inc()
        key = self.keys.by_id.get(error.key_id or "") or self.keys.keys[0]
        metrics.KEY_CALLS.labels(key.id, error_kind(error)).inc()
        if counts_against_breaker(error):
            breaker = self.breaker_of(self.keys.route(model, key))
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


def get_gateway() -> Gateway:
    """The current app's gateway."""
    gateway: Gateway = current_app.extensions["l104.gateway"]
    return gateway
