"""The node behind REAL nginx running deploy/nginx/l104-node.conf (rendered onto loopback).

The node trusts X-Forwarded-For from loopback (TRUSTED_PROXIES=127.0.0.1), as behind a local
nginx on TCP. Clients also connect from 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on
Linux) to look like different hosts to nginx.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import node_env, running_node
from tests.support import nginx as nginx_support
from tests.support.nginx import Nginx
from tests.support.processes import Service, start_node, wait_until
from tests.support.simulator_client import SimulatorControl

MODEL = "gemini-3.8-flash"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Hello through nginx"}]}]}
ADMIN = "nginx-admin-s3cr3t-0123456789"
LIMIT = 3
# gunicorn: TERM to a worker is a graceful exit (finish in-flight requests, then leave).
RECYCLE_SIGNAL = signal.SIGTERM


@pytest.fixture(scope="module")
def proxied_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node (2 workers of the default class) that trusts X-Forwarded-For from loopback."""
    with running_node(
        simulator_service, logs_dir, "nginx-node", TRUSTED_PROXIES="127.0.0.1", ADMIN_TOKEN=ADMIN
    ) as service:
        yield service


@pytest.fixture(scope="module")
def nginx(proxied_node: Service, logs_dir: Path) -> Iterator[Nginx]:
    """Real nginx with the production site config in front of `proxied_node`."""
    server = nginx_support.start_in_front_of(logs_dir / "nginx", proxied_node.url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited_nginx(simulator_service: Service, logs_dir: Path) -> Iterator[Nginx]:
    """nginx in front of a node that allows LIMIT requests a minute per client."""
    env = node_env(simulator_service.url, TRUSTED_PROXIES="127.0.0.1", RATE_LIMIT=f"{LIMIT}/minute")
    node = start_node(logs_dir / "nginx-limited-node.log", env)
    try:
        server = nginx_support.start_in_front_of(logs_dir / "nginx-limited", node.url)
    except BaseException:
        node.stop()
        raise
    yield server
    server.stop()
    node.stop()


def _request(
    server: Nginx,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One request to nginx on a new connection from loopback address `source`; the path is
    sent exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=10, source_address=(source, 0)
    )
    try:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _worker_pids(master: int) -> set[int]:
    """The gunicorn master's children (its workers)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{master}/task").iterdir():
        try:
            pids.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return pids


def _replaced(master: int, worker: int) -> bool:
    """True once `worker` is gone and the master runs its two workers again."""
    pids = _worker_pids(master)
    return worker not in pids and len(pids) == 2


# --- plain requests --------------------------------------------------------------------------


def test_generate_content_through_nginx_keeps_the_clients_request_id(
    nginx: Nginx, simulator: SimulatorControl
) -> None:
    response = requests.post(
        f"{nginx.url}{GENERATE}", json=PROMPT, headers={"X-Request-ID": "client-id-42"}, timeout=10
    )
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"].endswith(
        "Hello through nginx"
    )
    assert response.headers["X-Request-ID"] == "client-id-42"
    assert response.headers["X-L104-Model"] == MODEL
    assert simulator.calls() == 1


def test_without_a_request_id_the_node_gets_nginxs_own(nginx: Nginx) -> None:
    response = requests.post(f"{nginx.url}{GENERATE}", json=PROMPT, timeout=10)
    assert response.status_code == 200
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    # nginx logs its $request_id: the node answered with that very id.
    wait_until(lambda: request_id in nginx.access_log(), 5, "nginx's access log line")
    (line,) = [line for line in nginx.access_log().splitlines() if request_id in line]
    assert line.startswith(f"{request_id} 200 upstream=200 ")


def test_body_over_20_mib_is_refused_by_nginx(nginx: Nginx) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    try:
        conn.putrequest("POST", GENERATE)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(20 * 2**20 + 1))
        conn.endheaders()
        # nginx answers from the headers alone, before any of the body is sent.
        response = conn.getresponse()
        assert response.status == 413
        assert "X-Request-ID" not in response.headers  # nginx's answer, not the node's
        response.read()
    finally:
        conn.close()


# --- streaming -------------------------------------------------------------------------------


def _stream_arrivals(url: str, body: object) -> tuple[list[float], list[bytes]]:
    """When each SSE `data:` line of the answer arrived (seconds since the request)."""
    started = time.monotonic()
    arrivals: list[float] = []
    lines: list[bytes] = []
    with requests.post(url, json=body, stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines(chunk_size=1):
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic() - started)
                lines.append(line[6:])
    return arrivals, lines


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_sse_passes_through_nginx_chunk_by_chunk(
    nginx: Nginx, simulator: SimulatorControl, version: str
) -> None:
    simulator.configure(stream_chunks=5, chunk_delay_ms=200)
    url = f"{nginx.url}/{version}/models/{MODEL}:streamGenerateContent?alt=sse"
    arrivals, lines = _stream_arrivals(url, PROMPT)
    events = [json.loads(line) for line in lines]
    assert len(events) == 5
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    # Unbuffered: the first chunk came long before the last one was produced upstream.
    assert arrivals[-1] - arrivals[0] >= 0.6


@pytest.mark.parametrize("path", ["/api/v6/stream", "/api/stream"])
def test_legacy_stream_passes_through_nginx_chunk_by_chunk(
    nginx: Nginx, simulator: SimulatorControl, path: str
) -> None:
    simulator.configure(stream_chunks=5, chunk_delay_ms=200)
    arrivals, lines = _stream_arrivals(f"{nginx.url}{path}", {"signal": "What is L104?"})
    assert len(lines) == 5
    assert b"".join(lines).endswith(b"What is L104?")
    assert arrivals[-1] - arrivals[0] >= 0.6


# --- who may reach what ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/self/heal", "/%73elf/heal", "//self/heal"])
def test_metrics_and_admin_are_refused_to_other_hosts(nginx: Nginx, path: str) -> None:
    status, headers, _ = _request(
        nginx, "POST" if "heal" in path else "GET", path, source="127.0.0.2"
    )
    assert status == 403
    assert "X-Request-ID" not in headers  # refused by nginx; the node never saw it


def test_metrics_and_admin_are_served_to_this_host(nginx: Nginx) -> None:
    status, headers, _ = _request(nginx, "GET", "/metrics")
    assert status == 200 and "X-Request-ID" in headers
    status, headers, body = _request(nginx, "POST", "/self/heal")
    # The node's own check: a bearer token is still required.
    assert status == 401 and json.loads(body)["error"]["status"] == "UNAUTHENTICATED"
    status, _, _ = _request(
        nginx, "GET", "/self/status", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert status == 200


def test_node_limits_each_client_by_the_address_nginx_forwards(limited_nginx: Nginx) -> None:
    """Without trusting nginx's X-Forwarded-For the node would see one client (127.0.0.1);
    a client's own X-Forwarded-For is not believed (nginx appends the real address)."""

    def post(source: str, forwarded: str | None = None) -> int:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        status, _, _ = _request(limited_nginx, "POST", GENERATE, PROMPT, headers, source)
        return status

    assert [post("127.0.0.2") for _ in range(LIMIT + 1)] == [200] * LIMIT + [429]
    assert post("127.0.0.2", forwarded="10.9.8.7") == 429
    assert post("127.0.0.3") == 200


# --- worker recycling under load -------------------------------------------------------------


def test_worker_recycles_under_load_lose_no_request(
    nginx: Nginx, proxied_node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=20)
    master = proxied_node.process.pid
    before = _worker_pids(master)
    assert len(before) == 2
    stop = threading.Event()
    done: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            for _ in range(400):
                if stop.is_set():
                    return
                try:
                    response = session.post(f"{nginx.url}{GENERATE}", json=PROMPT, timeout=15)
                    outcome = response.status_code
                except requests.RequestException as exc:
                    outcome = -1
                    with lock:
                        failures.append(repr(exc))
                with lock:
                    done.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    terminated: list[int] = []
    started = time.monotonic()
    try:
        # About 4 s of load with a recycle at 1, 2 and 3 s, requests flowing before each.
        for second in (1, 2, 3, 4):
            target = len(done) + 40
            wait_until(
                lambda s=second, n=target: time.monotonic() - started >= s and len(done) >= n,
                15,
                "requests to flow",
            )
            if second == 4:
                break
            victim = min(_worker_pids(master))
            os.kill(victim, RECYCLE_SIGNAL)
            terminated.append(victim)
            wait_until(
                lambda victim=victim: _replaced(master, victim), 20, f"worker {victim} to go"
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        simulator.configure(latency_ms=0)
    after = _worker_pids(master)
    assert failures == []
    assert len(done) >= 160
    assert [code for code in done if code != 200] == []
    assert len(after) == 2 and after.isdisjoint(terminated)
    # Both original workers were among those recycled.
    assert after.isdisjoint(before)
