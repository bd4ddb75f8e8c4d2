"""Small Python clients: time to first byte of SSE streams, and a probing loop."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from bench.harness import PROMPT, api_headers, generate_path


class StreamClient:
    """One keep-alive connection that times SSE streams to their first body byte."""

    def __init__(self, url: str, direct: bool) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self.headers = dict(api_headers(direct))
        self.path = generate_path(stream=True)
        self.body = PROMPT.encode()

    def ttfb(self) -> tuple[float, int]:
        """Seconds from sending the request to the first body bytes; data events received."""
        start = time.perf_counter()
        self.conn.request("POST", self.path, body=self.body, headers=self.headers)
        response = self.conn.getresponse()
        first = response.read1(65536)
        elapsed = time.perf_counter() - start
        rest = response.read()
        if response.status != 200:
            raise RuntimeError(f"stream answered {response.status}: {(first + rest)[:200]!r}")
        return elapsed, (first + rest).count(b"data:")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


@dataclass
class Prober:
    """`clients` threads calling generateContent on `url` in a loop, recording each outcome
    as (start, end, status or exception name), until stopped."""

    url: str
    clients: int = 4
    pause: float = 0.02
    outcomes: list[tuple[float, float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)
        ]

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    response = session.post(
                        self.url + generate_path(),
                        data=PROMPT,
                        headers=dict(api_headers(False)),
                        timeout=30,
                    )
                    outcome = str(response.status_code)
                except requests.RequestException as error:
                    outcome = type(error).__name__
                with self._lock:
                    self.outcomes.append((start, time.monotonic(), outcome))
                self._stop.wait(self.pause)

    def start(self) -> Prober:
        """Start the client threads."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop and join the client threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def first_success_after(self, moment: float) -> float | None:
        """The end time of the first 200 that ended after `moment`."""
        with self._lock:
            ends = [end for _, end, outcome in self.outcomes if outcome == "200" and end > moment]
        return min(ends) if ends else None
