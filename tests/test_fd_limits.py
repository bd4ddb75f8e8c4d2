"""File descriptor limits: raised toward what the settings can use, warned about below it."""

from __future__ import annotations

import logging
import resource

import pytest

from app.settings import Settings
from app.workers import fd_limits

SETTINGS = Settings.from_env({"MAX_CALLS_IN_FLIGHT": "1000", "WORKER_CONNECTIONS": "1200"})
NEEDED = 1200 + 1000 + fd_limits.BASE_FDS


class FakeLimits:
    """getrlimit/setrlimit over a pair of numbers; setrlimit may be made to fail."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def set(self, which: int, limits: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


def _ensure(limits: FakeLimits) -> int:
    return fd_limits.ensure(SETTINGS, limits.get, limits.set)


def test_need_counts_client_and_upstream_connections() -> None:
    assert fd_limits.needed_per_worker(SETTINGS) == NEEDED


def test_enough_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    limits = FakeLimits(NEEDED, NEEDED)
    assert _ensure(limits) == NEEDED
    assert not caplog.records


def test_soft_limit_is_raised_up_to_the_need(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    limits = FakeLimits(1024, 1_048_576)
    assert _ensure(limits) == NEEDED
    assert limits.limits == (NEEDED, 1_048_576)
    assert [r.event for r in caplog.records] == ["fd_limit_raised"]  # type: ignore[attr-defined]


def test_unlimited_hard_limit_raises_to_the_need() -> None:
    limits = FakeLimits(1024, resource.RLIM_INFINITY)
    assert _ensure(limits) == NEEDED


def test_below_the_hard_limit_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    limits = FakeLimits(1024, 2048)
    assert _ensure(limits) == 2048
    events = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.event for r in events] == ["fd_limit_low"]  # type: ignore[attr-defined]
    assert events[0].needed == NEEDED and events[0].soft_limit == 2048  # type: ignore[attr-defined]


def test_a_refused_raise_warns(caplog: pytest.LogCaptureFixture) -> None:
    limits = FakeLimits(1024, 1_048_576, refuse=True)
    assert _ensure(limits) == 1024
    assert [r.event for r in caplog.records] == ["fd_limit_low"]  # type: ignore[attr-defined]
