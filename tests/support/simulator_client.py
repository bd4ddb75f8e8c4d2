"""Drives the simulator's control API (`/_sim/...`) from tests."""

from __future__ import annotations

from typing import Any

import requests


class SimulatorControl:
    """Faults, counters and the request log of one running simulator."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self.api_key = api_key
        self.api_base = f"{url}/v1beta"

    def reset(self) -> None:
        """Clear faults, counters, config and the request log."""
        requests.post(f"{self.url}/_sim/reset", timeout=5).raise_for_status()

    def fault(self, fault: str, model: str = "*", **params: Any) -> None:
        """Inject `fault` for `model` (see app.simulator)."""
        body = {"model": model, "fault": fault, **params}
        requests.post(f"{self.url}/_sim/faults", json=body, timeout=5).raise_for_status()

    def configure(self, **config: Any) -> None:
        """Change the simulator's global behaviour (stream_chunks, chunk_delay_ms, ...)."""
        requests.post(f"{self.url}/_sim/config", json=config, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """API calls received so far."""
        result: dict[str, Any] = requests.get(f"{self.url}/_sim/stats", timeout=5).json()
        return result

    def calls(self) -> int:
        """How many API calls reached the simulator."""
        return int(self.stats()["total"])

    def requests(self, limit: int = 200) -> list[dict[str, Any]]:
        """The last API requests the simulator received, oldest first."""
        result: list[dict[str, Any]] = requests.get(
            f"{self.url}/_sim/requests", params={"limit": limit}, timeout=5
        ).json()
        return result

    @property
    def openai_base(self) -> str:
        """The base URL of the simulator's OpenAI-compatible surface (Gemini's own path)."""
        return f"{self.url}/v1beta/openai"

    def by_method(self) -> dict[str, int]:
        """API calls so far per api_method (generateContent, embedContent, chat.completions...)."""
        result: dict[str, int] = self.stats()["by_method"]
        return result
