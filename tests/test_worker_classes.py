"""The node serves under each supported gunicorn worker class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import node_env
from tests.support.logs import events
from tests.support.processes import Service, start_node, wait_until
from tests.support.simulator_client import SimulatorControl

PROMPT = {"contents": [{"parts": [{"text": "which worker"}]}]}


WORKER_TYPES = {"sync": "SyncWorker", "gthread": "ThreadWorker", "gevent": "GeventWorker"}


@pytest.mark.parametrize("worker_class", list(WORKER_TYPES))
def test_worker_class_serves_generate_stream_and_metrics(
    worker_class: str,
    simulator_service: Service,
    simulator: SimulatorControl,
    logs_dir: Path,
) -> None:
    env = node_env(simulator_service.url, GUNICORN_WORKER_CLASS=worker_class)
    node = start_node(logs_dir / f"worker-class-{worker_class}.log", env)
    try:
        wait_until(lambda: len(events(node, "worker_ready")) == 2, 15, "two workers")
        classes = {e["worker_class"] for e in events(node, "worker_ready")}
        assert classes == {WORKER_TYPES[worker_class]}
        base = f"{node.url}/v1beta/models/gemini-3.8-flash"
        assert requests.post(f"{base}:generateContent", json=PROMPT, timeout=10).ok
        simulator.configure(stream_chunks=3)
        with requests.post(
            f"{base}:streamGenerateContent?alt=sse", json=PROMPT, stream=True, timeout=10
        ) as stream:
            chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line]
        assert len(chunks) == 3
        simulator.fault("503", model="*")
        assert requests.post(f"{base}:generateContent", json=PROMPT, timeout=10).status_code == 503
        metrics = requests.get(f"{node.url}/metrics", timeout=10).text
        served = 'l104_requests_total{api="gemini",code="200",endpoint="generateContent"} 1.0'
        assert served in metrics
    finally:
        node.stop()
    assert "Traceback" not in node.log_text()
