"""Chaos fixtures: a fresh small-threshold node per scenario, and the table of results printed
at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import CHAOS_SETTINGS, Report
from tests.conftest import node_env
from tests.support.processes import Service, start_node, wait_until

RESULTS = pytest.StashKey[list[Report]]()
COLUMNS = (
    ("scenario", 18),
    ("calls", 6),
    ("ok", 6),
    ("errors by status", 34),
    ("max s", 6),
    ("upstream", 8),
    ("bound", 6),
    ("recovery s", 10),
    ("min workers", 11),
    ("recycles", 8),
)
NodeFactory = Callable[[str, str], Service]


@pytest.fixture
def chaos_node(logs_dir: Path) -> Iterator[NodeFactory]:
    """Starts a chaos node (2 workers, default class) before an upstream URL; stops it after."""
    started: list[Service] = []

    def start(simulator_url: str, name: str) -> Service:
        env = node_env(simulator_url, **CHAOS_SETTINGS)
        service = start_node(logs_dir / f"chaos-{name}.log", env)
        started.append(service)
        wait_until(lambda: service.log_text().count('"worker_ready"') >= 2, 15, "two workers")
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def chaos_results(request: pytest.FixtureRequest) -> list[Report]:
    """Where each scenario leaves its report for the summary table."""
    return request.config.stash.setdefault(RESULTS, [])


def _row(report: Report) -> list[str]:
    errors = " ".join(f"{label}:{n}" for label, n in sorted(report.errors.items()))
    recovery = "never" if report.recovery is None else f"{report.recovery:.2f}"
    return [
        report.scenario,
        str(report.client_calls),
        str(report.successes),
        errors or "-",
        f"{report.max_latency:.2f}",
        str(report.upstream_calls),
        str(report.bound),
        recovery,
        str(report.min_workers),
        str(len(report.recycles)),
    ]


def format_table(reports: list[Report]) -> list[str]:
    """The results, one line per scenario, in fixed-width columns."""

    def line(cells: list[str]) -> str:
        return " | ".join(
            cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True)
        )

    lines = [line([name for name, _ in COLUMNS])]
    lines.append("-" * len(lines[0]))
    return lines + [line(_row(report)) for report in reports]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the chaos table after the run."""
    reports = terminalreporter.config.stash.get(RESULTS, [])
    if not reports:
        return
    terminalreporter.section("chaos results")
    for text in format_table(reports):
        terminalreporter.write_line(text)
    problems = [(r.scenario, v) for r in reports for v in r.violations()]
    for scenario, violation in problems:
        terminalreporter.write_line(f"{scenario}: {violation}")
