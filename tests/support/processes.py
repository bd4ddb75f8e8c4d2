"""Start and stop real processes (gunicorn, the simulator) on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when nothing accepts connections on the port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until(predicate: object, timeout: float, what: str) -> None:
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_ok(url: str) -> bool:
    """True when GET `url` answers 200."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def terminate(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send `sig`, wait up to `timeout` seconds for the exit, then kill."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Service:
    """A running process with its log file."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path
    log_file: BinaryIO
    env: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        """TERM, wait for exit, then wait until the port is free again."""
        terminate(self.process, signal.SIGTERM, timeout)
        self.log_file.close()
        wait_until(lambda: port_is_free(self.port), 30, f"port {self.port} to be free")


def start_process(
    args: list[str],
    env: Mapping[str, str],
    log_path: Path,
    port: int,
    ready_url: str,
    timeout: float = 30,
) -> Service:
    """Start `args` with `env` (on top of os.environ), logging to `log_path`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    log = log_path.open("wb")
    process = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    service = Service(process, f"http://127.0.0.1:{port}", port, log_path, log, dict(env))
    try:
        wait_until(lambda: process.poll() is not None or http_ok(ready_url), timeout, ready_url)
    except AssertionError:
        service.stop()
        raise
    if process.poll() is not None:
        log.close()
        raise AssertionError(f"{args[0]} exited {process.returncode}:\n{service.log_text()}")
    return service


def start_simulator(log_path: Path, api_key: str) -> Service:
    """The bundled Gemini simulator as its own process."""
    port = free_port()
    return start_process(
        [sys.executable, "-m", "app.simulator", "--port", str(port), "--api-key", api_key],
        {},
        log_path,
        port,
        f"http://127.0.0.1:{port}/_sim/health",
    )


def start_node(log_path: Path, env: Mapping[str, str], timeout: float = 30) -> Service:
    """Real gunicorn with the project's gunicorn.conf.py."""
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    return start_process(
        [gunicorn, "-c", "gunicorn.conf.py"],
        {"PORT": str(port), "HOST": "127.0.0.1", **env},
        log_path,
        port,
        f"http://127.0.0.1:{port}/health",
        timeout,
    )


def child_pids(pid: int) -> set[int]:
    """The direct children of `pid` (gunicorn's workers, for its master)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return {int(p) for p in children.read().split()}
    except FileNotFoundError:
        return set()
