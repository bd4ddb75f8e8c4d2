"""Hedged attempts and stall detection with an injected clock and a timer driven by hand:
the delay from a window of latencies, the budget, the race's bookkeeping (no network; a
blocked attempt is a real socket read, ended the way the node ends one)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.clock import FakeClock
from app.errors import AttemptCancelled, UpstreamStalled, UpstreamUnavailable
from app.resilience.breaker import BreakerBoard
from app.resilience.cooldowns import CooldownPolicy, Cooldowns
from app.resilience.gateway import Gateway
from app.resilience.hedging import STREAM, UNARY, HedgeConfig, Hedging, LatencyWindow
from app.resilience.timer import Timer
from app.state.sqlite_store import SqliteStateStore
from app.upstream.attempts import (
    CANCELLED,
    STALLED,
    bytes_arrived,
    current_attempt,
    ended_reason,
)
from app.upstream.key_pool import KeyPool, current_key

MODELS = ("m1", "m2")
WAIT = 10.0  # bound on every wait of these tests for another thread (never reached)


def test_window_percentile_is_nearest_rank(clock: FakeClock) -> None:
    window = LatencyWindow(size=100, max_age=60, clock=clock)
    for ms in range(1, 101):
        window.add(ms / 1000)
    assert window.percentile(95) == pytest.approx(0.095)
    assert window.percentile(50) == pytest.approx(0.050)
    assert window.count() == 100


def test_window_slides_by_count_and_age(clock: FakeClock) -> None:
    window = LatencyWindow(size=10, max_age=60, clock=clock)
    for _ in range(10):
        window.add(5.0)
    for _ in range(10):
        window.add(0.1)  # the old samples fall out of a full window
    assert window.percentile(99) == pytest.approx(0.1)
    clock.advance(61)
    assert window.count() == 0 and window.percentile(99) is None


def test_delay_from_the_window_with_floor_default_and_deadline(clock: FakeClock) -> None:
    hedging = Hedging(HedgeConfig(min_delay=0.2, default_delay=3.0, min_samples=20), clock)
    assert hedging.delay("m1", UNARY, remaining=100) == 3.0  # too few samples: the default
    for _ in range(19):
        hedging.observe("m1", UNARY, 1.0)
    assert hedging.delay("m1", UNARY, remaining=100) == 3.0
    hedging.observe("m1", UNARY, 1.0)
    assert hedging.delay("m1", UNARY, remaining=100) == 1.0  # the 95th percentile
    assert hedging.delay("m1", STREAM, remaining=100) == 3.0  # its own window per kind
    assert hedging.delay("m1", UNARY, remaining=0.9) is None  # no time left for a hedge
    for _ in range(200):
        hedging.observe("m2", UNARY, 0.01)
    assert hedging.delay("m2", UNARY, remaining=100) == 0.2  # never below HEDGE_MIN_DELAY


def test_delay_none_when_hedging_is_off(clock: FakeClock) -> None:
    assert Hedging(HedgeConfig(enabled=False), clock).delay("m1", UNARY, 100) is None
    assert Hedging(HedgeConfig(max_hedges=0), clock).delay("m1", UNARY, 100) is None


def test_stall_timeout_adaptive_between_floor_and_cap(clock: FakeClock) -> None:
    config = HedgeConfig(stall_multiple=4, stall_floor=10, stall_cap=110, min_samples=5)
    hedging = Hedging(config, clock)
    assert hedging.stall_timeout("m1", UNARY) == 110  # nothing known: only the cap
    for _ in range(5):
        hedging.observe("m1", UNARY, 0.5)
    assert hedging.stall_timeout("m1", UNARY) == 10  # 4 x 0.5 s is under the floor
    for _ in range(5):
        hedging.observe("m2", UNARY, 20.0)
    assert hedging.stall_timeout("m2", UNARY) == 80
    for _ in range(5):
        hedging.observe("m3", UNARY, 60.0)
    assert hedging.stall_timeout("m3", UNARY) == 110
    fixed = Hedging(HedgeConfig(stall_timeout=7.0), clock)
    assert fixed.stall_timeout("m3", UNARY) == 7.0


def test_timer_runs_due_entries_and_skips_cancelled(clock: FakeClock) -> None:
    timer = Timer(clock, threaded=False)
    ran: list[str] = []
    timer.schedule(1.0, lambda: ran.append("a"))
    cancelled = timer.schedule(1.0, lambda: ran.append("b"))
    timer.schedule(2.0, lambda: ran.append("c"))
    cancelled.cancel()
    assert timer.run_due() == 0
    clock.advance(1.0)
    assert timer.run_due() == 1 and ran == ["a"]
    assert timer.pending() == 1
    clock.advance(1.0)
    timer.run_due()
    assert ran == ["a", "c"] and timer.pending() == 0


def test_timer_survives_a_failing_callback(clock: FakeClock) -> None:
    timer = Timer(clock, threaded=False)
    ran: list[int] = []
    timer.schedule(0, lambda: 1 / 0)
    timer.schedule(0, lambda: ran.append(1))
    assert timer.run_due() == 2 and ran == [1]


class _Connection:
    """What an attempt tracks of a urllib3 connection: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


