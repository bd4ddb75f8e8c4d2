"""Hedged attempts of the Gateway's calls: the race of one call's attempts, started and
watched by the worker's timer (see `app.resilience.race` and `app.resilience.hedging`).

A `Hedger` works for one `Gateway`, with its breakers, key pool, timer and bookkeeping: a
hedge's attempt is recorded exactly as the call's own attempts are.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from app.errors import AttemptCancelled, UpstreamError, UpstreamKeyRefused, UpstreamStalled
from app.observability import events, metrics
from app.resilience.breaker import BreakerOpenError, ModelBreaker, Permit
from app.resilience.hedging import EMBED
from app.resilience.race import Attempted, CallPlan, Race, answered_by_hedge, discard_result
from app.resilience.timer import TimerEntry
from app.upstream.attempts import STALLED, Attempt, current_attempt
from app.upstream.backoff import Deadline
from app.upstream.key_pool import UpstreamKey, current_key

if TYPE_CHECKING:
    from app.resilience.gateway import Gateway

T = TypeVar("T")


class Hedger:
    """Starts, runs and settles the hedges of one gateway's calls."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @staticmethod
    def fallbacks(plan: CallPlan[Any]) -> list[tuple[str, UpstreamKey]]:
        """Where a hedge of the plan's attempt may go, in order: the same model on the
        call's other usable keys, then the models after it in the rotation (for calls that
        rotate); for an embedding, or with no other route at all, the same model and key."""
        model, key, keys = plan.requested, plan.key, list(plan.keys)
        routes = [(model, k) for k in keys if k is not key]
        if plan.kind != EMBED:
            later = plan.candidates[plan.candidates.index(model) + 1 :]
            routes += [(m, k) for m in later for k in keys]
        return routes or [(model, key)]

    def start_race(self, plan: CallPlan[T]) -> Race[T]:
        """The primary attempt's race, with its stall timer and, when hedging is on and
        there is time for it, its first hedge's timer."""
        race: Race[T] = Race(plan, Attempt())
        hedging = self.gateway.hedging
        if hedging is None:
            return race
        race.entries.append(self._watch(race.primary, plan, plan.requested, plan.key))
        delay = hedging.delay(plan.requested, plan.kind, plan.deadline.remaining())
        if delay is not None:
            race.entries.append(
                self.gateway.timer.schedule(delay, partial(self._hedge, race, delay))
            )
        return race

    def _watch(
        self, attempt: Attempt, plan: CallPlan[Any], model: str, key: UpstreamKey
    ) -> TimerEntry:
        """The stall timer of an attempt of `model` (the primary's or a hedge's)."""
        hedging = self.gateway.hedging
        assert hedging is not None  # only a gateway that hedges watches its attempts
        stall = hedging.stall_timeout(model, plan.kind)
        return self.gateway.timer.schedule(stall, partial(self._stalled, attempt, plan, key, stall))

    def _stalled(
        self, attempt: Attempt, plan: CallPlan[Any], key: UpstreamKey, after: float
    ) -> None:
        """The stall timer's callback: end the attempt if it has received nothing for
        `after` seconds; bytes since then push the check back."""
        if attempt.ended is not None:
            return
        if attempt.last_read is not None:
            left = attempt.last_read + after - self.gateway.clock.monotonic()
            if left > 0:
                self.gateway.timer.schedule(left, partial(self._stalled, attempt, plan, key, after))
                return
        if attempt.end(STALLED):
            events.attempt_stalled(plan.requested, key.id, after)

    def _hedge(self, race: Race[Any], delay: float) -> None:
        """The timer's callback: start a hedge if the race is still on and the budget and
        the deadline allow it (quick: the hedge runs on a thread of its own)."""
        hedging = self.gateway.hedging
        plan = race.plan
        if hedging is None or race.settled or plan.deadline.expired():
            return
        if race.hedges_started() >= hedging.config.max_hedges:
            return
        if race.primary.last_read is not None:
            return  # it is answering: a hedge is for attempts that have produced nothing
        if not hedging.budget.try_extra():
            metrics.HEDGES.labels(metrics.model_label(plan.requested), "skipped_budget").inc()
            return
        race.hedge_began()
        context = plan.context.copy()
        thread = threading.Thread(
            target=context.run, args=(self._run_hedge, race, delay), daemon=True
        )
        thread.start()
        if race.hedges_started() < hedging.config.max_hedges:
            race.entries.append(
                self.gateway.timer.schedule(delay, partial(self._hedge, race, delay))
            )

    def _run_hedge(self, race: Race[Any], delay: float) -> None:
        """A hedge's thread: the first fallback route whose breaker admits it, raced against
        the attempts already running."""
        plan = race.plan
        try:
            for model, key in self.fallbacks(plan):
                route = self.gateway.keys.route(model, key)
                if route in plan.resting or route in race.tried:
                    continue
                breaker = self.gateway.breaker_of(route)
                try:
                    permit = breaker.admit()
                except BreakerOpenError:
                    continue
                attempt = Attempt()
                if not race.add_hedge(attempt, route):
                    breaker.release(permit)
                    return
                events.hedge_started(plan.requested, model, key.id, delay)
                self._hedge_attempt(race, attempt, model, key, breaker, permit)
                return
            metrics.HEDGES.labels(metrics.model_label(plan.requested), "no_route").inc()
        finally:
            race.hedge_ended()

    def _hedge_attempt(
        self,
        race: Race[Any],
        attempt: Attempt,
        model: str,
        key: UpstreamKey,
        breaker: ModelBreaker,
        permit: Permit,
    ) -> None:
        plan = race.plan
        requested = metrics.model_label(plan.requested)
        entry = self._watch(attempt, plan, model, key)
        started = time.perf_counter()
        began = self.gateway.clock.monotonic()
        key_token = current_key.set(key)
        attempt_token = current_attempt.set(attempt)
        try:
            result = plan.op(model)
        except AttemptCancelled:
            breaker.release(permit)
            metrics.HEDGES.labels(requested, "lost").inc()
        except UpstreamKeyRefused as error:
            breaker.release(permit)
            self.gateway.disable_key(key, error)
            metrics.HEDGES.labels(requested, "failed").inc()
        except UpstreamError as error:
            self.gateway.failed(model, key, breaker, permit, error, Attempted(skipped={}), started)
            metrics.HEDGES.labels(requested, "failed").inc()
            if isinstance(error, UpstreamStalled):
                race.stalled.add(self.gateway.keys.route(model, key))
        except BaseException:
            breaker.release(permit)
            raise
        else:
            self.gateway.succeeded(model, key, breaker, permit, started)
            self.gateway.observe_latency(model, plan.kind, attempt, began)
            if race.claim(result, model, attempt):
                events.hedge_won(plan.requested, model, key.id, time.perf_counter() - started)
            else:
                discard_result(plan, result)
                metrics.HEDGES.labels(requested, "lost").inc()
        finally:
            entry.cancel()
            attempt.finish()
            current_attempt.reset(attempt_token)
            current_key.reset(key_token)

    def outcome(self, race: Race[T], deadline: Deadline, hedged: set[str]) -> tuple[T, str] | None:
        """After the primary failed: a running hedge's answer, if one comes (the call goes
        on from there otherwise, skipping the routes its hedges took)."""
        if not race.hedges_started():
            return None
        won = race.wait_for_hedges(max(deadline.remaining(), 0.0))
        # Routes a hedge took are not tried again, but for one that only stalled: with the
        # deadline not over, the call may still find it answering (a hang is rarely two).
        hedged.update(race.tried - race.stalled)
        if won is None:
            return None
        answered_by_hedge.set(won[2])
        return won[0], won[1]

    @staticmethod
    def winner(race: Race[T]) -> tuple[T, str]:
        if race.winner is None:
            raise AttemptCancelled()  # not reached: an attempt is cancelled only by a winner
        answered_by_hedge.set(race.winner[2])
        return race.winner[0], race.winner[1]
