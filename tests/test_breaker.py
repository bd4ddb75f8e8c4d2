"""Breaker state machine with an injected clock and the real node-wide store (no sleeps)."""

from __future__ import annotations

import threading

import pybreaker
import pytest

from app.clock import FakeClock
from app.resilience.breaker import BreakerOpenError, ModelBreaker
from app.state.sqlite_store import SqliteStateStore


class Recorder(pybreaker.CircuitBreakerListener):
    """Collects state changes as (old, new) names."""

    def __init__(self) -> None:
        self.changes: list[tuple[str | None, str]] = []

    def state_change(self, cb, old_state, new_state):  # type: ignore[no-untyped-def]
        self.changes.append((old_state.name if old_state else None, new_state.name))


def _breaker(
    store: SqliteStateStore, recorder: Recorder | None = None, **kw: object
) -> ModelBreaker:
    options: dict[str, object] = {"fail_max": 3, "reset_timeout": 60.0, "max_probes": 2, **kw}
    return ModelBreaker(
        "gemini-x",
        store,
        listeners=[recorder] if recorder else [],
        **options,  # type: ignore[arg-type]
    )


def _fail(breaker: ModelBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure(breaker.admit(), ConnectionError("down"))


def test_opens_after_threshold_consecutive_failures(store: SqliteStateStore) -> None:
    recorder = Recorder()
    breaker = _breaker(store, recorder)
    _fail(breaker, 2)
    breaker.record_success(breaker.admit())  # a success resets the streak
    _fail(breaker, 2)
    assert breaker.current_state == "closed"
    _fail(breaker, 1)
    assert breaker.current_state == "open"
    assert recorder.changes == [("closed", "open")]
    with pytest.raises(BreakerOpenError) as caught:
        breaker.admit()
    assert caught.value.retry_after == pytest.approx(60.0)


def test_half_open_after_timeout_admits_bounded_probes(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    recorder = Recorder()
    breaker = _breaker(store, recorder)
    _fail(breaker, 3)
    clock.advance(59.9)
    with pytest.raises(BreakerOpenError):
        breaker.admit()
    clock.advance(0.2)
    first, second = breaker.admit(), breaker.admit()
    assert first.probe and second.probe
    with pytest.raises(BreakerOpenError):
        breaker.admit()  # the third is rejected at once
    assert breaker.current_state == "half-open"
    breaker.record_success(first)
    assert breaker.current_state == "closed"
    assert recorder.changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    breaker.record_success(second)
    assert breaker.current_state == "closed"


def test_failed_probe_reopens_for_another_timeout(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    breaker = _breaker(store)
    _fail(breaker, 3)
    clock.advance(61)
    probe = breaker.admit()
    breaker.record_failure(probe, TimeoutError("still down"))
    assert breaker.current_state == "open"
    with pytest.raises(BreakerOpenError) as caught:
        breaker.admit()
    assert caught.value.retry_after == pytest.approx(60.0)


def test_released_probe_frees_its_slot(store: SqliteStateStore, clock: FakeClock) -> None:
    breaker = _breaker(store, max_probes=1)
    _fail(breaker, 3)
    clock.advance(61)
    probe = breaker.admit()
    with pytest.raises(BreakerOpenError):
        breaker.admit()
    breaker.release(probe)
    assert breaker.admit().probe


def test_stale_probe_of_a_dead_worker_expires(store: SqliteStateStore, clock: FakeClock) -> None:
    breaker = _breaker(store, max_probes=1, probe_ttl=30.0)
    _fail(breaker, 3)
    clock.advance(61)
    breaker.admit()  # never recorded: its worker died
    clock.advance(29)
    with pytest.raises(BreakerOpenError):
        breaker.admit()
    clock.advance(2)
    assert breaker.admit().probe


def test_state_is_shared_and_announced_once(store: SqliteStateStore, clock: FakeClock) -> None:
    """Two breaker objects on one store stand for two gunicorn workers."""
    here, there = Recorder(), Recorder()
    worker_a = _breaker(store, here)
    worker_b = _breaker(store, there)
    _fail(worker_a, 2)
    _fail(worker_b, 1)
    assert worker_a.current_state == worker_b.current_state == "open"
    with pytest.raises(BreakerOpenError):
        worker_a.admit()
    assert here.changes == [] and there.changes == [("closed", "open")]


def test_reset_closes_and_counts_as_a_change(store: SqliteStateStore) -> None:
    recorder = Recorder()
    breaker = _breaker(store, recorder)
    _fail(breaker, 3)
    assert breaker.reset()
    assert breaker.current_state == "closed"
    assert not breaker.reset()
    assert breaker.admit().probe is False


def test_concurrent_calls_are_not_serialised(store: SqliteStateStore) -> None:
    """Every thread holds its permit at the same time: no lock spans the upstream call."""
    breaker = _breaker(store)
    threads = 8
    barrier = threading.Barrier(threads, timeout=5)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            permit = breaker.admit()
            barrier.wait()  # all 8 are "inside the upstream call" together
            breaker.record_success(permit)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert errors == []


def test_admission_reads_cooldowns_and_breakers_together(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    """One read gives what single reads give; a breaker never seen reads as closed."""
    breaker = _breaker(store)
    _fail(breaker, 3)
    store.set_cooldown("gemini-y", clock.now() + 30, "rate_limited")
    store.set_cooldown("gemini-z", clock.now() - 1, "rate_limited")  # over already
    seen = store.admission(["gemini-x", "gemini-y", "never-seen"])
    assert seen.resting == store.cooldowns() and set(seen.resting) == {"gemini-y"}
    assert seen.breakers["gemini-x"] == store.breaker("gemini-x")
    assert seen.breakers["gemini-x"].state == "open"
    assert seen.breakers["never-seen"].state == "closed"
    assert list(seen.breakers) == ["gemini-x", "gemini-y", "never-seen"]


def test_admit_with_the_record_read_by_the_caller(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    """An open record refuses at once with the wait it implies; once the timeout has passed
    the breaker moves to half-open and admits a probe, as without the record."""
    breaker = _breaker(store)
    _fail(breaker, 3)
    clock.advance(20)
    with pytest.raises(BreakerOpenError) as caught:
        breaker.admit(store.admission(["gemini-x"]).breakers["gemini-x"])
    assert caught.value.retry_after == pytest.approx(40.0)
    clock.advance(41)
    permit = breaker.admit(store.admission(["gemini-x"]).breakers["gemini-x"])
    assert permit.probe and breaker.current_state == "half-open"


def test_success_after_a_clean_admission_touches_nothing(store: SqliteStateStore) -> None:
    """Admitted closed with no failures: the success has nothing to reset. A failure counted
    by another worker meanwhile stays counted (errs towards opening); after an admission
    that saw failures, a success resets them."""
    ours, theirs = _breaker(store), _breaker(store)
    permit = ours.admit()
    assert permit.clean
    theirs.record_failure(theirs.admit(), ConnectionError("down"))
    ours.record_success(permit)
    assert store.breaker("gemini-x").failures == 1
    permit = ours.admit()
    assert not permit.clean
    ours.record_success(permit)
    assert store.breaker("gemini-x").failures == 0
