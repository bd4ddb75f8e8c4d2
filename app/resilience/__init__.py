"""Deciding what to do with a client's call: admission, rate limits, and the gateway's
deadline, model rotation, per-model cooldowns and circuit breakers."""
