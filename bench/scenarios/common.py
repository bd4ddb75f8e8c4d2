"""What every scenario gets: the running stack, round and worker-class choices, helpers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import wrk
from bench.harness import PROMPT, Stack, api_headers, generate_path
from bench.report import Measure, Target


@dataclass
class Context:
    """A scenario's view of the command line and of the processes it may start."""

    stack: Stack
    quick: bool = False
    rounds: int | None = None
    worker_classes: tuple[str, ...] | None = None
    setups: dict[str, Any] = field(default_factory=dict)
    measures: list[Measure] = field(default_factory=list)

    def measure(
        self,
        scenario: str,
        worker_class: str,
        name: str,
        unit: str,
        target: Target | None = None,
    ) -> Measure:
        """A new measure, reported even if the scenario stops half-way."""
        created = Measure(scenario, worker_class, name, unit, target)
        self.measures.append(created)
        return created

    def rounds_or(self, default: int) -> int:
        """The rounds asked for on the command line, else the scenario's default."""
        if self.rounds is not None:
            return self.rounds
        return max(1, min(default, 2)) if self.quick else default

    def classes_or(self, default: tuple[str, ...]) -> tuple[str, ...]:
        """The worker classes asked for, else the scenario's default."""
        return self.worker_classes or default

    def seconds(self, normal: float, quick: float) -> float:
        """A duration: shorter with --quick."""
        return quick if self.quick else normal

    def record(self, scenario: str, **setup: Any) -> None:
        """Remember how a scenario was set up (written to results.json)."""
        self.setups.setdefault(scenario, {}).update(setup)


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def generate_request(direct: bool, model: str | None = None) -> wrk.Request:
    """A generateContent call, with the upstream key when sent to the simulator directly."""
    path = generate_path(model) if model else generate_path()
    return wrk.Request(path, "POST", PROMPT, api_headers(direct))


HEALTH = wrk.Request("/health")


@dataclass(frozen=True)
class Endpoint:
    """Something wrk is pointed at: a name, its base URL and whether it is the simulator."""

    name: str
    url: str
    direct: bool = False


def interleaved(
    targets: list[Endpoint],
    rounds: int,
    run: Callable[[Endpoint], wrk.WrkResult],
    each_round: Callable[[int, dict[str, wrk.WrkResult]], None],
) -> None:
    """Run every target once per round, rotating the order round by round, and hand each
    round's results to `each_round`."""
    for number in range(rounds):
        shift = number % len(targets)
        order = targets[shift:] + targets[:shift]
        results = {t.name: run(t) for t in order}
        each_round(number, results)
