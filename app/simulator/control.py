"""The control API under `/_sim/`: faults, keys, quotas, the quota clock, config, stats, the
request log, reset, health. API keys are shown by id only."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.simulator.clock import parse_advance
from app.simulator.errors import ControlError
from app.simulator.faults import parse_fault
from app.simulator.keys import parse_keys
from app.simulator.quotas import parse_quota
from app.simulator.responses import compact, error_body
from app.simulator.state import REQUEST_LOG_SIZE, SimulatorState


@dataclass(frozen=True)
class Control:
    """One control request, as its endpoint sees it."""

    state: SimulatorState
    method: str
    query: dict[str, str]
    raw: bytes | None

    def body(self) -> Any:
        """The JSON body."""
        try:
            return json.loads(self.raw or b"")
        except (ValueError, RecursionError):
            raise ControlError("the body must be valid JSON") from None


# A control request -> the JSON answer
Endpoint = Callable[[Control], Any]


def _limit(query: dict[str, str]) -> int:
    text = query.get("limit", str(REQUEST_LOG_SIZE))
    try:
        limit = int(text)
    except ValueError:
        raise ControlError("limit must be an integer") from None
    if limit < 0:
        raise ControlError("limit must be >= 0")
    return min(limit, REQUEST_LOG_SIZE)


def _health(call: Control) -> Any:
    return {"status": "ok"}


def _faults(call: Control) -> Any:
    if call.method == "GET":
        return call.state.faults.describe()
    if call.method == "DELETE":
        return {"cleared": call.state.faults.clear()}
    fault = parse_fault(call.body())
    call.state.faults.add(fault)
    return fault.describe()


def _keys(call: Control) -> Any:
    if call.method == "POST":
        call.state.keys.add(parse_keys(call.body()))
    return {"keys": call.state.keys.ids()}


def _quotas(call: Control) -> Any:
    if call.method == "GET":
        return call.state.quotas.describe(call.state.clock.now())
    if call.method == "DELETE":
        return {"cleared": call.state.quotas.clear()}
    quota = parse_quota(call.body())
    call.state.quotas.add(quota)
    return quota.describe(call.state.clock.now())


def _clock(call: Control) -> Any:
    if call.method == "POST":
        call.state.clock.advance(parse_advance(call.body()))
    return call.state.clock.describe()


def _config(call: Control) -> Any:
    if call.method == "GET":
        return call.state.config.snapshot()
    return call.state.config.merge(call.body())


def _stats(call: Control) -> Any:
    return call.state.recorder.stats()


def _requests(call: Control) -> Any:
    return call.state.recorder.requests(_limit(call.query))


def _reset(call: Control) -> Any:
    call.state.reset()
    return {"status": "ok"}


# path -> (the HTTP methods it answers, its endpoint)
ROUTES: dict[str, tuple[frozenset[str], Endpoint]] = {
    "/_sim/health": (frozenset({"GET"}), _health),
    "/_sim/faults": (frozenset({"GET", "POST", "DELETE"}), _faults),
    "/_sim/keys": (frozenset({"GET", "POST"}), _keys),
    "/_sim/quotas": (frozenset({"GET", "POST", "DELETE"}), _quotas),
    "/_sim/clock": (frozenset({"GET", "POST"}), _clock),
    "/_sim/config": (frozenset({"GET", "POST"}), _config),
    "/_sim/stats": (frozenset({"GET"}), _stats),
    "/_sim/requests": (frozenset({"GET"}), _requests),
    "/_sim/reset": (frozenset({"POST"}), _reset),
}


def handle_control(
    state: SimulatorState, method: str, path: str, query: dict[str, str], raw: bytes | None
) -> tuple[int, bytes]:
    """Answer one control request: (status code, JSON body)."""
    found = ROUTES.get(path)
    if found is None:
        return 404, error_body(404, f"No control endpoint {path}.")
    allowed, endpoint = found
    if method not in allowed:
        return 405, error_body(405, f"{path} accepts {', '.join(sorted(allowed))}.")
    try:
        return 200, compact(endpoint(Control(state, method, query, raw)))
    except ControlError as error:
        return 400, error_body(400, str(error))
