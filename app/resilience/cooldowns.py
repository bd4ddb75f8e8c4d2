"""Model cooldowns after 429: how long a rate-limited model rests, node-wide."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from app.errors import UpstreamRateLimited
from app.state import Cooldown, StateStore

# Gemini's per-day quotas reset at midnight Pacific time.
QUOTA_TIMEZONE = ZoneInfo("America/Los_Angeles")


def seconds_until_quota_reset(now: float) -> float:
    """Seconds from `now` (epoch) to the next midnight Pacific."""
    local = datetime.fromtimestamp(now, QUOTA_TIMEZONE)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, midnight.timestamp() - now)


@dataclass(frozen=True)
class CooldownPolicy:
    """How long to rest a model: the server's RetryInfo delay, else `default` seconds."""

    default: float = 30.0
    maximum: float = 3600.0

    def seconds(self, error: UpstreamRateLimited, now: float) -> float:
        """The rest a 429 earns: until the quota resets for a per-day quota."""
        if error.per_day:
            return seconds_until_quota_reset(now)
        delay = error.retry_delay if error.retry_delay is not None else self.default
        return min(max(delay, 0.1), self.maximum)


class Cooldowns:
    """Records and answers which models are resting, through the node-wide store."""

    def __init__(self, store: StateStore, policy: CooldownPolicy) -> None:
        self._store = store
        self.policy = policy

    def cool_down(self, model: str, error: UpstreamRateLimited) -> Cooldown:
        """Rest `model` after a 429; returns the cooldown recorded."""
        now = self._store.clock.now()
        reason = "per_day_quota" if error.per_day else "rate_limited"
        cooldown = Cooldown(now + self.policy.seconds(error, now), reason)
        self._store.set_cooldown(model, cooldown.until, reason)
        return cooldown

    def active(self) -> dict[str, Cooldown]:
        """Models resting now."""
        return self._store.cooldowns()

    def remaining(self, cooldown: Cooldown) -> float:
        """Seconds left on `cooldown`."""
        return max(0.0, cooldown.until - self._store.clock.now())

    def clear(self) -> None:
        """End every cooldown (healing)."""
        self._store.clear("cooldowns")
