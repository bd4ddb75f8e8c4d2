"""Call slots: refusals past the limit, and one log line per overload episode."""

from __future__ import annotations

import logging

import pytest

from app.observability import metrics
from app.resilience.admission import CallSlots


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records if r.name == "l104.admission"]


def test_slots_refuse_past_the_limit_and_log_each_episode_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    refused = metrics.REFUSED.labels("overloaded")
    before = refused._value.get()
    slots = CallSlots(10)
    assert all(slots.try_take() for _ in range(10))
    assert not slots.try_take() and not slots.try_take()
    assert slots.in_flight == 10 and slots.overloaded
    assert refused._value.get() - before == 2
    assert _events(caplog) == ["worker_overloaded"]
    slots.give_back()  # 9 of 10 in flight: at 90 %, recovered
    assert not slots.overloaded and _events(caplog)[-1] == "worker_overload_cleared"
    assert slots.try_take() and not slots.try_take()
    assert _events(caplog) == [
        "worker_overloaded",
        "worker_overload_cleared",
        "worker_overloaded",
    ]


def test_no_recovery_logged_while_close_to_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    slots = CallSlots(100)
    for _ in range(100):
        slots.try_take()
    slots.try_take()
    for _ in range(5):  # 95 of 100: still above 90 %
        slots.give_back()
    assert slots.overloaded and _events(caplog) == ["worker_overloaded"]
