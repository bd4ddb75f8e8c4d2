"""What gunicorn's server hooks do; `gunicorn.conf.py` only calls into this module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from app import simulator_mode
from app.settings import Settings, SettingsError

STATE_FILES = ("state.db", "state.db-wal", "state.db-shm")


def load_settings() -> Settings:
    """Settings from the environment; a bad value ends start-up with one clear line."""
    try:
        return Settings.from_env(os.environ)
    except SettingsError as exc:
        sys.stderr.write(f"l104-node: {exc}\n")
        raise SystemExit(2) from None


def prepare_state_dir(environ: dict[str, str] | Any) -> tuple[Path, bool]:
    """The node's state directory, emptied of a previous run's state; True if made here."""
    configured = environ.get("L104_STATE_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for name in STATE_FILES:
            (path / name).unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="l104-node-"))
    environ["L104_STATE_DIR"] = str(path)
    return path, True


class Supervisor:
    """State the master keeps across hooks."""

    def __init__(self) -> None:
        self.simulator: subprocess.Popen[str] | None = None
        self.state_dir: Path | None = None
        self.made_state_dir = False

    def on_starting(self, server: Any) -> None:
        """Before the master forks: shared state directory, simulator mode if no key."""
        self.state_dir, self.made_state_dir = prepare_state_dir(os.environ)
        if simulator_mode.wanted(os.environ):
            self.simulator = simulator_mode.start(os.environ)

    def on_exit(self, server: Any) -> None:
        """The master is leaving: stop what it started, remove what it made."""
        simulator_mode.stop(self.simulator)
        self.simulator = None
        if self.made_state_dir and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
