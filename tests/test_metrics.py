"""/metrics across real gunicorn workers, the L104 JSON view, METRICS_TOKEN and /ready."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import running_node
from tests.support.logs import events
from tests.support.processes import Service, child_pids, wait_until
from tests.support.simulator_client import SimulatorControl

TOKEN = "metrics-s3cr3t-0123456789abcdef"
PROMPT = {"contents": [{"parts": [{"text": "count"}]}]}
GEN = "/v1beta/models/gemini-3.8-flash:generateContent"


@pytest.fixture(scope="module")
def metrics_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """Two workers; metrics need a bearer token; small breaker threshold."""
    with running_node(
        simulator_service,
        logs_dir,
        "metrics-node",
        METRICS_TOKEN=TOKEN,
        CIRCUIT_BREAKER_THRESHOLD="2",
        CIRCUIT_BREAKER_TIMEOUT="60",
        MAX_RETRY_ATTEMPTS="0",
        ADMIN_TOKEN=TOKEN,
    ) as service:
        wait_until(lambda: len(events(service, "worker_ready")) == 2, 15, "two workers ready")
        yield service


def _scrape(node: Service, **headers: str) -> requests.Response:
    return requests.get(
        f"{node.url}/metrics",
        headers={"Authorization": f"Bearer {TOKEN}", **headers},
        timeout=10,
    )


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def _until_both_workers_served(node: Service, batch: int = 10, most: int = 300) -> int:
    """Calls, a batch of concurrent new connections at a time, until both workers have
    answered some (which worker accepts is the kernel's choice); how many were sent."""
    sent = 0
    with ThreadPoolExecutor(batch) as pool:
        while sent < most:
            answers = list(
                pool.map(
                    lambda _: requests.post(f"{node.url}{GEN}", json=PROMPT, timeout=10),
                    range(batch),
                )
            )
            assert all(a.ok for a in answers)
            sent += batch
            served_by = {
                e["worker_pid"]
                for e in events(node, "access")
                if e["path"] == GEN and e["status"] == 200
            }
            if len(served_by) == 2:
                return sent
    raise AssertionError(f"{sent} calls, all answered by one worker")


def test_counters_are_node_wide_and_survive_recycles(
    metrics_node: Service, simulator: SimulatorControl
) -> None:
    before = _sample(
        _scrape(metrics_node).text,
        "l104_requests_total",
        api="gemini",
        code="200",
        endpoint="generateContent",
    )
    sent = _until_both_workers_served(metrics_node)
    text = _scrape(metrics_node).text
    assert _sample(
        text, "l104_requests_total", api="gemini", code="200", endpoint="generateContent"
    ) == (before + sent)
    upstream_ok = _sample(
        text, "l104_upstream_calls_total", api="gemini", model="gemini-3.8-flash", outcome="ok"
    )
    assert upstream_ok >= sent
    # Recycle a worker gracefully: its counts stay in the node's totals.
    master = metrics_node.process.pid
    victim = min(child_pids(master))
    os.kill(victim, signal.SIGTERM)
    wait_until(
        lambda: victim not in child_pids(master) and len(child_pids(master)) == 2,
        15,
        "the worker to be replaced",
    )
    after = _scrape(metrics_node).text
    assert _sample(
        after, "l104_requests_total", api="gemini", code="200", endpoint="generateContent"
    ) == (before + sent)
    assert _sample(after, "l104_build_info", version="0.1.0") == 1


def test_breaker_state_gauges_and_json_view(
    metrics_node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("503", model="*")
    for _ in range(2):
        requests.post(f"{metrics_node.url}{GEN}", json=PROMPT, timeout=10)
    text = _scrape(metrics_node).text
    for model in ("gemini-3.8-flash", "gemini-3.5-flash", "gemini-2.5-flash-lite"):
        assert _sample(text, "l104_circuit_breaker_state", model=model, state="open") == 1
        assert _sample(text, "l104_circuit_breaker_state", model=model, state="closed") == 0
    assert _sample(text, "l104_node_circuit_open") == 1
    assert _sample(text, "l104_circuit_breaks_total", model="gemini-3.8-flash") >= 1

    view = requests.get(
        f"{metrics_node.url}/metrics?format=json",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).json()
    by_accept = _scrape(metrics_node, Accept="application/json").json()
    assert by_accept.keys() == view.keys()
    assert set(view) == {
        "self_healing",
        "auto_heals",
        "circuit_breaks",
        "connection_resets",
        "retry_successes",
        "requests",
        "models",
    }
    healing = view["self_healing"]
    assert set(healing) == {
        "auto_heal_enabled",
        "circuit_breaker_open",
        "circuit_breaker_failures",
        "http_client_errors",
        "last_http_reset",
    }
    assert healing["auto_heal_enabled"] is True
    assert healing["circuit_breaker_open"] is True
    assert isinstance(healing["circuit_breaker_failures"], int)
    assert healing["circuit_breaker_failures"] >= 6
    assert isinstance(healing["http_client_errors"], int)
    assert healing["last_http_reset"] is None or isinstance(healing["last_http_reset"], float)
    for key in ("auto_heals", "circuit_breaks", "connection_resets", "retry_successes"):
        assert isinstance(view[key], int)
    assert view["circuit_breaks"] >= 3
    assert view["requests"]["gemini"] >= 2
    assert view["models"]["gemini-3.8-flash"]["circuit_state"] == "open"

    ready = requests.get(f"{metrics_node.url}/ready", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["unusable_models"]["gemini-3.8-flash"] == "circuit_open"
    requests.post(
        f"{metrics_node.url}/self/heal", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert requests.get(f"{metrics_node.url}/ready", timeout=5).status_code == 200


def test_metrics_token(metrics_node: Service) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        response = requests.get(f"{metrics_node.url}/metrics", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert TOKEN not in _scrape(metrics_node).text
    assert TOKEN not in metrics_node.log_text()


def test_openmetrics_when_asked(metrics_node: Service) -> None:
    plain = _scrape(metrics_node)
    assert plain.headers["content-type"].startswith("text/plain")
    open_metrics = _scrape(metrics_node, Accept="application/openmetrics-text; version=1.0.0")
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


def test_no_unbounded_labels(metrics_node: Service, simulator: SimulatorControl) -> None:
    for name in ("gemini-unknown-1", "gemini-unknown-2"):
        requests.post(f"{metrics_node.url}/v1beta/models/{name}:generateContent", json=PROMPT)
    requests.get(f"{metrics_node.url}/no/such/path/123")
    requests.get(f"{metrics_node.url}/v1beta/openai/no/such/path/456")
    chat = {"model": "gemini-unknown-3", "messages": [{"role": "user", "content": "x"}]}
    requests.post(f"{metrics_node.url}/v1beta/openai/chat/completions", json=chat)
    text = _scrape(metrics_node).text
    assert "gemini-unknown" not in text and "/no/such" not in text
    models = set(re.findall(r'model="([^"]+)"', text))
    served = {"gemini-3.8-flash", "gemini-3.5-flash", "gemini-2.5-flash-lite"}
    assert models <= served | {"gemini-embedding-001", "unlisted"}
    assert set(re.findall(r'api="([^"]+)"', text)) <= {"gemini", "openai", "legacy", "node"}
