"""Chaos: clients of four kinds (raw HTTP, raw SSE, the google-genai SDK, SDK streaming) keep
one node busy while the simulator misbehaves; then the fault is cleared and the node must
serve everyone again by itself.

Every scenario checks the same promises (see `Report.violations`): every call ended with a
success or a Gemini error of a sensible status, within the deadline plus a margin; no retry
storm upstream; full success within the breaker timeout plus a margin after the fault; never
zero live workers and no crashed worker. Faults on the first model alone must cost nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.chaos.conftest import NodeFactory
from tests.chaos.harness import DEADLINE, FAULT_SECONDS, FIRST, Report, run_scenario
from tests.conftest import UPSTREAM_KEY
from tests.support.chaos import ALLOWED_ERRORS, start_simulator_on
from tests.support.processes import Service, free_port
from tests.support.simulator_client import SimulatorControl

PAST_DEADLINE = DEADLINE + 2  # seconds: longer than any client request may take


@dataclass(frozen=True)
class Scenario:
    """Faults switched on in turn during the fault phase: (kind, model, parameters)."""

    name: str
    faults: list[tuple[str, str, dict[str, Any]]]
    # What a failed call may answer; empty: some model stays healthy, every call must succeed.
    allowed: frozenset[int] = frozenset()
    seconds: float = FAULT_SECONDS  # slow faults get longer, to reach clients more than once


UNAVAILABLE = frozenset({502, 503, 504})
SCENARIOS = [
    Scenario("429-storm-first", [("429", FIRST, {"retry_delay": "1.5s"})]),
    Scenario("429-storm-all", [("429", "*", {"retry_delay": "1.5s"})], frozenset({429})),
    Scenario("429-day-first", [("429_day", FIRST, {})]),
    Scenario("5xx-bursts-all", [(code, "*", {}) for code in ("500", "503", "504")], ALLOWED_ERRORS),
    Scenario("resets-all", [("reset", "*", {})], UNAVAILABLE),
    Scenario("hang-first", [("hang", FIRST, {"seconds": PAST_DEADLINE})], seconds=7),
    Scenario(
        "slow-body-all", [("slow_body", "*", {"ms": PAST_DEADLINE * 1000})], UNAVAILABLE, seconds=7
    ),
    Scenario("malformed-first", [("malformed", FIRST, {})]),
    Scenario("stream-cut-all", [("stream_cut", "*", {"after": 1})], UNAVAILABLE),
]


def _check(report: Report) -> None:
    violations = report.violations()
    assert not violations, "\n".join([f"{report.scenario}: the node broke promises", *violations])
    if report.allowed:
        assert report.successes < report.client_calls, "the fault never reached a client"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_fault_under_load(
    scenario: Scenario,
    simulator: SimulatorControl,
    chaos_node: NodeFactory,
    chaos_results: list[Report],
) -> None:
    """Hold the scenario's faults for a few seconds under load, clear them, recover."""
    node = chaos_node(simulator.url, scenario.name)

    def fault() -> None:
        for kind, model, params in scenario.faults:
            simulator.fault(kind, model=model, **params)
            time.sleep(scenario.seconds / len(scenario.faults))

    def clear() -> None:
        requests.delete(f"{simulator.url}/_sim/faults", timeout=5).raise_for_status()

    report = run_scenario(
        scenario.name, node, simulator.calls, fault, clear, allowed=scenario.allowed
    )
    chaos_results.append(report)
    assert simulator.stats()["faults_served"] > 0, "the simulator never served the fault"
    _check(report)


def test_simulator_killed_and_restarted(
    logs_dir: Path, chaos_node: NodeFactory, chaos_results: list[Report]
) -> None:
    """Upstream dies (SIGKILL) under load and comes back on the same port."""
    port = free_port()
    simulators: list[Service] = []
    earlier_calls = 0  # calls received by the simulators killed so far

    def start() -> None:
        log = logs_dir / f"chaos-simulator-{len(simulators) + 1}.log"
        simulators.append(start_simulator_on(port, log, UPSTREAM_KEY))

    def calls() -> int:
        current = simulators[-1]
        if current.process.poll() is not None:
            return earlier_calls
        return earlier_calls + SimulatorControl(current.url, UPSTREAM_KEY).calls()

    def kill() -> None:
        nonlocal earlier_calls
        earlier_calls = calls()  # the few calls between this and the kill go uncounted
        simulators[-1].process.kill()
        simulators[-1].process.wait()
        simulators[-1].stop()
        time.sleep(FAULT_SECONDS)

    start()
    try:
        node = chaos_node(simulators[0].url, "simulator-restart")
        report = run_scenario("simulator-restart", node, calls, kill, start, UNAVAILABLE)
    finally:
        for simulator in reversed(simulators):  # the live one frees the port first
            simulator.stop()
    chaos_results.append(report)
    assert len(simulators) == 2 and simulators[1].port == port
    _check(report)
