"""One chaos scenario: load on, fault on, fault off, until the node serves everyone again;
then the figures every scenario is judged by."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.chaos import KINDS, ChaosLoad, Outcome, WorkerSampler, wait_for
from tests.support.logs import events
from tests.support.processes import Service

FIRST = "gemini-3.8-flash"  # what every client asks for: first in the node's rotation
DEADLINE = 4.0
BREAKER_TIMEOUT = 2.0
BUDGET_RATIO = 0.2
BUDGET_MIN = 5
BUDGET_WINDOW = 10.0  # the retry budget's sliding window (app.upstream.retry_budget)
# The chaos node: small thresholds so that every healing step happens within seconds.
CHAOS_SETTINGS = {
    "WEB_CONCURRENCY": "2",
    "CIRCUIT_BREAKER_THRESHOLD": "3",
    "CIRCUIT_BREAKER_TIMEOUT": f"{BREAKER_TIMEOUT:g}",
    "REQUEST_DEADLINE": f"{DEADLINE:g}",
    "UPSTREAM_TIMEOUT": "1,3",
    "MAX_RETRY_ATTEMPTS": "2",
    "RETRY_BACKOFF_BASE": "0.01",
    "RETRY_BUDGET_RATIO": f"{BUDGET_RATIO:g}",
    "RETRY_BUDGET_MIN": str(BUDGET_MIN),
    "AUTO_HEAL_MIN_INTERVAL": "5",
    "WATCHDOG_INTERVAL": "1",
    "WORKER_MIN_AGE": "5",
    "GRACEFUL_TIMEOUT": "10",
}
# What the checks allow on top of those settings.
LATENCY_MARGIN = 2.0
RECOVERY_MARGIN = 3.0
FAULT_SECONDS = 4.0
STREAK = 1.0  # seconds of nothing but successes, from every kind of client, that end a run
CLIENT_TIMEOUT = DEADLINE + 6  # clients wait longer than the node may take, to measure it
# Why a worker may leave during chaos: the node's own healing. Anything else is a crash.
HEALING_REASONS = frozenset({"failures", "watchdog", "heal"})


@dataclass
class Report:
    """What happened during one scenario."""

    scenario: str
    outcomes: list[Outcome]
    upstream_calls: int
    duration: float
    workers_seen: int
    min_workers: int
    recovery: float | None  # seconds from clearing the fault to full success; None: never
    # The statuses a failed call may have here; none when some model stayed healthy.
    allowed: frozenset[int] = frozenset()
    recycles: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)

    @property
    def client_calls(self) -> int:
        return len(self.outcomes)

    @property
    def successes(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def errors(self) -> Counter[str]:
        """Failed calls by status (or by what went wrong, when there was no status)."""
        return Counter(
            str(o.status) if o.problem is None else f"!{o.problem}"
            for o in self.outcomes
            if not o.ok
        )

    @property
    def max_latency(self) -> float:
        return max((o.latency for o in self.outcomes), default=0.0)

    @property
    def bound(self) -> int:
        """Upstream calls allowed: every client call once, plus the retry budget's share and
        its allowance per worker per 10 s window."""
        windows = math.ceil(self.duration / BUDGET_WINDOW)
        allowance = BUDGET_MIN * max(2, self.workers_seen) * windows
        return math.floor((1 + BUDGET_RATIO) * self.client_calls) + allowance

    def violations(self) -> list[str]:
        """Every broken promise of the node in this scenario."""
        found = [f"broken contract: {p} x{n}" for p, n in self._problems().most_common()]
        slow = [o for o in self.outcomes if o.latency > DEADLINE + LATENCY_MARGIN]
        if slow:
            kinds = dict(Counter(o.kind for o in slow))
            answers = dict(Counter(o.problem or o.status for o in slow))
            found.append(
                f"{len(slow)} calls over {DEADLINE + LATENCY_MARGIN}s (max {self.max_latency:.2f}s)"
                f" by {kinds}, answered {answers}"
            )
        if not self.allowed and self.successes != self.client_calls:
            found.append(f"a model stayed healthy but calls failed: {dict(self.errors)}")
        odd = {o.status or 0 for o in self.outcomes if not o.ok and not o.problem} - self.allowed
        if self.allowed and odd:
            found.append(f"statuses {sorted(odd)} where only {sorted(self.allowed)} make sense")
        if self.upstream_calls > self.bound:
            found.append(f"retry storm: {self.upstream_calls} upstream calls > {self.bound}")
        limit = BREAKER_TIMEOUT + RECOVERY_MARGIN
        if self.recovery is None or self.recovery > limit:
            found.append(f"no full success within {limit}s of clearing (took {self.recovery})")
        if self.min_workers < 1:
            found.append("the node had no live worker")
        return found + self.log_problems

    def _problems(self) -> Counter[str]:
        return Counter(f"{o.kind}: {o.problem}" for o in self.outcomes if o.problem)


def recovery_seconds(outcomes: list[Outcome], cleared: float) -> float | None:
    """Seconds from `cleared` until every call of every kind succeeds for STREAK seconds."""
    after = [o for o in outcomes if o.started >= cleared]
    last_bad = max((o.ended for o in after if not o.ok), default=cleared)
    good = [o for o in after if o.started >= last_bad]
    if {o.kind for o in good} != set(KINDS):
        return None
    if max(o.ended for o in good) - last_bad < STREAK:
        return None
    return last_bad - cleared


def worker_problems(node: Service) -> tuple[list[str], list[str]]:
    """Why workers left (gunicorn's master logs each), and any sign of a crashed worker."""
    text = node.log_text()
    found = [
        f"node log has {mark!r}"
        for mark in ("Traceback", "Exception in worker", "exited with code", "was sent SIG")
        if mark in text
    ]
    codes = re.findall(r"exited with code (\d+)", text)
    if codes:
        found.append(f"worker exit codes {codes}")
    reasons = [str(e.get("reason")) for e in events(node, "worker_recycled")]
    found += [f"worker left for {r!r}" for r in reasons if r not in HEALING_REASONS]
    if events(node, "heal_requested"):
        found.append("an operator heal ran (the node must heal itself)")
    return reasons, found


def run_scenario(
    name: str,
    node: Service,
    upstream_calls: Callable[[], int],
    fault: Callable[[], None],
    clear: Callable[[], None],
    allowed: frozenset[int] = frozenset(),
) -> Report:
    """Load the node, run `fault` (it holds the fault for its phase), `clear` it, and wait
    until every kind of client succeeds again (or the recovery limit passes)."""
    with WorkerSampler(node.process.pid) as sampler:
        before = upstream_calls()
        started = time.monotonic()
        with ChaosLoad(node.url, FIRST, CLIENT_TIMEOUT) as load:
            healthy = wait_for(lambda: recovery_seconds(load.outcomes(), started) == 0, 20)
            assert healthy, f"the node never served every client before the fault: {name}"
            fault()
            cleared = time.monotonic()
            clear()
            limit = BREAKER_TIMEOUT + RECOVERY_MARGIN + STREAK + 1
            wait_for(lambda: recovery_seconds(load.outcomes(), cleared) is not None, limit)
        duration = time.monotonic() - started
        calls = upstream_calls() - before
    outcomes = load.outcomes()
    reasons, problems = worker_problems(node)
    return Report(
        scenario=name,
        outcomes=outcomes,
        upstream_calls=calls,
        duration=duration,
        workers_seen=len(sampler.pids),
        min_workers=sampler.minimum,
        recovery=recovery_seconds(outcomes, cleared),
        allowed=allowed,
        recycles=reasons,
        log_problems=problems,
    )
