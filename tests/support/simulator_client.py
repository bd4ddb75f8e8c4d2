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

    def fault(self, fault: str, model: str = "*", key: str | None = None, **params: Any) -> None:
        """Inject `fault` for `model` (see app.simulator), for calls with `key` if given."""
        body = {"model": model, "fault": fault, **params}
        if key is not None:
            body["key"] = key
        requests.post(f"{self.url}/_sim/faults", json=body, timeout=5).raise_for_status()

    def add_keys(self, *keys: str) -> list[str]:
        """Make the simulator accept `keys` too (until the next reset); return every key id."""
        response = requests.post(f"{self.url}/_sim/keys", json={"keys": list(keys)}, timeout=5)
        response.raise_for_status()
        ids: list[str] = response.json()["keys"]
        return ids

    def quota(
        self,
        key: str,
        model: str = "*",
        per_minute: int | None = None,
        per_day: int | None = None,
    ) -> dict[str, Any]:
        """Limit the calls with `key` on `model` ("*": each model) per minute and/or per day."""
        body = {"key": key, "model": model, "per_minute": per_minute, "per_day": per_day}
        response = requests.post(f"{self.url}/_sim/quotas", json=body, timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def quotas(self) -> list[dict[str, Any]]:
        """The quotas set, each with the calls used per model (keys shown by id)."""
        result: list[dict[str, Any]] = requests.get(f"{self.url}/_sim/quotas", timeout=5).json()
        return result

    def advance_clock(self, seconds: float) -> dict[str, float]:
        """Move the simulator's quota clock `seconds` forward; return its `now` and `offset`."""
        response = requests.post(f"{self.url}/_sim/clock", json={"advance": seconds}, timeout=5)
        response.raise_for_status()
        result: dict[str, float] = response.json()
        return result

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

    def by_key(self) -> dict[str, int]:
        """API calls so far per key id (see app.simulator.key_ids)."""
        result: dict[str, int] = self.stats()["by_key"]
        return result
