"""Simulator mode: with no GEMINI_API_KEY, `make run` serves from the bundled simulator."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import MutableMapping

_LISTENING = re.compile(r"listening on (http://\S+)")
BANNER = """
######################################################################
##  L104 Node is in SIMULATOR MODE: GEMINI_API_KEY is not set.
##  Answers come from the bundled Gemini simulator at {url}
##  Set GEMINI_API_KEY to call Google's Gemini API instead.
######################################################################
"""


def wanted(environ: MutableMapping[str, str]) -> bool:
    """Simulator mode applies when no upstream key is configured (neither GEMINI_API_KEY
    nor GEMINI_API_KEYS)."""
    return not environ.get("GEMINI_API_KEY") and not environ.get("GEMINI_API_KEYS", "").strip()


def start(environ: MutableMapping[str, str]) -> subprocess.Popen[str]:
    """Start the simulator on a free loopback port and point `environ` at it."""
    key = "sim-" + secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--api-key",
            key,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = _LISTENING.search(line)
    if not match:
        process.kill()
        raise RuntimeError(f"the simulator did not start: {line.strip()!r}")
    url = match.group(1)
    environ.update(
        GEMINI_API_KEY=key,
        GEMINI_API_BASE=f"{url}/v1beta",
        L104_SIMULATOR_MODE="true",
    )
    sys.stderr.write(BANNER.format(url=url))
    sys.stderr.flush()
    return process


def stop(process: subprocess.Popen[str] | None) -> None:
    """Stop the simulator started by `start`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
