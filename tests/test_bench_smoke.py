"""`python -m bench` end to end: one tiny scenario, then the shape of results.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT


def test_bench_overhead_quick_writes_results(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench", "overhead", "--quick", "--rounds", "1"]
    command += ["--worker-class", "gthread", "--output", str(output)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "node p50 - direct p50" in done.stdout  # the table

    results = json.loads(output.read_text())
    assert results["machine"]["nproc"] >= 1
    assert results["machine"]["cpu_model"]
    assert results["machine"]["python"] == sys.version.split()[0]
    assert results["date"] and "overhead" in results["command"]
    assert results["scenarios"]["overhead"]["rounds"] == 1
    rows = {(r["worker_class"], r["measure"]): r for r in results["results"]}
    assert set(rows) == {
        ("gthread", "node p50 - direct p50"),
        ("nginx", "nginx p50 - direct p50"),
        ("naive proxy", "naive p50 - direct p50"),
        ("bare proxy", "bare p50 - direct p50 (floor)"),
        ("flask alone", "flask alone p50 - direct p50 (no upstream call)"),
        ("gthread", "node p50 - naive proxy p50"),
    }
    node = rows[("gthread", "node p50 - direct p50")]
    assert node["scenario"] == "overhead"
    assert node["unit"] == "ms"
    assert len(node["rounds"]) == 1
    assert node["min"] == node["median"] == node["max"] == node["rounds"][0]
    assert node["target"]["op"] == "<=" and node["target"]["value"] == 0.8
    assert isinstance(node["met"], bool)
    assert node["met"] == (node["median"] <= 0.8)
    assert node["detail"]["failed"] == [0]
    assert all(p > 0 for p in node["detail"]["p50_ms"] + node["detail"]["direct_p50_ms"])
    local = rows[("flask alone", "flask alone p50 - direct p50 (no upstream call)")]
    assert local["detail"]["failed"] == [0]  # it answers itself, every call a 200
    reference = rows[("nginx", "nginx p50 - direct p50")]
    assert reference["target"] is None and reference["met"] is None
