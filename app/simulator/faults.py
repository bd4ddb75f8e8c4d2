"""Fault injection: a thread-safe registry of faults, one per (API key, model), with counts.

A fault may be limited to the calls made with one API key; the registry holds that key by
its id only. A fault may hit only a `rate` of the calls reaching it, chosen by count, not at
random: rate 0.2 hits the 5th, 10th, 15th... call.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from app.simulator import key_ids
from app.simulator.errors import ControlError
from app.simulator.methods import GET_MODEL_METHODS, MODEL_METHODS

ANY_MODEL = "*"
MAX_HANG_SECONDS = 600.0
# Absorbs float error in `seen * rate` (0.29 * 100 is 28.999999999999996).
_RATE_EPSILON = 1e-9

# Every fault kind with its parameters and their defaults.
FAULT_PARAMS: dict[str, dict[str, Any]] = {
    "429": {"retry_delay": "26s", "no_details": False},
    "429_day": {"retry_delay": "3600s", "no_details": False},
    "500": {},
    "503": {},
    "504": {},
    "reset": {},
    "hang": {"seconds": None},  # None: until the client closes (at most MAX_HANG_SECONDS)
    "slow": {"seconds": 10.0},
    "stall": {"after": 1},
    "latency": {"ms": 1000.0},
    "slow_body": {"ms": 200.0},
    "malformed": {},
    "stream_cut": {"after": 1},
    "invalid_key": {},
    "permission_denied": {},
}
# Every fault kind accepts this too: the fraction of the calls reaching the fault it hits.
RATE_PARAM = "rate"
# Faults that also apply to getting one model (native and OpenAI-compatible); every fault
# applies to the model methods (generation, embeddings, chat completions).
MODEL_GET_FAULTS = frozenset({"reset", "hang", "latency", "slow", "stall"})
# Faults of the key, not the model: they apply to every call, listing models included, and
# come before anything else is checked.
KEY_FAULTS = frozenset({"invalid_key", "permission_denied"})
CALL_FAULTS = frozenset(FAULT_PARAMS) - KEY_FAULTS


class FaultError(ControlError):
    """A fault specification that cannot be accepted."""


@dataclass
class Fault:
    """One active fault. `remaining` is None for a fault that stays until cleared."""

    kind: str
    model: str
    remaining: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    key_id: str | None = None  # None: calls with any key (or none)
    seen: int = 0  # calls that reached this fault, hit or not (for `rate`)

    @property
    def rate(self) -> float:
        """The fraction of the calls reaching this fault that it hits."""
        return float(self.params.get(RATE_PARAM, 1.0))

    def hits_next(self) -> bool:
        """Count one more call reaching this fault; whether the fault hits it.

        The call hits when it takes `seen * rate` past a whole number, so exactly
        floor(n * rate) of the first n calls are hit, evenly spread.
        """
        self.seen += 1
        rate = self.rate
        if rate >= 1.0:
            return True
        now = math.floor(self.seen * rate + _RATE_EPSILON)
        return now > math.floor((self.seen - 1) * rate + _RATE_EPSILON)

    def applies_to(self, api_method: str) -> bool:
        """Whether this fault affects a call of `api_method`."""
        if api_method in MODEL_METHODS or self.kind in KEY_FAULTS:
            return True
        return api_method in GET_MODEL_METHODS and self.kind in MODEL_GET_FAULTS

    def describe(self) -> dict[str, Any]:
        """The JSON form shown by `GET /_sim/faults` (a key by its id)."""
        shown: dict[str, Any] = {} if self.key_id is None else {"key": self.key_id}
        return {
            **shown,
            "model": self.model,
            "fault": self.kind,
            "remaining": self.remaining,
            "params": dict(self.params),
        }


def _number(name: str, value: object, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{name} must be a number")
    number = float(value)
    if number < low:
        raise FaultError(f"{name} must be >= {low:g}")
    return min(number, high) if high is not None else number


def _integer(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{name} must be an integer")
    if value < low:
        raise FaultError(f"{name} must be >= {low}")
    return value


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError("rate must be a number in (0, 1]")
    if not 0 < value <= 1:  # NaN fails this too
        raise FaultError("rate must be a number in (0, 1]")
    return float(value)


def _delay(value: object) -> str:
    """A RetryInfo delay: "26s", "45.83s", or a number of seconds."""
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text.removesuffix("s"))
        except ValueError:
            seconds = -1.0
        if not text.endswith("s") or seconds < 0:
            raise FaultError('retry_delay must look like "26s" or be a number of seconds')
        return text
    return f"{_number('retry_delay', value, 0.0):g}s"


def parse_fault(spec: object) -> Fault:
    """Validate a `POST /_sim/faults` body and build the Fault it describes."""
    if not isinstance(spec, dict):
        raise FaultError("the body must be a JSON object")
    options = dict(spec)
    model = options.pop("model", ANY_MODEL)
    kind = options.pop("fault", None)
    count = options.pop("count", None)
    key = options.pop("key", None)
    given_rate = RATE_PARAM in options
    rate = options.pop(RATE_PARAM, None)
    if not isinstance(model, str) or not model:
        raise FaultError('model must be a model id or "*"')
    if key is not None and (not isinstance(key, str) or not key):
        raise FaultError("key must be the API key the fault is for, or left out")
    if not isinstance(kind, str) or kind not in FAULT_PARAMS:
        raise FaultError(f"fault must be one of {', '.join(FAULT_PARAMS)}")
    remaining = None if count is None else _integer("count", count, 1)
    defaults = FAULT_PARAMS[kind]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or "none"
        raise FaultError(
            f"unknown parameter(s) for {kind}: {', '.join(unknown)} (allowed: {allowed})"
        )
    params = {**defaults, **options}
    if given_rate:  # shown only when given, so a plain fault's params stay as they were
        params[RATE_PARAM] = _rate(rate)
    if "retry_delay" in options:
        params["retry_delay"] = _delay(options["retry_delay"])
    if "no_details" in options and not isinstance(options["no_details"], bool):
        raise FaultError("no_details must be true or false")
    if "seconds" in options and not (kind == "hang" and options["seconds"] is None):
        params["seconds"] = _number("seconds", options["seconds"], 0.0, MAX_HANG_SECONDS)
    if "ms" in options:
        params["ms"] = _number("ms", options["ms"], 0.0, MAX_HANG_SECONDS * 1000)
    if "after" in options:
        params["after"] = _integer("after", options["after"], 0)
    owner = None if key is None else key_ids.key_id(key)
    return Fault(kind, model.removeprefix("models/"), remaining, params, owner)


def _slots(key_id: str | None, model: str | None) -> list[tuple[str | None, str]]:
    """Where a call's fault is looked up, the first found winning."""
    models = [ANY_MODEL] if model is None else [model, ANY_MODEL]
    owners = [None] if key_id is None else [key_id, None]
    return [(owner, name) for owner in owners for name in models]