@dataclass
class BlockingUpstream:
    """Per (model, key id) behaviour: "hang" blocks in a socket read until the node ends
    the attempt; "ok" answers; "fail" raises a 503."""

    behaviour: dict[tuple[str, str], Any]
    calls: list[tuple[str, str]] = field(default_factory=list)
    hanging: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    ended: list[str] = field(default_factory=list)
    done: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    gate: threading.Event = field(default_factory=threading.Event)
    clock: FakeClock = field(default_factory=FakeClock)
    peer: socket.socket | None = None

    def __call__(self, model: str) -> str:
        key = current_key.get()
        assert key is not None
        self.calls.append((model, key.id))
        what = self.behaviour.get((model, key.id), "ok")
        if isinstance(what, list):  # one behaviour per call of that route
            what = what.pop(0) if len(what) > 1 else what[0]
        if what == "fail":
            raise UpstreamUnavailable(503, "down", model=model)
        if what == "trickle":  # bytes now and then from the test's end, "." ends the answer
            ours, self.peer = socket.socketpair()
            self.hanging.release()
            with ours:
                ours.settimeout(WAIT)
                while (data := ours.recv(1)) == b"x":
                    bytes_arrived(self.clock.monotonic())
                    self.done.release()
            assert data == b"."
            return f"ok from {model}@{key.id}"
        if what == "gate":  # answers when the test opens the gate
            self.hanging.release()
            assert self.gate.wait(WAIT)
            return f"ok from {model}@{key.id}"
        if what == "hang":
            ours, theirs = socket.socketpair()
            attempt = current_attempt.get()
            assert attempt is not None
            attempt.track(_Connection(ours))  # type: ignore[arg-type]
            self.hanging.release()
            try:
                ours.settimeout(WAIT)
                assert ours.recv(1) == b""  # shut by the node
            finally:
                ours.close()
                theirs.close()
            reason = ended_reason()
            self.ended.append(str(reason))
            self.done.release()
            if reason == CANCELLED:
                raise AttemptCancelled(model=model)
            assert reason == STALLED
            raise UpstreamStalled(model=model)
        return f"ok from {model}@{key.id}"


@pytest.fixture
def pool() -> KeyPool:
    return KeyPool(["k1", "k2"])


def _gateway(
    store: SqliteStateStore,
    clock: FakeClock,
    pool: KeyPool,
    config: HedgeConfig,
    deadline: float = 60,
) -> Gateway:
    """A gateway over `pool` with `config`, its timer driven by the test."""
    board = BreakerBoard(store, fail_max=3, reset_timeout=60, max_probes=1, probe_ttl=30)
    return Gateway(
        MODELS,
        board.get,
        Cooldowns(store, CooldownPolicy(default=30)),
        store,
        clock,
        deadline_seconds=deadline,
        keys=pool,
        hedging=Hedging(config, clock),
        timer=Timer(clock, threaded=False),
    )


@pytest.fixture
def hedged(store: SqliteStateStore, clock: FakeClock, pool: KeyPool) -> Gateway:
    config = HedgeConfig(default_delay=1.0, min_delay=0.5, stall_timeout=30.0)
    return _gateway(store, clock, pool, config)


def _hedges(outcome: str) -> float:
    """l104_hedges_total of this process (the test's models are unlisted in metrics)."""
    value = REGISTRY.get_sample_value(
        "l104_hedges_total", {"model": "unlisted", "outcome": outcome}
    )
    return value or 0.0


