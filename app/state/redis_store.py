"""The Redis backend: breakers, cooldowns, trackers and heals shared by several nodes.

Read-modify-write steps that must be atomic (breaker compare-and-set, half-open probes) are Lua
scripts; the rest are single commands. Every call has a short timeout (STATE_TIMEOUT): when
Redis is slow or down, `FailoverStateStore` answers from the node's own SQLite instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.clock import SYSTEM_CLOCK, Clock
from app.state import Admission, BreakerRecord, Cooldown

_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] ~= '' and state ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'successes', 0, 'probes', 0, 'probes_since', ARGV[3])
if ARGV[2] == 'closed' then redis.call('HSET', KEYS[1], 'failures', 0) end
if ARGV[2] == 'open' then redis.call('HSET', KEYS[1], 'opened_at', ARGV[3]) end
return 1
"""
_ACQUIRE_PROBE = """
if (redis.call('HGET', KEYS[1], 'state') or 'closed') ~= 'half-open' then return 0 end
local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
local since = tonumber(redis.call('HGET', KEYS[1], 'probes_since') or '0')
local now, stale, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if since < stale then
  redis.call('HSET', KEYS[1], 'probes', 1, 'probes_since', now)
  return 1
end
if probes < limit then
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  return 1
end
return 0
"""
_RELEASE_PROBE = """
local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
if probes > 0 then redis.call('HINCRBY', KEYS[1], 'probes', -1) end
return 1
"""
_SET_COOLDOWN = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(cjson.decode(current)['until']) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
HEAL_HISTORY_KEPT = 200
_FIELDS = frozenset({"failures", "successes"})


