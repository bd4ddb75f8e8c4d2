"""The health watchdog of one worker: periodic cheap checks that escalate healing.

Each failed round escalates (light, medium, heavy) and heals this worker at that level,
logging `watchdog_heal`; a passing round steps back down. After WATCHDOG_FAILURE_THRESHOLD
failed rounds in a row, heavy healing recycles the worker (with WATCHDOG_EXIT_ON_FAILURE=false
it only logs and keeps healing). No check sends generation traffic upstream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from app.healing.healer import LEVEL_ACTIONS, RECYCLE_WORKERS, Escalation
from app.healing.periodic import Periodic
from app.observability.logs import log_event

log = logging.getLogger("l104.watchdog")
Check = Callable[[], str | None]  # None when healthy, else what is wrong


@dataclass
class WatchdogConfig:
    """WATCHDOG_* settings."""

    interval: float = 30.0
    failure_threshold: int = 3
    exit_on_failure: bool = True


class Watchdog:
    """Runs `checks` each round and heals through `heal(actions, level)`."""

    def __init__(
        self,
        checks: dict[str, Check],
        escalation: Escalation,
        heal: Callable[[list[str], str], object],
        recycle: Callable[[str], object],
        config: WatchdogConfig,
    ) -> None:
        self.checks = checks
        self.escalation = escalation
        self._heal = heal
        self._recycle = recycle
        self.config = config
        self.failed_rounds = 0
        self.thread = Periodic("watchdog", config.interval, self.run_once)

    def run_once(self) -> dict[str, str]:
        """One round: every check, then heal (or step down). Returns the failed checks."""
        failed: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # a broken check is a failed check
                problem = f"check raised {type(exc).__name__}"
            if problem:
                failed[name] = problem
        if not failed:
            self.failed_rounds = 0
            self.escalation.passed()
            return failed
        self.failed_rounds += 1
        level = self.escalation.trigger()
        actions = [a for a in LEVEL_ACTIONS[level] if a != RECYCLE_WORKERS]
        recycle = self.failed_rounds >= self.config.failure_threshold
        log_event(
            log,
            "watchdog_heal",
            logging.WARNING,
            heal_level=level,
            failed_checks=failed,
            failed_rounds=self.failed_rounds,
            recycle=recycle and self.config.exit_on_failure,
        )
        self._heal(actions, level)
        if recycle:
            if self.config.exit_on_failure:
                self._recycle("watchdog")
            else:
                log_event(
                    log,
                    "watchdog_recycle_skipped",
                    logging.WARNING,
                    reason="WATCHDOG_EXIT_ON_FAILURE=false",
                    pid=os.getpid(),
                )
        return failed
