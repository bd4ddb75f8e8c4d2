"""The pool of upstream Gemini keys (GEMINI_API_KEYS): each named by an id that does not
reveal it, so logs, metrics, status and state can say which key without holding it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

# The HMAC key of the ids: a constant, so that every node (and the simulator) names a key
# the same way, and its id can be shared through Redis.
KEY_ID_SALT = b"l104-key-id"


def key_id(secret: str) -> str:
    """`key-` + 8 hex digits of HMAC-SHA256 of the key: stable, short, not reversible."""
    digest = hmac.new(KEY_ID_SALT, secret.encode(), hashlib.sha256).hexdigest()
    return f"key-{digest[:8]}"


@dataclass(frozen=True)
class UpstreamKey:
    """One upstream key; only `id` is ever shown."""

    id: str
    secret: str = field(repr=False)


class KeyPool:
    """The node's upstream keys, in the order configured."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.keys = tuple(UpstreamKey(key_id(s), s) for s in secrets)
        self.by_id = {k.id: k for k in self.keys}

    def __len__(self) -> int:
        return len(self.keys)

    def route(self, model: str, key: UpstreamKey) -> str:
        """The state name of a (model, key) pair: its breaker and cooldown. A pool of one
        keeps the model's own name, so a one-key node's state, metrics and dashboards are
        what they were before keys were pooled."""
        return model if len(self.keys) == 1 else f"{model}@{key.id}"

    def routes(self, models: Sequence[str]) -> tuple[str, ...]:
        """The state names of every (model, key) pair of `models`."""
        return tuple(self.route(m, k) for m in models for k in self.keys)

    def usable(self, resting: Mapping[str, object]) -> list[UpstreamKey]:
        """The keys not resting as refused (`resting`: the store's cooldowns by name)."""
        return [k for k in self.keys if self.rest_name(k) not in resting]

    @staticmethod
    def rest_name(key: UpstreamKey) -> str:
        """The state name under which a refused key rests (a cooldown) until its probe."""
        return f"key@{key.id}"


# The key the current upstream call is made with (set by the gateway around each attempt).
current_key: ContextVar[UpstreamKey | None] = ContextVar("l104_upstream_key", default=None)