def redis_client(url: str, timeout: float) -> redis.Redis:
    """A client that never makes a request wait: short timeouts, and one immediate retry
    (a pooled connection can be stale after a Redis restart), no backoff sleeps."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.ConnectionError],
        decode_responses=True,
    )


class RedisStateStore:
    """The shared part of `StateStore` on Redis, under one key prefix."""

    def __init__(self, client: redis.Redis, clock: Clock = SYSTEM_CLOCK, prefix: str = "l104"):
        # redis-py's sync/async return unions say nothing useful here: the client decodes
        # responses to str, and each call below returns what its command returns.
        self.client: Any = client
        self.clock = clock
        self.prefix = prefix
        self._transition = client.register_script(_TRANSITION)
        self._acquire = client.register_script(_ACQUIRE_PROBE)
        self._release = client.register_script(_RELEASE_PROBE)
        self._set_cooldown = client.register_script(_SET_COOLDOWN)

    @classmethod
    def from_url(cls, url: str, timeout: float, clock: Clock = SYSTEM_CLOCK) -> RedisStateStore:
        """A store on `url` (redis://, rediss:// with TLS; password and db in the URL)."""
        return cls(redis_client(url, timeout), clock)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # breakers
    def breaker(self, name: str) -> BreakerRecord:
        """The stored breaker (closed and zeroed if never seen)."""
        return _breaker_record(self.client.hgetall(self._key("breaker", name)))

    def admission(self, names: Sequence[str]) -> Admission:
        """Resting models and the breakers of `names`, in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self._key("cooldowns"))
        for name in names:
            pipe.hgetall(self._key("breaker", name))
        cooldowns, *breakers = pipe.execute()
        records = {
            name: _breaker_record(fields) for name, fields in zip(names, breakers, strict=True)
        }
        return Admission(self._resting(cooldowns), records)

    def breaker_transition(self, name: str, expected: str | None, new: str) -> bool:
        """Compare-and-set the state; entering a state zeroes its counters."""
        key = self._key("breaker", name)
        return bool(self._transition(keys=[key], args=[expected or "", new, self.clock.now()]))

    def breaker_count(self, name: str, field: str, delta: int) -> int:
        """Add `delta` to `failures` or `successes`; return the new value."""
        if field not in _FIELDS:
            raise ValueError(field)
        return int(self.client.hincrby(self._key("breaker", name), field, delta))

    def breaker_zero(self, name: str, field: str) -> None:
        """Set a counter to 0, reading first so the common case writes nothing."""
        if field not in _FIELDS:
            raise ValueError(field)
        key = self._key("breaker", name)
        if int(self.client.hget(key, field) or 0):
            self.client.hset(key, field, 0)

    def breaker_set_opened_at(self, name: str, opened_at: float) -> None:
        """Record when the breaker opened."""
        self.client.hset(self._key("breaker", name), "opened_at", opened_at)

    def acquire_probe(self, name: str, limit: int, stale_after: float) -> bool:
        """Admit a probe; probes older than `stale_after` s (a dead worker's) are forgotten."""
        now = self.clock.now()
        key = self._key("breaker", name)
        return bool(self._acquire(keys=[key], args=[now, now - stale_after, limit]))

    def release_probe(self, name: str) -> None:
        """A half-open probe ended."""
        self._release(keys=[self._key("breaker", name)])

    # cooldowns and trackers
    def set_cooldown(self, model: str, until: float, reason: str) -> None:
        """Rest `model` until `until`; a later existing cooldown is kept."""
        value = json.dumps({"until": until, "reason": reason})
        self._set_cooldown(keys=[self._key("cooldowns")], args=[model, until, value])

    def cooldowns(self) -> dict[str, Cooldown]:
        """Models resting now."""
        return self._resting(self.client.hgetall(self._key("cooldowns")))

    def end_cooldowns(self, names: Sequence[str]) -> None:
        """End the cooldowns of `names` now."""
        if names:
            self.client.hdel(self._key("cooldowns"), *names)

    def _resting(self, stored: dict[str, str]) -> dict[str, Cooldown]:
        now = self.clock.now()
        resting = {}
        for model, raw in stored.items():
            value = json.loads(raw)
            if value["until"] > now:
                resting[model] = Cooldown(value["until"], value["reason"])
        return resting

    def track_error(self, model: str, kind: str) -> None:
        """Count one upstream error of `kind` for `model`."""
        self.client.hincrby(self._key("model_errors"), f"{model}|{kind}", 1)

    def model_errors(self) -> dict[str, dict[str, int]]:
        """Upstream errors per model and kind since the last heal."""
        result: dict[str, dict[str, int]] = {}
        for field, count in self.client.hgetall(self._key("model_errors")).items():
            model, _, kind = field.partition("|")
            result.setdefault(model, {})[kind] = int(count)
        return result

    def count_endpoint_error(self, endpoint: str, window: float) -> int:
        """Count one error on `endpoint`; return the errors in the last `window` seconds."""
        now = self.clock.now()
        key = self._key("endpoint_errors", endpoint)
        pipe = self.client.pipeline()
        pipe.zremrangebyscore(key, "-inf", now - window)
        pipe.zadd(key, {f"{now}:{id(pipe)}": now})
        pipe.zcard(key)
        pipe.expire(key, int(window) + 1)
        return int(pipe.execute()[2])

    def clear(self, what: str) -> None:
        """Forget `breakers`, `cooldowns`, `model_errors` or `endpoint_errors`."""
        if what in ("cooldowns", "model_errors"):
            self.client.delete(self._key(what))
            return
        pattern = {"breakers": "breaker", "endpoint_errors": "endpoint_errors"}[what]
        keys = list(self.client.scan_iter(self._key(pattern, "*")))
        if keys:
            self.client.delete(*keys)

    # heals
    def record_heal(self, record: dict[str, Any]) -> int:
        """Store a heal and return the new heal generation."""
        generation = int(self.client.incr(self._key("heal_generation")))
        pipe = self.client.pipeline()
        pipe.lpush(self._key("heals"), json.dumps({"generation": generation, **record}))
        pipe.ltrim(self._key("heals"), 0, HEAL_HISTORY_KEPT - 1)
        pipe.execute()
        return generation

    def heal_generation(self) -> int:
        """How many heals the cluster has recorded."""
        return int(self.client.get(self._key("heal_generation")) or 0)

    def heal_epoch(self) -> str:
        """Heal generations of the shared Redis."""
        return "redis"

    def heal_history(self, limit: int) -> list[dict[str, Any]]:
        """The latest heals, newest first."""
        raw = self.client.lrange(self._key("heals"), 0, max(limit, 1) - 1)
        return [json.loads(item) for item in raw]


def _breaker_record(fields: dict[str, str]) -> BreakerRecord:
    opened_at = fields.get("opened_at")
    return BreakerRecord(
        state=fields.get("state", "closed"),
        failures=int(fields.get("failures", 0)),
        successes=int(fields.get("successes", 0)),
        opened_at=float(opened_at) if opened_at else None,
        probes=int(fields.get("probes", 0)),
    )
