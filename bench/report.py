"""Measures (one figure over rounds, with its target), the printed table and results.json."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_OPS = {
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t,
    "==": lambda v, t: v == t,
}


@dataclass(frozen=True)
class Target:
    """`value op limit`, judged on one statistic of the rounds (median unless stated)."""

    op: str
    limit: float
    judged_on: str = "median"

    def text(self, unit: str) -> str:
        """E.g. '<= 0.8 ms'."""
        return f"{self.op} {self.limit:g}{' ' + unit if unit else ''}"


@dataclass
class Measure:
    """One figure of one scenario, measured once per round."""

    scenario: str
    worker_class: str
    name: str
    unit: str
    target: Target | None = None
    rounds: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def add(self, value: float, **detail: Any) -> None:
        """Record one round's value, with what it was computed from."""
        self.rounds.append(value)
        for key, item in detail.items():
            self.detail.setdefault(key, []).append(item)

    def stats(self) -> dict[str, float]:
        """min, median and max over the rounds."""
        if not self.rounds:
            return {}
        return {
            "min": min(self.rounds),
            "median": statistics.median(self.rounds),
            "max": max(self.rounds),
        }

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None: no target, or no rounds)."""
        stats = self.stats()
        if self.target is None or not stats:
            return None
        return bool(_OPS[self.target.op](stats[self.target.judged_on], self.target.limit))

    def to_json(self) -> dict[str, Any]:
        """The results.json form."""
        target = None
        if self.target:
            target = {
                "op": self.target.op,
                "value": self.target.limit,
                "judged_on": self.target.judged_on,
                "text": self.target.text(self.unit),
            }
        return {
            "scenario": self.scenario,
            "worker_class": self.worker_class,
            "measure": self.name,
            "unit": self.unit,
            "rounds": self.rounds,
            **self.stats(),
            "target": target,
            "met": self.met,
            "detail": self.detail,
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


def table(measures: list[Measure]) -> str:
    """A plain-text table, one line per measure."""
    head = ("scenario", "class", "measure", "min", "median", "max", "target", "met")
    rows: list[tuple[str, ...]] = [head]
    for m in measures:
        s = m.stats()
        met = {None: "-", True: "yes", False: "NO"}[m.met]
        unit = f" ({m.unit})" if m.unit else ""
        target = f"{m.target.text(m.unit)} [{m.target.judged_on}]" if m.target else "report"
        rows.append(
            (
                m.scenario,
                m.worker_class,
                m.name + unit,
                *(_fmt(s.get(k)) for k in ("min", "median", "max")),
                target,
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def write(
    path: Path, measures: list[Measure], info: dict[str, Any], scenarios: dict[str, Any]
) -> None:
    """Write results.json: machine info, command line, date, scenario setups and measures."""
    doc = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench", *sys.argv[1:]]),
        "machine": info,
        "scenarios": scenarios,
        "results": [m.to_json() for m in measures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
