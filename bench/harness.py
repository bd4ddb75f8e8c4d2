"""Start and stop the simulator, nodes and nginx on free loopback ports; stop all at the end."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from app.settings import Settings
from tests.support.processes import (
    ROOT,
    Service,
    child_pids,
    free_port,
    port_is_free,
    start_node,
    start_process,
    wait_until,
)
from tests.support.redis_server import RedisServer
from tests.support.simulator_client import SimulatorControl

SIM_KEY = "bench-upstream-key"
ADMIN_TOKEN = "bench-admin-token"
MODELS = ("gemini-3.8-flash", "gemini-3.5-flash", "gemini-2.5-flash-lite")
PROMPT = '{"contents":[{"role":"user","parts":[{"text":"Benchmark me, please."}]}]}'
WORKER_CLASSES = ("sync", "gthread", "gevent")
DEFAULT_CLASS = Settings().gunicorn_worker_class  # what a node runs when nothing is set
# The reference proxies' gthread threads (the node runs its own defaults).
THREADS = 256
_READY = re.compile(r'"event": "worker_ready".*?"pid": (\d+)')
NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.template")


def node_env(sim_url: str, worker_class: str | None, **extra: str) -> dict[str, str]:
    """The environment of a node in front of the simulator: the shipped defaults but for the
    worker class (None: the default) and `extra`."""
    env = {
        "GEMINI_API_KEY": SIM_KEY,
        "GEMINI_API_BASE": f"{sim_url}/v1beta",
        "GEMINI_MODELS": ",".join(MODELS),
        **extra,
    }
    if worker_class is not None:
        env.setdefault("GUNICORN_WORKER_CLASS", worker_class)
    return env


class Nginx:
    """nginx in the foreground from bench/nginx.conf.template, in a private prefix."""

    def __init__(self, upstream_port: int) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix="l104-bench-nginx-"))
        self.prefix.chmod(0o755)  # nginx's workers run as nobody
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = NGINX_TEMPLATE.read_text().format(
            prefix=self.prefix, port=self.port, upstream=f"127.0.0.1:{upstream_port}"
        )
        (self.prefix / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        args = [nginx, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")]
        args += ["-e", str(self.prefix / "error.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(
            lambda: self.process.poll() is not None or not port_is_free(self.port), 15, "nginx"
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited {self.process.returncode}: {self._stderr()}")

    def _stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        """Fast stop (SIGTERM), then remove the prefix."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)


def reference_command(
    port: int, worker_class: str, workers: int, threads: int = THREADS
) -> list[str]:
    """gunicorn serving bench/naive_proxy.py on `port` (not with the node's gunicorn.conf.py)."""
    args = [str(Path(sys.executable).with_name("gunicorn")), "bench.naive_proxy:app"]
    args += ["--config", "/dev/null", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    args += ["--threads", str(threads if worker_class == "gthread" else 1)]
    return [*args, "--worker-class", worker_class, "--no-control-socket"]


class Stack:
    """Every process a scenario starts; `close()` stops them all, newest first."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._stops: list[Any] = []
        self._count = 0

    def _log(self, name: str) -> Path:
        self._count += 1
        return self.logs / f"{self._count:02d}-{name}.log"

    def simulator(self, port: int | None = None, keys: Sequence[str] = ()) -> Service:
        """The simulator as its own process (on `port`, or a free one), reset; it takes
        SIM_KEY and `keys`."""
        port = port or free_port()
        args = [sys.executable, "-m", "app.simulator", "--port", str(port), "--api-key", SIM_KEY]
        if keys:
            args += ["--api-keys", ",".join(keys)]
        ready = f"http://127.0.0.1:{port}/_sim/health"
        service = start_process(args, {}, self._log("simulator"), port, ready, timeout=30)
        self._stops.append(service.stop)
        return service

    def node(self, sim: Service, worker_class: str | None, **extra: str) -> Service:
        """A node (real gunicorn) in front of `sim`, every worker ready; worker class None
        and no `extra`: exactly as shipped."""
        env = node_env(sim.url, worker_class, **extra)
        service = start_node(self._log(f"node-{worker_class or 'default'}"), env, timeout=60)
        self._stops.append(service.stop)
        workers = int(env.get("WEB_CONCURRENCY", Settings().web_concurrency))
        wait_until(lambda: len(child_pids(service.process.pid)) >= workers, 30, "workers")
        # Every worker has loaded the app (and set its gauges), not only been forked.
        wait_until(lambda: len(ready_workers(service)) >= workers, 30, "workers ready")
        warm(service.url, {}, "/health", workers * 4)
        return service

    def naive_proxy(
        self, sim: Service, worker_class: str = "gthread", kind: str = "naive"
    ) -> Service:
        """A reference proxy (bench/naive_proxy.py: `naive`, `bare` or `local`) in front of
        `sim`, under gunicorn with the node's worker settings."""
        port = free_port()
        args = reference_command(port, worker_class, workers=2)
        env = {"UPSTREAM": f"{sim.url}/v1beta", "UPSTREAM_KEY": SIM_KEY, "PROXY_KIND": kind}
        ready = f"http://127.0.0.1:{port}/health"
        service = start_process(args, env, self._log(f"{kind}-proxy"), port, ready, timeout=60)
        self._stops.append(service.stop)
        warm(service.url, {}, "/health", 8)
        return service

    def redis(self) -> RedisServer:
        """A redis-server on a free loopback port (no persistence)."""
        server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="l104-bench-redis-")))
        self._stops.append(server.stop)
        return server.start()

    def nginx(self, sim: Service) -> Nginx:
        """nginx as a plain reverse proxy to `sim`."""
        proxy = Nginx(sim.port)
        self._stops.append(proxy.stop)
        return proxy

    def stop(self, service: Service | Nginx) -> None:
        """Stop one process early (it is not stopped again at the end)."""
        for stop in list(self._stops):
            if getattr(stop, "__self__", None) is service:
                self._stops.remove(stop)
        service.stop()

    def close(self) -> None:
        """Stop everything still running, newest first; never raise."""
        while self._stops:
            stop = self._stops.pop()
            with contextlib.suppress(Exception):
                stop()


