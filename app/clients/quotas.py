"""Each client's requests and tokens, counted node-wide with the `limits` library (the
library Flask-Limiter counts with) in the node's limits storage: SQLite on one node, Redis
across nodes.

Windows are aligned: a minute is a UTC minute and a day a UTC day, each one counter per
client whose key names the window, so every node and worker counts into the same one and
knows when it ends. Requests are counted when a call is admitted; tokens are charged after
the call with what the upstream reported (`usageMetadata`, OpenAI's `usage`). A call is
refused while its window's tokens are already spent (as Envoy AI Gateway does): a call that
crosses the limit finishes, the next one is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from app.clients.registry import Client
from app.clock import SYSTEM_CLOCK, Clock

MINUTE, DAY = 60, 86400
# limit name -> (quotaId of Gemini's QuotaFailure, window seconds)
QUOTA_IDS = {
    "requests_per_minute": ("RequestsPerMinutePerClient", MINUTE),
    "tokens_per_minute": ("TokensPerMinutePerClient", MINUTE),
    "tokens_per_day": ("TokensPerDayPerClient", DAY),
    "max_in_flight": ("ConcurrentCallsPerClient", 1),
}
# Calls in flight count in the window of their start; a call lasts less than one window
# (the request deadline), so those of this window and the last are all there are, and a
# dead worker's calls are forgotten two windows later.
IN_FLIGHT_WINDOW = 300
WINDOWED = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")


@dataclass(frozen=True)
class Refusal:
    """A limit the client has reached, and when its window ends."""

    client: str
    limit: str
    value: int
    retry_after: float

    @property
    def quota_id(self) -> str:
        """Its `quotaId` (`TokensPerMinutePerClient`, ...)."""
        return QUOTA_IDS[self.limit][0]


@dataclass(frozen=True)
class Window:
    """One limit's window now: the limit, what is left of it, seconds until it resets."""

    limit: int
    remaining: int
    reset: float


class Quotas:
    """Admits and charges clients against their limits."""

    def __init__(
        self,
        requests: Storage,
        tokens: Storage | None = None,
        clock: Clock = SYSTEM_CLOCK,
        in_flight_window: float = IN_FLIGHT_WINDOW,
    ) -> None:
        # Request windows sit with the rate limits (healing's reset_rate_limits clears both);
        # token windows apart, since budgets are budgets and stay.
        self.requests = requests
        self.tokens = tokens or requests
        self._count_requests = FixedWindowRateLimiter(self.requests)
        self._count_tokens = FixedWindowRateLimiter(self.tokens)
        self._clock = clock
        self.in_flight_window = in_flight_window

    def enter(self, client: Client) -> Refusal | str | None:
        """Take one of `client`'s `max_in_flight` slots, node-wide: the slot to give back
        with `leave`, the refusal when all are taken, None when it has no such limit."""
        limit = client.limits.max_in_flight
        if limit is None:
            return None
        now = self._clock.now()
        index = math.floor(now / self.in_flight_window)
        key, previous = self._slot_key(client.id, index), self._slot_key(client.id, index - 1)
        expiry = math.ceil(2 * self.in_flight_window)
        taken = self.requests.incr(key, expiry) + max(0, self.requests.get(previous))
        if taken > limit:
            self.requests.incr(key, expiry, amount=-1)
            return Refusal(client.id, "max_in_flight", limit, 1.0)
        return key

    def leave(self, slot: str) -> None:
        """Give a slot back."""
        self.requests.incr(slot, math.ceil(2 * self.in_flight_window), amount=-1)

    def in_flight(self, client: Client) -> int:
        """`client`'s calls in flight node-wide."""
        index = math.floor(self._clock.now() / self.in_flight_window)
        return sum(
            max(0, self.requests.get(self._slot_key(client.id, i))) for i in (index, index - 1)
        )

    @staticmethod
    def _slot_key(client_id: str, index: int) -> str:
        return f"l104-in-flight/{client_id}/{index}"

    def _item(self, name: str, value: int) -> tuple[RateLimitItem, str, float]:
        """The `limits` item of a limit, the id of its current window, seconds left in it."""
        seconds = QUOTA_IDS[name][1]
        now = self._clock.now()
        index = math.floor(now / seconds)
        item: RateLimitItem = (
            RateLimitItemPerMinute(value) if seconds == MINUTE else RateLimitItemPerDay(value)
        )
        return item, f"{name}:{index}", (index + 1) * seconds - now

    def admit(self, client: Client) -> Refusal | None:
        """Count one request of `client`; the refusal if a limit of it is reached. A
        request refused for its tokens is not counted; one past `requests_per_minute` is, as
        Flask-Limiter counts refused hits (a client that keeps calling stays refused)."""
        limits = client.limits
        for name in ("tokens_per_day", "tokens_per_minute"):  # the longer wait first
            value = getattr(limits, name)
            if value is None:
                continue
            item, window, left = self._item(name, value)
            if not self._count_tokens.test(item, client.id, window):
                return Refusal(client.id, name, value, left)
        if limits.requests_per_minute is not None:
            item, window, left = self._item("requests_per_minute", limits.requests_per_minute)
            if not self._count_requests.hit(item, client.id, window):
                return Refusal(client.id, "requests_per_minute", limits.requests_per_minute, left)
        return None

    def charge(self, client: Client, tokens: int) -> None:
        """Add a finished call's tokens to `client`'s token windows."""
        if tokens <= 0:
            return
        for name in ("tokens_per_minute", "tokens_per_day"):
            value = getattr(client.limits, name)
            if value is not None:
                item, window, _ = self._item(name, value)
                self._count_tokens.hit(item, client.id, window, cost=tokens)

    def windows(self, client: Client) -> dict[str, Window]:
        """Each limit of `client` in its window now (for headers and /self/clients)."""
        shown: dict[str, Window] = {}
        for name in WINDOWED:
            value = getattr(client.limits, name)
            if value is None:
                continue
            item, window, left = self._item(name, value)
            used = self._storage(name).get(item.key_for(client.id, window))
            shown[name] = Window(value, max(0, value - used), left)
        return shown

    def reset(self, client: Client) -> None:
        """Forget `client`'s current windows (POST /self/clients/<id>/reset)."""
        for name in WINDOWED:
            value = getattr(client.limits, name)
            if value is not None:
                item, window, _ = self._item(name, value)
                self._storage(name).clear(item.key_for(client.id, window))

    def reset_requests(self) -> None:
        """Forget every client's request windows (healing's reset_rate_limits); token
        budgets stay."""
        self.requests.reset()

    def _storage(self, limit: str) -> Storage:
        return self.requests if limit == "requests_per_minute" else self.tokens
