"""Capacity with the shipped defaults: hundreds of slow calls and streams held at once, and
calls past MAX_CALLS_IN_FLIGHT refused at once with a retry hint."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.simulator.responses import reply_text
from tests.conftest import UPSTREAM_KEY, node_env, running_node
from tests.support.http_load import Call, calls_at_once, streams_at_once
from tests.support.logs import events
from tests.support.processes import Service, free_port, start_node, start_process, wait_until
from tests.support.simulator_client import SimulatorControl

MODEL = "gemini-3.8-flash"
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "hold me a while"}]}]}
BODY = json.dumps(PROMPT).encode()
HEADERS = {"Content-Type": "application/json"}
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"


def shipped_defaults(simulator_url: str, **extra: str) -> dict[str, str]:
    """Only what points a node at the test simulator: every other setting is the default."""
    return {
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_API_BASE": f"{simulator_url}/v1beta",
        "GEMINI_MODELS": "gemini-3.8-flash,gemini-3.5-flash",
        **extra,
    }


@pytest.fixture(scope="module")
def default_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node with the shipped defaults (worker class, workers, pool, call limit)."""
    service = start_node(logs_dir / "capacity-default.log", shipped_defaults(simulator_service.url))
    try:
        wait_until(lambda: len(events(service, "worker_ready")) == 2, 15, "two workers")
        yield service
    finally:
        service.stop()


def test_defaults_hold_600_slow_calls_at_once(
    default_node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=2000)
    calls = calls_at_once(default_node.url + GENERATE, 600, data=BODY, headers=HEADERS)
    assert Counter(c.status for c in calls) == {200: 600}
    # The upstream saw them together: the node did not queue them behind a small pool.
    assert simulator.stats()["peak_in_flight"] >= 540
    assert {e["worker_class"] for e in events(default_node, "worker_ready")} == {"GeventWorker"}
    text = default_node.log_text()
    assert "Connection pool is full" not in text and "Traceback" not in text


def test_200_streams_each_deliver_every_chunk_in_order(
    default_node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(stream_chunks=12, chunk_delay_ms=100)
    streams = streams_at_once(default_node.url + STREAM, 200, BODY, HEADERS)
    expected = reply_text(PROMPT)
    assert Counter(s.status for s in streams) == {200: 200}
    for stream in streams:
        chunks = [data for _, data in stream.events]
        assert len(chunks) == 12
        texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
        assert "".join(texts) == expected
        used = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
        assert used == sorted(used)
        assert [("finishReason" in c["candidates"][0]) for c in chunks] == [False] * 11 + [True]
    assert simulator.stats()["peak_in_flight"] >= 180


LIMIT = 10
ADMIN = "capacity-admin-s3cr3t-0123456789"


@pytest.fixture(scope="module")
def small_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """One worker admitting 10 calls at once, quick to heal and recycle if it counted the
    refusals as failures (it must not)."""
    with running_node(
        simulator_service,
        logs_dir,
        "capacity-small",
        ADMIN_TOKEN=ADMIN,
        WEB_CONCURRENCY="1",
        MAX_CALLS_IN_FLIGHT=str(LIMIT),
        WORKER_MAX_FAILURES="5",
        WORKER_MIN_AGE="0",
        AUTO_HEAL_ERROR_THRESHOLD="5",
        AUTO_HEAL_MIN_INTERVAL="0",
    ) as service:
        yield service


def _metric(node: Service, line_start: str) -> float:
    for line in requests.get(f"{node.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {line_start} in /metrics")


def test_calls_past_the_limit_get_503_with_a_retry_hint_at_once(
    small_node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=3000)
    results: list[Call] = []
    burst = threading.Thread(
        target=lambda: results.extend(
            calls_at_once(small_node.url + GENERATE, 3 * LIMIT, data=BODY, headers=HEADERS)
        )
    )
    burst.start()
    try:
        wait_until(lambda: simulator.stats()["in_flight"] == LIMIT, 10, "the node to be full")
        # Full: the ops endpoints still answer, and say so.
        assert requests.get(f"{small_node.url}/health", timeout=5).status_code == 200
        assert _metric(small_node, "l104_calls_in_flight") == LIMIT
        assert _metric(small_node, "l104_calls_in_flight_limit") == LIMIT
        status = requests.get(
            f"{small_node.url}/self/status",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=5,
        ).json()
        assert status["worker"]["calls_in_flight"] == LIMIT
        assert status["worker"]["calls_in_flight_limit"] == LIMIT
    finally:
        burst.join(30)
    statuses = Counter(c.status for c in results)
    assert statuses == {200: LIMIT, 503: 2 * LIMIT}
    for refused in (c for c in results if c.status == 503):
        error = json.loads(refused.body)["error"]
        assert error["code"] == 503 and error["status"] == "UNAVAILABLE"
        assert f"limit of {LIMIT} calls in flight" in error["message"]
        assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
        assert refused.headers["Retry-After"] == "1"
        # Answered before any admitted call could end: nothing waited for a slot.
        assert refused.end < min(c.end for c in results if c.status == 200)
    stats = simulator.stats()
    assert stats["peak_in_flight"] == LIMIT and stats["total"] == LIMIT
    refused_total = 'l104_refused_requests_total{reason="overloaded"}'
    assert _metric(small_node, refused_total) == 2 * LIMIT
    assert _metric(small_node, "l104_worker_overloads_total") == 1
    assert _metric(small_node, "l104_calls_in_flight") == 0
    # Still healthy after, and the refusals healed or recycled nothing.
    simulator.configure(latency_ms=0)
    assert requests.post(small_node.url + GENERATE, json=PROMPT, timeout=10).status_code == 200
    names = [e["event"] for e in events(small_node)]
    assert names.count("worker_overloaded") == 1 and names.count("worker_overload_cleared") == 1
    assert "worker_recycled" not in names and "auto_heal_triggered" not in names


def test_a_low_descriptor_limit_is_raised_or_warned_at_start(
    simulator_service: Service, logs_dir: Path
) -> None:
    """The master raises its soft limit toward what the settings use, and warns when the
    hard limit is lower."""
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    limited = (
        "import os, resource, sys; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (512, 1024)); "
        f"os.execv({gunicorn!r}, [{gunicorn!r}, '-c', 'gunicorn.conf.py'])"
    )
    port = free_port()
    env = {**node_env(simulator_service.url), "PORT": str(port), "HOST": "127.0.0.1"}
    node = start_process(
        [sys.executable, "-c", limited],
        env,
        logs_dir / "capacity-fd-limit.log",
        port,
        f"http://127.0.0.1:{port}/health",
    )
    try:
        raised = events(node, "fd_limit_raised")
        low = events(node, "fd_limit_low")
        assert raised and raised[0]["soft_limit"] == 1024 and raised[0]["previous"] == 512
        assert low and low[0]["soft_limit"] == 1024 and low[0]["needed"] > 1024
        assert low[0]["level"] == "WARNING"
    finally:
        node.stop()
