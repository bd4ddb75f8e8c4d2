"""The watchdog and its checks, with an injected clock and scripted checks (no sleeps)."""

from __future__ import annotations

from app.clock import FakeClock
from app.healing.healer import Escalation
from app.healing.health_checks import error_rate, memory, stuck_requests, upstream_reachable
from app.healing.watchdog import Watchdog, WatchdogConfig
from app.observability.request_context import RequestCounter


class Script:
    """A check whose answers are scripted round by round."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)

    def __call__(self) -> str | None:
        return self.answers.pop(0) if self.answers else None


def _watchdog(check: Script, exit_on_failure: bool = True, threshold: int = 3):  # type: ignore[no-untyped-def]
    heals: list[tuple[list[str], str]] = []
    recycles: list[str] = []
    watchdog = Watchdog(
        {"scripted": check},
        Escalation(FakeClock(), quiet_period=120),
        lambda actions, level: heals.append((actions, level)),
        recycles.append,
        WatchdogConfig(interval=30, failure_threshold=threshold, exit_on_failure=exit_on_failure),
    )
    return watchdog, heals, recycles


def test_failed_rounds_escalate_and_then_recycle() -> None:
    watchdog, heals, recycles = _watchdog(Script("bad", "bad", "bad", "bad"))
    for _ in range(4):
        watchdog.run_once()
    assert [level for _, level in heals] == ["light", "medium", "heavy", "heavy"]
    assert "reset_http_client" not in heals[0][0]
    assert "reset_http_client" in heals[1][0]
    assert all("recycle_workers" not in actions for actions, _ in heals)
    assert recycles == ["watchdog", "watchdog"]  # from the third failed round on


def test_passing_rounds_de_escalate() -> None:
    watchdog, heals, recycles = _watchdog(Script("bad", "bad", None, None, "bad"))
    for _ in range(5):
        watchdog.run_once()
    assert [level for _, level in heals] == ["light", "medium", "light"]
    assert watchdog.failed_rounds == 1
    assert recycles == []


def test_exit_on_failure_false_only_heals() -> None:
    watchdog, heals, recycles = _watchdog(Script(*["bad"] * 5), exit_on_failure=False)
    for _ in range(5):
        watchdog.run_once()
    assert len(heals) == 5 and recycles == []


def test_a_check_that_raises_counts_as_failed() -> None:
    def broken() -> str | None:
        raise RuntimeError("boom")

    watchdog, heals, _ = _watchdog(Script())
    watchdog.checks = {"broken": broken}
    assert watchdog.run_once() == {"broken": "check raised RuntimeError"}
    assert len(heals) == 1


def test_error_rate_check_uses_windows() -> None:
    requests = RequestCounter()
    check = error_rate(requests, max_ratio=0.5, min_requests=4)
    for status in (500, 500, 500, 200):
        requests.record(status)
    assert check() == "3 of 4 requests failed"
    assert check() is None  # a new window
    for status in (500, 500, 200):
        requests.record(status)
    assert check() is None  # too few requests to judge


def test_stuck_request_check() -> None:
    requests = RequestCounter()
    check = stuck_requests(requests, limit=0.0)
    assert check() is None
    requests.begin(1)
    requests.in_flight[1] -= 10  # it started ten seconds ago
    assert check() is not None and "has run for 10s" in check()  # type: ignore[operator]
    requests.end(1)
    assert check() is None


def test_memory_check() -> None:
    assert memory(100, read_rss=lambda: 99)() is None
    assert memory(100 * 2**20, read_rss=lambda: 200 * 2**20)() == "resident memory 200 MiB"


def test_upstream_check_reads_the_breakers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.state.sqlite_store import SqliteStateStore

    store = SqliteStateStore(tmp_path / "s.db", FakeClock())
    check = upstream_reachable(store, ("m1", "m2"))
    assert check() is None
    store.breaker_transition("m1", None, "open")
    assert check() is None
    store.breaker_transition("m2", None, "open")
    assert check() == "every model's circuit is open"
