"""The arena cap: applied by glibc's mallopt, and left to the operator when they set it."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT

CALL = "from app.workers.malloc_arenas import limit_malloc_arenas; print(limit_malloc_arenas())"


def _run(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CALL], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_applied_on_glibc() -> None:
    assert _run({"PATH": "/usr/bin:/bin"}) == "True"


def test_the_operators_setting_wins() -> None:
    assert _run({"PATH": "/usr/bin:/bin", "MALLOC_ARENA_MAX": "4"}) == "False"
