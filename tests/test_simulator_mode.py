"""With no GEMINI_API_KEY the node starts the bundled simulator and says so loudly."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from tests.support.processes import port_is_free, start_node


def test_node_without_key_runs_against_the_simulator(logs_dir: Path) -> None:
    node = start_node(logs_dir / "simulator-mode.log", {"GEMINI_API_KEY": ""})
    try:
        health = requests.get(f"{node.url}/health", timeout=5).json()
        assert health["upstream"] == "simulator"
        response = requests.post(
            f"{node.url}/v1beta/models/gemini-3.8-flash:generateContent",
            json={"contents": [{"parts": [{"text": "demo"}]}]},
            timeout=10,
        )
        assert response.status_code == 200
        assert response.json()["candidates"][0]["content"]["parts"][0]["text"].endswith("demo")
        log = node.log_text()
        assert "SIMULATOR MODE" in log
        match = re.search(r"simulator at http://127\.0\.0\.1:(\d+)", log)
        assert match
        simulator_port = int(match.group(1))
        assert not port_is_free(simulator_port)
    finally:
        node.stop()
    assert port_is_free(simulator_port)
