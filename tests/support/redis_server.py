"""A real redis-server on a free loopback port, for the tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.support.processes import port_is_free, wait_until


class RedisServer:
    """redis-server without persistence, started and stopped by the tests."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start (or restart) on the same port."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: `make test` installs it"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        """True when the server answers."""
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Kill the server and wait until its port is free."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        wait_until(lambda: port_is_free(self.port), 10, f"port {self.port} to be free")
