"""The simulator's HTTP server: a threading, keep-alive server and its Python API."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from typing import Any

from app.simulator.handler import SimulatorHandler
from app.simulator.responses import DEFAULT_MODELS
from app.simulator.state import SimulatorState


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its open connections, to close them on shutdown."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SimulatorState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SimulatorHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection, then serve it on its own thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection so its thread ends promptly."""
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that vanish; print anything else."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handle_error(request, client_address)


class SimulatorServer:
    """A fake Gemini API server bound to `host:port` (port 0 picks a free port).

    It accepts `api_key` and each of `api_keys` (more can be added at run time); with no key
    at all it lets every call in. Raises ValueError for a key it cannot hold.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        verbose: bool = False,
        api_keys: Iterable[str] = (),
    ) -> None:
        served = [m.strip().removeprefix("models/") for m in (models or DEFAULT_MODELS)]
        keys = [key for key in (api_key, *api_keys) if key]
        self.state = SimulatorState(keys, [m for m in served if m], verbose)
        self._httpd = _HTTPServer((host, port), self.state)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self._serving = threading.Event()
        self._closed = False

    def serve_forever(self) -> None:
        """Serve until `shutdown()` is called (from another thread)."""
        if self._closed:
            raise RuntimeError("the simulator was shut down")
        self._serving.set()
        try:
            self._httpd.serve_forever(poll_interval=0.1)
        finally:
            self._serving.clear()

    def wait_serving(self, timeout: float | None = None) -> bool:
        """Wait until `serve_forever` runs."""
        return self._serving.wait(timeout)

    def shutdown(self) -> None:
        """Stop serving, end hangs and streams, close every connection and the socket."""
        if self._closed:
            return
        self._closed = True
        self.state.stopping.set()
        if self._serving.is_set():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()

    def __enter__(self) -> SimulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_in_thread(**kw: Any) -> SimulatorServer:
    """Start a SimulatorServer (same arguments) on a daemon thread; return once it serves."""
    server = SimulatorServer(**kw)
    thread = threading.Thread(
        target=server.serve_forever, name=f"l104-simulator-{server.port}", daemon=True
    )
    thread.start()
    server.wait_serving(10)
    return server