def _ids(pool: KeyPool) -> tuple[str, str]:
    return pool.keys[0].id, pool.keys[1].id


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run the client's call on a thread of its own (the test drives the timer)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as error:  # the test looks at it
            out["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _finished(thread: threading.Thread, out: dict[str, Any]) -> Any:
    thread.join(WAIT)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_hedge_on_another_key_wins_and_the_hung_attempt_is_closed(
    hedged: Gateway, pool: KeyPool, clock: FakeClock, store: SqliteStateStore
) -> None:
    k1, k2 = _ids(pool)
    won, lost = _hedges("won"), _hedges("lost")
    upstream = BlockingUpstream({("m1", k1): "hang"})
    thread, out = _in_thread(lambda: hedged.call("m1", upstream))
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(0.99)
    assert hedged.timer.run_due() == 0  # not yet the hedge delay (1 s, the default)
    clock.advance(0.01)
    assert hedged.timer.run_due() == 1
    assert _finished(thread, out) == (f"ok from m1@{k2}", "m1")
    assert upstream.calls == [("m1", k1), ("m1", k2)]
    assert upstream.ended == [CANCELLED]  # the primary's socket was shut at once
    assert store.breaker(pool.route("m1", pool.keys[0])).failures == 0  # not its fault
    assert hedged.hedging is not None
    assert hedged.hedging.budget.usage()["extra_attempts"] == 1
    assert (_hedges("won"), _hedges("lost")) == (won + 1, lost)  # the primary is no hedge


def test_primary_answering_first_cancels_the_hedge(
    hedged: Gateway, pool: KeyPool, clock: FakeClock, store: SqliteStateStore
) -> None:
    k1, k2 = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "gate", ("m1", k2): "hang"})
    thread, out = _in_thread(lambda: hedged.call("m1", upstream))
    assert upstream.hanging.acquire(timeout=WAIT)  # the primary waits at the gate
    clock.advance(1.0)
    hedged.timer.run_due()
    assert upstream.hanging.acquire(timeout=WAIT)  # the hedge hangs
    lost = _hedges("lost")
    upstream.gate.set()
    assert _finished(thread, out) == (f"ok from m1@{k1}", "m1")
    assert upstream.done.acquire(timeout=WAIT)
    for _ in range(int(WAIT * 100)):  # counted on the hedge's thread, just after
        if _hedges("lost") > lost:
            break
        threading.Event().wait(0.01)
    assert _hedges("lost") == lost + 1
    assert upstream.ended == [CANCELLED]  # the losing hedge was closed, not left running
    assert store.breaker(pool.route("m1", pool.keys[1])).failures == 0


def test_stalled_attempt_fails_its_route_and_the_call_goes_on(
    store: SqliteStateStore, clock: FakeClock, pool: KeyPool
) -> None:
    gateway = _gateway(
        store, clock, pool, HedgeConfig(enabled=False, stall_timeout=5.0), deadline=60
    )
    k1, k2 = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "hang"})
    thread, out = _in_thread(lambda: gateway.call("m1", upstream))
    assert upstream.hanging.acquire(timeout=WAIT)
    assert gateway.timer.pending() == 1  # hedging off: only the stall timer
    clock.advance(5.0)
    gateway.timer.run_due()
    assert _finished(thread, out) == (f"ok from m1@{k2}", "m1")  # another key first
    assert upstream.ended == [STALLED]
    assert store.breaker(pool.route("m1", pool.keys[0])).failures == 1  # a failure
    assert store.model_errors() == {"m1": {"stalled": 1}}


def test_spent_budget_starts_no_hedge(
    store: SqliteStateStore, clock: FakeClock, pool: KeyPool
) -> None:
    gateway = _gateway(
        store,
        clock,
        pool,
        HedgeConfig(default_delay=1.0, budget_ratio=0.0, budget_allowance=0, stall_timeout=5),
        deadline=60,
    )
    k1, k2 = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "hang"})
    thread, out = _in_thread(lambda: gateway.call("m1", upstream))
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(1.0)
    assert gateway.timer.run_due() == 1  # the hedge's turn: refused by the budget
    assert upstream.calls == [("m1", k1)]
    clock.advance(4.0)
    gateway.timer.run_due()  # the stall timer ends the attempt instead
    assert _finished(thread, out) == (f"ok from m1@{k2}", "m1")
    assert upstream.ended == [STALLED]


def test_no_hedge_that_could_not_finish_before_the_deadline(
    store: SqliteStateStore, clock: FakeClock, pool: KeyPool
) -> None:
    gateway = _gateway(
        store, clock, pool, HedgeConfig(default_delay=1.0, stall_timeout=0.5), deadline=0.9
    )
    k1, _ = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "hang"})
    thread, out = _in_thread(lambda: gateway.call("m1", upstream, rotate=False))
    assert upstream.hanging.acquire(timeout=WAIT)
    assert gateway.timer.pending() == 1  # the stall timer only: no hedge past the deadline
    clock.advance(0.5)
    gateway.timer.run_due()
    thread.join(WAIT)
    assert upstream.ended == [STALLED]


