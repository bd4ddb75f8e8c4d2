"""What gunicorn's server hooks do; `gunicorn.conf.py` only calls into this module.

Master hooks prepare the node's shared directories (state, metrics) and log every worker that
leaves with the reason it gave. Worker hooks bind the worker to its recycler, start the
watchdog, and count the worker's failures so that a sick worker is recycled gracefully.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from app.clock import SYSTEM_CLOCK, Clock
from app.settings import Settings, SettingsError
from app.workers import registry, simulator_mode

STATE_FILES = ("state.db", "state.db-wal", "state.db-shm")
NODE_FILE = "node.json"  # the master's pid and start time
log = logging.getLogger("l104.supervision")


def load_settings() -> Settings:
    """Settings from the environment; a bad value ends start-up with one clear line."""
    try:
        return Settings.from_env(os.environ)
    except SettingsError as exc:
        sys.stderr.write(f"l104-node: {exc}\n")
        raise SystemExit(2) from None


def _reexec(environ: MutableMapping[str, str]) -> bool:
    """True in a master started by USR2 (its workers' files are live: never wipe them)."""
    return "GUNICORN_FD" in environ


def prepare_dir(
    environ: MutableMapping[str, str], var: str, prefix: str, wipe: tuple[str, ...] | None
) -> tuple[Path, bool]:
    """The directory named by `var` (made, and emptied of `wipe` files or all files), or a
    new temporary one exported as `var`; True if it was made here."""
    configured = environ.get(var)
    if not configured:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        environ[var] = str(path)
        return path, True
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    if not _reexec(environ):
        for entry in path.iterdir():
            if wipe is None or entry.name in wipe:
                entry.unlink(missing_ok=True)
    return path, False


class WorkerFailures:
    """Node-side failures of one worker within a sliding window (fail-fast refusals of open
    breakers and cooldowns are the node protecting itself, and do not count)."""

    def __init__(self, threshold: int, window: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.threshold = threshold
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque()

    def record(self, status: int | None, fail_fast: bool) -> bool:
        """Count one response; True when the worker should be recycled (count restarts)."""
        if not (status is None or status >= 500 and not fail_fast):
            return False
        now = self._clock.monotonic()
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) < self.threshold:
            return False
        self._times.clear()
        return True


def is_gevent_worker(worker: Any) -> bool:
    """True for gunicorn's gevent workers (their greenlets share one thread)."""
    return any(base.__module__ == "gunicorn.workers.ggevent" for base in type(worker).__mro__)


def _status(resp: Any) -> int | None:
    code = getattr(resp, "status_code", None)
    if isinstance(code, int):
        return code
    status = str(getattr(resp, "status", "") or "")
    return int(status[:3]) if status[:3].isdigit() else None


class Supervisor:
    """State kept across hooks, in the master and in each worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.simulator: subprocess.Popen[str] | None = None
        self.made: list[Path] = []
        self.failures = WorkerFailures(settings.worker_max_failures, settings.worker_failure_window)
        self.flask_app: Any = None
        self._store: Any = None
        self._yield: Any = None  # gevent.sleep under the gevent worker

    # master
    def on_starting(self, server: Any) -> None:
        """Before the master forks: JSON logs, descriptor limits, shared directories,
        simulator mode."""
        from app.observability import logs
        from app.workers import fd_limits

        logs.configure(self.settings.log_level, self.settings.secrets)
        fd_limits.ensure(self.settings)
        state, made_state = prepare_dir(os.environ, "L104_STATE_DIR", "l104-state-", STATE_FILES)
        metrics, made_metrics = prepare_dir(
            os.environ, "PROMETHEUS_MULTIPROC_DIR", "l104-metrics-", None
        )
        self.made = [p for p, made in ((state, made_state), (metrics, made_metrics)) if made]
        self._create_state(state)
        # When the node started (its uptime on /self/status), by the master that runs it.
        (Path(state) / NODE_FILE).write_text(
            json.dumps({"master_pid": os.getpid(), "started": time.time()})
        )
        if simulator_mode.wanted(os.environ):
            self.simulator = simulator_mode.start(os.environ)

    def _create_state(self, state_dir: Path) -> None:
        """Create the node's database (in WAL mode) before any worker opens it."""
        from app.state.sqlite_limits import SqliteLimitStorage

        self._state_store()
        SqliteLimitStorage(f"l104sqlite://{state_dir / 'state.db'}")

    def child_exit(self, server: Any, worker: Any) -> None:
        """A worker left: drop its live gauges, log and count why it left."""
        from prometheus_client import multiprocess

        from app.observability import metrics
        from app.observability.logs import log_event

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
        state_dir = os.environ.get("L104_STATE_DIR")
        if state_dir:
            registry.remove_worker(registry.workers_dir(Path(state_dir)), worker.pid)
        reason = self._state_store().recycle_reason(worker.pid) or "exited"
        log_event(
            log,
            "worker_recycled",
            logging.WARNING,
            pid=worker.pid,
            reason=reason,
            age_requests=getattr(worker, "nr", None),
        )
        metrics.WORKER_RECYCLES.labels(reason).inc()

    def on_exit(self, server: Any) -> None:
        """The master is leaving: stop what it started, remove what it made."""
        simulator_mode.stop(self.simulator)
        self.simulator = None
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)

    def _state_store(self) -> Any:
        if self._store is None:
            from app.state.sqlite_store import SqliteStateStore

            self._store = SqliteStateStore(Path(os.environ["L104_STATE_DIR"]) / "state.db")
        return self._store

    # worker
    def post_worker_init(self, worker: Any) -> None:
        """The app is loaded: bind the recycler, start the heal watcher and the watchdog."""
        self.flask_app = worker.wsgi
        if is_gevent_worker(worker):
            import gevent

            self._yield = gevent.sleep
        extensions = self.flask_app.extensions
        extensions["l104.recycler"].bind(worker)
        extensions["l104.heal_watcher"].start()
        if self.settings.enable_watchdog:
            extensions["l104.watchdog"].thread.start()
        from app.observability.logs import log_event

        log_event(log, "worker_ready", pid=os.getpid(), worker_class=type(worker).__name__)

    def post_request(self, worker: Any, req: Any, environ: dict[str, Any], resp: Any) -> None:
        """Count this worker's failures; past WORKER_MAX_FAILURES in the window, recycle it.
        Under gevent, let the other connections' greenlets run before this one goes on."""
        if self.failures.record(_status(resp), bool(environ.get("l104.fail_fast"))):
            if self.flask_app is not None:
                self.flask_app.extensions["l104.recycler"].request("failures")
        if self._yield is not None:
            # gunicorn's gevent worker reads a keep-alive connection's next request without
            # yielding when it has already arrived: under load a few busy connections then
            # starve the others for up to a second (/health, 64 connections: p99 1.14 s,
            # 107 ms with this yield). Every other worker class is preemptive already.
            self._yield(0)

    def worker_abort(self, worker: Any) -> None:
        """gunicorn's timeout killed a hung worker (SIGABRT): say so in the log."""
        from app.observability.logs import log_event

        log_event(
            log,
            "worker_abort",
            logging.ERROR,
            pid=os.getpid(),
            timeout=self.settings.gunicorn_timeout,
        )
        if self.flask_app is not None:
            self.flask_app.extensions["l104.state"].note_recycle_reason(os.getpid(), "timeout")
