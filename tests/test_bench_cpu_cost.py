"""bench cpu-cost: callgrind counts one gunicorn worker, and more calls cost more instructions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.scenarios.instructions import callgrind_total, count_worker
from bench.scenarios.latency import LOCAL


def test_callgrind_total_reads_the_summary_line(tmp_path: Path) -> None:
    out = tmp_path / "cg.123"
    out.write_text("# callgrind format\nversion: 1\nevents: Ir\nsummary: 123456789\nfn=x\n")
    assert callgrind_total(out) == 123456789
    (tmp_path / "cg.empty").write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no summary"):
        callgrind_total(tmp_path / "cg.empty")


def test_count_worker_counts_calls_in_the_worker(tmp_path: Path) -> None:
    nowhere = "http://127.0.0.1:9"  # flask alone calls no upstream
    with ThreadPoolExecutor(2) as pool:
        few, many = pool.map(lambda calls: count_worker(LOCAL, nowhere, calls, tmp_path), (2, 42))
    per_call = (many - few) / 40
    # gunicorn + Flask answering a canned reply: about a million instructions a call here;
    # far more than nothing, far less than a proxied call (~3 M).
    assert 2e5 < per_call < 3e6, (few, many)
