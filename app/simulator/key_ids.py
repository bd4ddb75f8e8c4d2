"""Key ids: how the simulator names an API key wherever it shows one.

The node computes the same id with the same function and constant, so an id in the node's
logs and metrics matches the simulator's `/_sim/stats`, `/_sim/faults` and `/_sim/quotas`.
A key itself is never shown.
"""

from __future__ import annotations

import hashlib
import hmac

KEY_ID_SECRET = b"l104-key-id"


def key_id(key: str) -> str:
    """ "key-" and the first 8 hex digits of HMAC-SHA256(b"l104-key-id", key)."""
    digest = hmac.new(KEY_ID_SECRET, key.encode(), hashlib.sha256).hexdigest()
    return "key-" + digest[:8]
