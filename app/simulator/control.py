"""The control API under `/_sim/`: faults, config, stats, the request log, reset, health."""

from __future__ import annotations

import json
from typing import Any

from app.simulator.faults import FaultError, parse_fault
from app.simulator.responses import compact, error_body
from app.simulator.state import REQUEST_LOG_SIZE, ConfigError, SimulatorState

# path -> the HTTP methods it answers
ROUTES: dict[str, frozenset[str]] = {
    "/_sim/health": frozenset({"GET"}),
    "/_sim/faults": frozenset({"GET", "POST", "DELETE"}),
    "/_sim/config": frozenset({"GET", "POST"}),
    "/_sim/stats": frozenset({"GET"}),
    "/_sim/requests": frozenset({"GET"}),
    "/_sim/reset": frozenset({"POST"}),
}


def _json_body(raw: bytes | None) -> Any:
    try:
        return json.loads(raw or b"")
    except (ValueError, RecursionError):
        raise ConfigError("the body must be valid JSON") from None


def _limit(query: dict[str, str]) -> int:
    text = query.get("limit", str(REQUEST_LOG_SIZE))
    try:
        limit = int(text)
    except ValueError:
        raise ConfigError("limit must be an integer") from None
    if limit < 0:
        raise ConfigError("limit must be >= 0")
    return min(limit, REQUEST_LOG_SIZE)


def handle_control(
    state: SimulatorState, method: str, path: str, query: dict[str, str], raw: bytes | None
) -> tuple[int, bytes]:
    """Answer one control request: (status code, JSON body)."""
    allowed = ROUTES.get(path)
    if allowed is None:
        return 404, error_body(404, f"No control endpoint {path}.")
    if method not in allowed:
        return 405, error_body(405, f"{path} accepts {', '.join(sorted(allowed))}.")
    try:
        return 200, compact(_answer(state, method, path, query, raw))
    except (ConfigError, FaultError) as error:
        return 400, error_body(400, str(error))


def _answer(
    state: SimulatorState, method: str, path: str, query: dict[str, str], raw: bytes | None
) -> Any:
    if path == "/_sim/health":
        return {"status": "ok"}
    if path == "/_sim/faults":
        if method == "GET":
            return state.faults.describe()
        if method == "DELETE":
            return {"cleared": state.faults.clear()}
        fault = parse_fault(_json_body(raw))
        state.faults.add(fault)
        return fault.describe()
    if path == "/_sim/config":
        if method == "GET":
            return state.config.snapshot()
        return state.config.merge(_json_body(raw))
    if path == "/_sim/stats":
        return state.recorder.stats()
    if path == "/_sim/requests":
        return state.recorder.requests(_limit(query))
    state.reset()
    return {"status": "ok"}