def test_a_call_that_never_rotates_hedges_on_another_key_of_its_model(
    hedged: Gateway, pool: KeyPool, clock: FakeClock
) -> None:
    k1, k2 = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "hang", ("m2", k1): "ok"})
    thread, out = _in_thread(lambda: hedged.call("m1", upstream, rotate=False))
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(1.0)
    hedged.timer.run_due()
    assert _finished(thread, out) == (f"ok from m1@{k2}", "m1")
    assert [m for m, _ in upstream.calls] == ["m1", "m1"]


def test_one_key_and_no_rotation_hedges_on_the_same_route(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    pool = KeyPool(["only"])
    gateway = _gateway(
        store, clock, pool, HedgeConfig(default_delay=1.0, stall_timeout=30.0), deadline=60
    )
    key = pool.keys[0].id
    upstream = BlockingUpstream({("m1", key): ["hang", "ok"]})  # then the same route again
    thread, out = _in_thread(lambda: gateway.call("m1", upstream, rotate=False))
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(1.0)
    gateway.timer.run_due()
    assert _finished(thread, out) == (f"ok from m1@{key}", "m1")
    assert upstream.calls == [("m1", key), ("m1", key)]
    assert upstream.ended == [CANCELLED]


def test_a_failed_hedge_leaves_the_primary_running(
    hedged: Gateway, pool: KeyPool, clock: FakeClock, store: SqliteStateStore
) -> None:
    k1, k2 = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "gate", ("m1", k2): "fail"})
    thread, out = _in_thread(lambda: hedged.call("m1", upstream))
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(1.0)
    hedged.timer.run_due()
    while len(upstream.calls) < 2:  # the hedge's call is made on its thread
        threading.Event().wait(0.01)
    upstream.gate.set()
    assert _finished(thread, out) == (f"ok from m1@{k1}", "m1")
    assert store.breaker(pool.route("m1", pool.keys[1])).failures == 1  # its own failure


def test_an_answer_still_arriving_is_never_taken_for_a_stall(
    store: SqliteStateStore, clock: FakeClock, pool: KeyPool
) -> None:
    gateway = _gateway(
        store, clock, pool, HedgeConfig(enabled=False, stall_timeout=5.0), deadline=60
    )
    k1, _ = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "trickle"}, clock=clock)
    thread, out = _in_thread(lambda: gateway.call("m1", upstream))
    assert upstream.hanging.acquire(timeout=WAIT) and upstream.peer is not None
    for _ in range(3):  # a byte every 4 s: never 5 s of silence, 12 s in all
        clock.advance(4.0)
        upstream.peer.send(b"x")
        assert upstream.done.acquire(timeout=WAIT)
        gateway.timer.run_due()
    upstream.peer.send(b".")
    assert _finished(thread, out) == (f"ok from m1@{k1}", "m1")
    upstream.peer.close()
    assert store.breaker(pool.route("m1", pool.keys[0])).failures == 0


def test_a_stall_with_no_other_route_is_tried_once_more(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    """An embedding on a pool of one key: after a stall, the same route again (a hang is
    rarely two in a row), not a 504 at once."""
    pool = KeyPool(["only"])
    gateway = _gateway(
        store, clock, pool, HedgeConfig(enabled=False, stall_timeout=5.0), deadline=60
    )
    key = pool.keys[0].id
    upstream = BlockingUpstream({("m1", key): ["hang", "ok"]})  # then the same route again
    thread, out = _in_thread(lambda: gateway.call("m1", upstream, rotate=False))
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(5.0)
    gateway.timer.run_due()
    assert _finished(thread, out) == (f"ok from m1@{key}", "m1")
    assert upstream.calls == [("m1", key), ("m1", key)] and upstream.ended == [STALLED]


def test_when_the_hedge_stalls_too_the_call_goes_on_within_its_deadline(
    store: SqliteStateStore, clock: FakeClock, pool: KeyPool
) -> None:
    gateway = _gateway(store, clock, pool, HedgeConfig(default_delay=1.0, stall_timeout=30.0))
    k1, k2 = _ids(pool)
    upstream = BlockingUpstream({("m1", k1): "hang", ("m1", k2): ["hang", "ok"]})
    thread, out = _in_thread(lambda: gateway.call("m1", upstream))
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(1.0)
    gateway.timer.run_due()  # the hedge, on the other key
    assert upstream.hanging.acquire(timeout=WAIT)
    clock.advance(29.0)
    gateway.timer.run_due()  # the primary stalls: the call waits for its hedge
    assert upstream.done.acquire(timeout=WAIT)
    clock.advance(1.0)
    gateway.timer.run_due()  # the hedge stalls too
    assert _finished(thread, out) == (f"ok from m1@{k2}", "m1")  # that route once more
    assert upstream.ended == [STALLED, STALLED]