@contextlib.contextmanager
def stack(logs: Path) -> Iterator[Stack]:
    """A Stack that is closed however the block ends (errors, Ctrl-C, SIGTERM)."""
    running = Stack(logs)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield running
    finally:
        running.close()
        signal.signal(signal.SIGTERM, previous)


def control(sim: Service) -> SimulatorControl:
    """The simulator's control API."""
    return SimulatorControl(sim.url, SIM_KEY)


def api_headers(direct: bool) -> tuple[tuple[str, str], ...]:
    """Headers of a generate call: with the upstream key when calling the simulator."""
    headers = (("Content-Type", "application/json"),)
    return (*headers, ("x-goog-api-key", SIM_KEY)) if direct else headers


def generate_path(model: str = MODELS[0], stream: bool = False) -> str:
    """The path of a generate (or SSE stream) call."""
    if stream:
        return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    return f"/v1beta/models/{model}:generateContent"


def warm(url: str, headers: Mapping[str, str], path: str, calls: int) -> None:
    """A few sequential calls, so first-call costs stay out of the figures."""
    with requests.Session() as session:
        for _ in range(calls):
            if path == "/health":
                session.get(url + path, timeout=10)
            else:
                session.post(url + path, data=PROMPT, headers=dict(headers), timeout=10)


def worker_pids(node: Service) -> set[int]:
    """The node's gunicorn workers (children of the master)."""
    return child_pids(node.process.pid)


_seen_ready: dict[Path, tuple[int, set[int]]] = {}


def ready_workers(node: Service) -> set[int]:
    """Workers that logged `worker_ready` (they serve and have bound their healer); reads
    only what the log gained since the last call."""
    offset, ready = _seen_ready.get(node.log_path, (0, set()))
    with node.log_path.open("rb") as log:
        log.seek(offset)
        text = log.read()
    complete = text.rfind(b"\n") + 1  # leave a half-written line for next time
    found = _READY.findall(text[:complete].decode(errors="replace"))
    ready = ready | {int(pid) for pid in found}
    _seen_ready[node.log_path] = (offset + complete, ready)
    return ready


def event_counts(node: Service, since: int, names: tuple[str, ...]) -> dict[str, int]:
    """How many log lines of each event the node wrote after byte `since` of its log."""
    with node.log_path.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return {name: text.count(f'"event": "{name}"') for name in names}


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def metric(node: Service, name: str) -> float | None:
    """The value of an unlabelled metric from the node's /metrics."""
    for line in requests.get(f"{node.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until true; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


__all__ = ["ROOT", "Service", "Stack", "stack"]
