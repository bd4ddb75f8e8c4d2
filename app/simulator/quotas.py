"""Per-key quotas: requests per minute and per day for each (key, model), as Gemini counts
them per project and model.

A quota for model "*" gives each model of that key the same limits, counted apart. The
minute window opens at the first counted call and lasts 60 s; the day ends at midnight
America/Los_Angeles. Time comes from the simulator's clock, passed in by the caller. Keys
are held by id only.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.simulator import key_ids
from app.simulator.errors import ApiError, ControlError
from app.simulator.methods import MODEL_METHODS
from app.simulator.responses import quota_error

ANY_MODEL = "*"
MINUTE = 60.0
PACIFIC = ZoneInfo("America/Los_Angeles")
_LIMITS = ("per_minute", "per_day")


def pacific_day(now: float) -> date:
    """The calendar day in California at Unix time `now`."""
    return datetime.fromtimestamp(now, PACIFIC).date()


def next_pacific_midnight(now: float) -> float:
    """The Unix time of the first midnight in California after `now`."""
    tomorrow = pacific_day(now) + timedelta(days=1)
    return datetime.combine(tomorrow, time.min, PACIFIC).timestamp()


def retry_delay(seconds: float) -> str:
    """A RetryInfo delay, rounded up to the millisecond: waiting that long is enough."""
    millis = max(1, math.ceil(seconds * 1000))
    whole, part = divmod(millis, 1000)
    return f"{whole}.{part:03d}".rstrip("0").rstrip(".") + "s"


@dataclass
class Usage:
    """The calls counted for one model under one quota."""

    minute_start: float = -math.inf
    minute: int = 0
    day: date | None = None
    today: int = 0

    def roll(self, now: float) -> None:
        """Start a new minute window or day if the current one is over."""
        if now >= self.minute_start + MINUTE:
            self.minute_start, self.minute = now, 0
        day = pacific_day(now)
        if day != self.day:
            self.day, self.today = day, 0


@dataclass
class Quota:
    """The limits of one key (by id) for one model or "*"; None is no limit."""

    key_id: str
    model: str
    per_minute: int | None
    per_day: int | None
    usage: dict[str, Usage] = field(default_factory=dict)

    def charge(self, model: str, now: float) -> ApiError | None:
        """Count one call for `model`, or return the 429 that refuses it (not counted)."""
        use = self.usage.setdefault(model, Usage())
        use.roll(now)
        if self.per_day is not None and use.today >= self.per_day:
            delay = retry_delay(next_pacific_midnight(now) - now)
            return quota_error(model, True, delay, quota_value=self.per_day)
        if self.per_minute is not None and use.minute >= self.per_minute:
            delay = retry_delay(use.minute_start + MINUTE - now)
            return quota_error(model, False, delay, quota_value=self.per_minute)
        use.minute += 1
        use.today += 1
        return None

    def describe(self, now: float) -> dict[str, Any]:
        """The JSON form shown by `GET /_sim/quotas`: limits, and calls used per model."""
        used: dict[str, dict[str, int]] = {}
        for model, use in self.usage.items():
            current = replace(use)
            current.roll(now)
            used[model] = {"minute": current.minute, "day": current.today}
        return {
            "key": self.key_id,
            "model": self.model,
            "per_minute": self.per_minute,
            "per_day": self.per_day,
            "used": used,
        }


def _limit(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ControlError(f"{name} must be an integer >= 0, or null")
    return value


def parse_quota(spec: object) -> Quota:
    """Validate a `POST /_sim/quotas` body and build the Quota it describes."""
    if not isinstance(spec, dict):
        raise ControlError("the body must be a JSON object")
    unknown = sorted(set(spec) - {"key", "model", *_LIMITS})
    if unknown:
        allowed = ", ".join(("key", "model", *_LIMITS))
        raise ControlError(f"unknown field(s): {', '.join(unknown)} (allowed: {allowed})")
    key = spec.get("key")
    model = spec.get("model", ANY_MODEL)
    if not isinstance(key, str) or not key:
        raise ControlError("key must be the API key the quota is for")
    if not isinstance(model, str) or not model:
        raise ControlError('model must be a model id or "*"')
    per_minute = _limit("per_minute", spec.get("per_minute"))
    per_day = _limit("per_day", spec.get("per_day"))
    if per_minute is None and per_day is None:
        raise ControlError("give per_minute, per_day or both")
    return Quota(key_ids.key_id(key), model.removeprefix("models/"), per_minute, per_day)


class QuotaBook:
    """The quotas, keyed by (key id, model or "*"); safe to use from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quotas: dict[tuple[str, str], Quota] = {}

    def add(self, quota: Quota) -> None:
        """Set `quota`, replacing (and recounting) any quota for the same key and model."""
        with self._lock:
            self._quotas[(quota.key_id, quota.model)] = quota

    def clear(self) -> int:
        """Remove every quota; return how many there were."""
        with self._lock:
            cleared = len(self._quotas)
            self._quotas.clear()
            return cleared

    def describe(self, now: float) -> list[dict[str, Any]]:
        """The quotas in JSON form."""
        with self._lock:
            return [quota.describe(now) for quota in self._quotas.values()]

    def charge(self, key_id: str | None, model: str, api_method: str, now: float) -> None:
        """Count a call of `api_method` on `model` with the key `key_id` against its quota;
        raise the 429 ApiError when the quota refuses it. The model's own quota wins over
        the key's "*" quota; listing and getting models are not counted."""
        if not self._quotas or key_id is None or api_method not in MODEL_METHODS:
            return
        with self._lock:
            quota = self._quotas.get((key_id, model)) or self._quotas.get((key_id, ANY_MODEL))
            error = quota.charge(model, now) if quota is not None else None
        if error is not None:
            raise error