class FaultRegistry:
    """The active faults, keyed by (key id or None, model id or "*"); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[tuple[str | None, str], Fault] = {}

    def add(self, fault: Fault) -> None:
        """Activate `fault`, replacing any fault for the same key and model."""
        with self._lock:
            self._faults[(fault.key_id, fault.model)] = fault

    def clear(self) -> int:
        """Remove every fault; return how many there were."""
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
            return cleared

    def describe(self) -> list[dict[str, Any]]:
        """The active faults in JSON form."""
        with self._lock:
            return [fault.describe() for fault in self._faults.values()]

    def take(
        self,
        model: str | None,
        api_method: str,
        key_id: str | None = None,
        only: frozenset[str] | None = None,
    ) -> Fault | None:
        """The fault for one call, if any; a counted fault is used up by it.

        A fault for the call's key and model wins over one for its key, then over a key-less
        fault for the model, then "*". When the winner's kind is not in `only` (if given),
        nothing is taken. A winner whose `rate` spares this call leaves it fault-free (no
        other fault stands in) and keeps its count.
        """
        if not self._faults:  # the common case needs no lock
            return None
        with self._lock:
            for slot in _slots(key_id, model):
                fault = self._faults.get(slot)
                if fault is None or not fault.applies_to(api_method):
                    continue
                if only is not None and fault.kind not in only:
                    return None
                if not fault.hits_next():
                    return None
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[slot]
                return fault
        return None
