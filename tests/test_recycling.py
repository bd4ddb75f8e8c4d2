"""Graceful recycling: one worker of the node at a time, never before the minimum age."""

from __future__ import annotations

from pathlib import Path

from app.clock import FakeClock
from app.state.sqlite_store import SqliteStateStore
from app.workers.recycling import Recycler
from app.workers.supervision import WorkerFailures, prepare_dir


class FakeWorker:
    """Stands for a gunicorn worker: recycling flips `alive`."""

    alive = True


def _recycler(store: SqliteStateStore, clock: FakeClock, min_age: float = 0) -> Recycler:
    recycler = Recycler(store, clock, slot_ttl=60, min_age=min_age)
    recycler.bind(FakeWorker())
    return recycler


def test_recycle_sets_alive_false_and_records_the_reason(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    recycler = _recycler(store, clock)
    assert recycler.request("failures")
    assert recycler.worker.alive is False
    import os

    assert store.recycle_reason(os.getpid()) == "failures"
    assert store.recycle_reason(os.getpid()) is None  # read once


def test_young_worker_waits_for_min_age(store: SqliteStateStore, clock: FakeClock) -> None:
    recycler = _recycler(store, clock, min_age=30)
    assert not recycler.request("failures")
    clock.advance(31)
    assert recycler.try_now()


def test_an_operators_recycle_does_not_wait_for_min_age(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    recycler = _recycler(store, clock, min_age=30)
    assert not recycler.request("failures")
    assert recycler.waits_until() == clock.now() + 30  # deferred, and says until when
    assert recycler.request("heal", by_operator=True)  # then an operator asks: at once
    assert recycler.worker.alive is False
    assert recycler.waits_until() is None


def test_one_worker_at_a_time(store: SqliteStateStore, clock: FakeClock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pid = [101]
    monkeypatch.setattr("app.workers.recycling.os.getpid", lambda: pid[0])
    first, second = _recycler(store, clock), _recycler(store, clock)
    assert first.request("heal")
    pid[0] = 102
    assert not second.request("heal")  # the slot is taken
    assert second.worker.alive is True
    _recycler(store, clock)  # the replacement worker boots and frees the slot
    assert second.try_now()
    assert second.worker.alive is False


def test_stale_slot_of_a_vanished_worker_expires(store: SqliteStateStore, clock: FakeClock) -> None:
    assert store.acquire_recycle_slot(1, "heal", ttl=60)
    assert not store.acquire_recycle_slot(2, "heal", ttl=60)
    clock.advance(61)
    assert store.acquire_recycle_slot(2, "heal", ttl=60)


def test_worker_failures_count_node_side_errors_in_a_window() -> None:
    clock = FakeClock()
    failures = WorkerFailures(threshold=3, window=60, clock=clock)
    assert not failures.record(500, fail_fast=False)
    assert not failures.record(503, fail_fast=True)  # refusals by open breakers do not count
    assert not failures.record(200, fail_fast=False)  # successes neither
    assert not failures.record(502, fail_fast=False)
    assert failures.record(None, False)  # no response at all is a failure too
    assert not failures.record(500, False)  # the count restarted
    clock.advance(61)
    assert not failures.record(500, False)  # the older failure left the window
    assert not failures.record(500, False)
    assert failures.record(500, False)


def test_prepare_dir_wipes_except_in_a_reexec_master(tmp_path: Path) -> None:
    target = tmp_path / "metrics"
    target.mkdir()
    (target / "counter_1.db").write_text("x")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(target)}
    prepare_dir(env, "PROMETHEUS_MULTIPROC_DIR", "x-", None)
    assert list(target.iterdir()) == []
    (target / "counter_2.db").write_text("x")
    prepare_dir({**env, "GUNICORN_FD": "3"}, "PROMETHEUS_MULTIPROC_DIR", "x-", None)
    assert [p.name for p in target.iterdir()] == ["counter_2.db"]
    fresh: dict[str, str] = {}
    path, made = prepare_dir(fresh, "L104_STATE_DIR", "l104-test-", ("state.db",))
    assert made and fresh["L104_STATE_DIR"] == str(path) and path.is_dir()
    path.rmdir()
