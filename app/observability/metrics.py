"""The node's Prometheus metrics (prefix `l104_`).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before this module is imported, so every
worker writes its values to files there and a scrape sums them node-wide. Label values are
bounded: models come only from the configured list, endpoints from the route table.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# `api`: gemini, openai, legacy or node (app.surfaces)
REQUESTS = Counter("l104_requests", "Client requests served", ["api", "endpoint", "code"])
REQUEST_SECONDS = Histogram(
    "l104_request_duration_seconds",
    "Client request latency",
    ["api", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "l104_requests_in_flight", "Client requests being served", multiprocess_mode="livesum"
)
CALLS_IN_FLIGHT = Gauge(
    "l104_calls_in_flight",
    "Client calls admitted and not yet finished (streams until their last byte)",
    multiprocess_mode="livesum",
)
CALLS_IN_FLIGHT_LIMIT = Gauge(
    "l104_calls_in_flight_limit",
    "Calls the live workers admit at once (MAX_CALLS_IN_FLIGHT per worker)",
    multiprocess_mode="livesum",
)
REFUSED = Counter(
    "l104_refused_requests",
    "Client calls refused before any upstream call, by reason",
    ["reason"],
)
OVERLOADS = Counter(
    "l104_worker_overloads", "Times a worker reached MAX_CALLS_IN_FLIGHT and began refusing"
)
UPSTREAM_CALLS = Counter(
    "l104_upstream_calls", "Upstream calls by API, model and outcome", ["api", "model", "outcome"]
)
UPSTREAM_SECONDS = Histogram(
    "l104_upstream_duration_seconds", "Upstream call latency", ["model"], buckets=LATENCY_BUCKETS
)
# `client`: a client id of CLIENTS_FILE or NODE_API_KEYS' key-<8 hex> (never a key or hash)
CLIENT_REQUESTS = Counter(
    "l104_client_requests", "Answers to each client by API and status", ["client", "api", "code"]
)
CLIENT_TOKENS = Counter(
    "l104_client_tokens",
    "Tokens the upstream reported for each client's calls, by model and kind",
    ["client", "model", "kind"],
)
CLIENT_REFUSALS = Counter(
    "l104_client_refusals", "Calls refused by a client's own limit", ["client", "limit"]
)
HEDGES = Counter(
    "l104_hedges",
    "Hedged attempts by the model first tried and outcome (won, lost, failed, skipped_budget, "
    "no_route)",
    ["model", "outcome"],
)
HEDGE_DELAY = Gauge(
    "l104_hedge_delay_seconds",
    "The hedge delay now, per model and call kind (the highest of the live workers)",
    ["model", "kind"],
    multiprocess_mode="livemax",
)
STALLS = Counter(
    "l104_upstream_stalls",
    "Attempts abandoned after the stall timeout (before an answer or a stream's first event)",
    ["model"],
)
# `key`: an upstream key's id (app.upstream.key_pool), never the key; bounded by GEMINI_API_KEYS
KEY_CALLS = Counter(
    "l104_upstream_key_calls", "Upstream calls by upstream key id and outcome", ["key", "outcome"]
)
KEYS_DISABLED = Counter(
    "l104_api_keys_disabled", "Times Gemini refused an upstream key and it left the pool", ["key"]
)
CIRCUIT_BREAKS = Counter("l104_circuit_breaks", "Times a model's circuit breaker opened", ["model"])
BREAKER_TRANSITIONS = Counter(
    "l104_circuit_breaker_transitions", "Breaker state changes", ["model", "to_state"]
)
RETRY_SUCCESSES = Counter(
    "l104_retry_successes", "Upstream calls that succeeded after retrying", ["model"]
)
CONNECTION_RESETS = Counter(
    "l104_connection_resets", "Times the HTTP client and its pool were replaced", ["reason"]
)
MODEL_ROTATIONS = Counter(
    "l104_model_rotations",
    "Client requests answered by another model than the first tried",
    ["from_model", "to_model"],
)
COOLDOWNS = Counter("l104_model_cooldowns", "Cooldowns started after a 429", ["model", "reason"])
AUTO_HEALS = Counter("l104_auto_heals", "Healing triggered by the node itself", ["level"])
HEALS = Counter("l104_heals", "Heals by level and trigger", ["level", "trigger"])
HEALS_HELD_BACK = Counter(
    "l104_heals_held_back",
    "Automatic heals that left node-wide state alone (AUTO_HEAL_MIN_INTERVAL)",
    ["trigger"],
)
WORKER_RECYCLES = Counter("l104_worker_recycles", "Workers recycled", ["reason"])
RATE_LIMITED = Counter("l104_rate_limited_requests", "Requests refused by the rate limit")
STATE_BACKEND_DEGRADED = Counter(
    "l104_state_backend_degraded", "Times a worker fell back from Redis to local state"
)
STATE_BACKEND_LOCAL = Gauge(
    "l104_state_backend_local",
    "1 while a worker serves from local state instead of Redis",
    multiprocess_mode="livemax",
)
HTTP_CLIENT_ERRORS = Gauge(
    "l104_http_client_errors",
    "Upstream connection errors counted toward a client reset",
    multiprocess_mode="livesum",
)
LAST_HTTP_RESET = Gauge(
    "l104_last_http_reset_timestamp_seconds",
    "When an HTTP client was last replaced",
    multiprocess_mode="max",
)


class ModelLabels:
    """Model names allowed as label values; anything else is counted as `unlisted`."""

    def __init__(self) -> None:
        self.configured: frozenset[str] = frozenset()

    def __call__(self, model: str) -> str:
        return model if model in self.configured else "unlisted"


model_label = ModelLabels()
