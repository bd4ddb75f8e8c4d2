"""Healing levels, escalation with an injected clock, and delivery to every worker."""

from __future__ import annotations

import pytest

from app.clock import FakeClock
from app.healing.auto_heal import watchdog_heal
from app.healing.healer import LEVEL_ACTIONS, Escalation, Healer
from app.resilience.breaker import BreakerBoard
from app.state.sqlite_store import SqliteStateStore


def test_escalation_climbs_and_cools_off() -> None:
    clock = FakeClock()
    escalation = Escalation(clock, quiet_period=60)
    assert escalation.level is None
    assert [escalation.trigger() for _ in range(4)] == ["light", "medium", "heavy", "heavy"]
    clock.advance(59)
    assert escalation.level == "heavy"
    clock.advance(2)
    assert escalation.level == "medium"
    clock.advance(120)
    assert escalation.level is None
    assert escalation.trigger() == "light"


def test_passing_checks_step_down() -> None:
    escalation = Escalation(FakeClock(), quiet_period=60)
    escalation.trigger()
    escalation.trigger()
    escalation.passed()
    assert escalation.level == "light"
    escalation.passed()
    escalation.passed()
    assert escalation.level is None


class Worker:
    """What one gunicorn worker holds: its own healer on the shared store."""

    def __init__(self, store: SqliteStateStore) -> None:
        self.board = BreakerBoard(store, fail_max=1, reset_timeout=60, max_probes=1, probe_ttl=30)
        self.client_resets: list[str] = []
        self.recycles: list[str] = []
        self.operator_recycles = 0
        self.rate_resets = 0
        self.healer = Healer(
            store,
            self.board,
            ["m1", "m2"],
            reset_rate_limits=self._reset_rates,
            reset_http_client=self.client_resets.append,
            recycle_worker=self._recycle,
        )

    def _recycle(self, reason: str, by_operator: bool) -> None:
        self.recycles.append(reason)
        self.operator_recycles += by_operator

    def _reset_rates(self) -> None:
        self.rate_resets += 1


def test_light_heal_resets_breakers_and_trackers_node_wide(store: SqliteStateStore) -> None:
    a, b = Worker(store), Worker(store)
    b.board.get("m1").record_failure(b.board.get("m1").admit(), ConnectionError())
    store.track_error("m1", "timeout")
    assert a.board.get("m1").current_state == "open"
    result = a.healer.heal(LEVEL_ACTIONS["light"], level="light", trigger="admin")
    assert "reset_circuit_breaker (m1)" in result["actions"]  # type: ignore[operator]
    assert b.board.get("m1").current_state == "closed"
    assert store.model_errors() == {}
    assert a.rate_resets == 1
    assert a.client_resets == [] and b.client_resets == []


def test_per_worker_actions_reach_every_worker_once(store: SqliteStateStore) -> None:
    a, b, c = Worker(store), Worker(store), Worker(store)
    a.healer.heal(LEVEL_ACTIONS["heavy"], level="heavy", trigger="admin")
    assert a.client_resets == ["heal"] and a.recycles == ["heal"]
    assert b.healer.apply_pending() == 1
    assert b.healer.apply_pending() == 0
    assert b.client_resets == ["heal"] and b.recycles == ["heal"]
    a.healer.heal(LEVEL_ACTIONS["medium"], level="medium", trigger="auto_errors")
    assert c.healer.apply_pending() == 2
    assert c.client_resets == ["heal"]  # two heals pending, applied once
    assert store.heal_history(5)[0]["level"] == "medium"


def test_unknown_action_is_refused(store: SqliteStateStore) -> None:
    with pytest.raises(ValueError):
        Worker(store).healer.heal(["format_disk"], level="custom", trigger="admin")


def test_watchdogs_touch_node_wide_state_once_per_interval(
    store: SqliteStateStore, clock: FakeClock
) -> None:
    """Every worker's watchdog sees the same outage each round: only the first heal within
    AUTO_HEAL_MIN_INTERVAL resets breakers; the others renew their own HTTP client only."""
    a, b = Worker(store), Worker(store)
    heal_a = watchdog_heal(a.healer, store, min_interval=60)
    heal_b = watchdog_heal(b.healer, store, min_interval=60)
    a.board.get("m1").record_failure(a.board.get("m1").admit(), RuntimeError("down"))
    assert store.breaker("m1").state == "open"

    heal_a(list(LEVEL_ACTIONS["light"]), "light")
    assert store.breaker("m1").state == "closed" and a.rate_resets == 1
    a.board.get("m1").record_failure(a.board.get("m1").admit(), RuntimeError("still down"))

    clock.advance(30)
    assert heal_b(list(LEVEL_ACTIONS["light"]), "light") is None  # nothing of its own to do
    heal_b(list(LEVEL_ACTIONS["medium"]), "medium")
    assert store.breaker("m1").state == "open", "the open breaker was left alone"
    assert b.rate_resets == 0 and b.client_resets == ["heal"]

    clock.advance(31)  # the interval has passed since the one node-wide heal
    heal_b(list(LEVEL_ACTIONS["light"]), "light")
    assert store.breaker("m1").state == "closed" and b.rate_resets == 1


def test_an_operators_recycle_is_marked_as_such_in_every_worker(store: SqliteStateStore) -> None:
    a, b = Worker(store), Worker(store)
    a.healer.heal(["recycle_workers"], level="custom", trigger="watchdog", local=False)
    b.healer.apply_pending()
    assert (a.operator_recycles, b.operator_recycles) == (0, 0)  # automatic: min age holds
    a.healer.heal(["recycle_workers"], level="custom", trigger="admin")
    b.healer.apply_pending()
    assert (a.operator_recycles, b.operator_recycles) == (1, 1)


def test_clear_cooldowns_leaves_refused_keys_out(store: SqliteStateStore) -> None:
    a = Worker(store)
    now = store.clock.now()
    store.set_cooldown("m1", now + 30, "rate_limited")
    store.set_cooldown("key@key-0000abcd", now + 300, "key_refused")
    a.healer.heal(["clear_cooldowns"], level="custom", trigger="admin")
    assert set(store.cooldowns()) == {"key@key-0000abcd"}
