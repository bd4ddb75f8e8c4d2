"""Node settings: one immutable object, built from the environment and validated at start-up."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many

from app.model_names import InvalidModelName, validate_model_name

# In TRUSTED_PROXIES: trust a proxy that reaches gunicorn over its unix socket.
UNIX_SOCKET_PEER = "unix"
GOOGLE_API_BASE = "https://generativelanguage.googleapis.com/v1beta"
# Connections a worker holds beyond its calls in flight: health checks, scrapes, idle
# keep-alives and the calls it refuses, so that a full worker still answers them at once.
CONNECTION_HEADROOM = 500
DEFAULT_MODELS = (
    "gemini-3.8-flash",
    "gemini-3.7-flash",
    "gemini-3.5-flash",
    "gemini-3.5-flash-lite",
    "gemini-3.1-flash-lite",
)
# Gemini's current embedding model (late 2026); embeddings never rotate to another model.
DEFAULT_EMBEDDING_MODELS = ("gemini-embedding-001",)


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable and is one line."""

    def __init__(self, var: str, problem: str) -> None:
        super().__init__(f"invalid setting {var}: {problem}")
        self.var = var


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _timeout_pair(raw: str) -> tuple[float, float]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError("must be SECONDS or CONNECT,READ seconds")
    connect, read = (_positive_float(p) for p in parts)
    return connect, read


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _models(raw: str) -> tuple[str, ...]:
    names = _csv(raw)
    if not names:
        raise ValueError("needs at least one model name")
    try:
        for name in names:
            validate_model_name(name)
    except InvalidModelName as exc:
        raise ValueError(str(exc)) from None
    if len(set(names)) != len(names):
        raise ValueError("lists a model twice")
    return names


def _base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL such as " + GOOGLE_API_BASE)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or credentials")
    return raw.rstrip("/")


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port between 1 and 65535")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise ValueError("must be 0 or a positive number of seconds")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or a positive integer")
    return value


def _percentile(raw: str) -> float:
    value = float(raw)
    if not 50.0 <= value < 100.0:
        raise ValueError("must be a percentile from 50 up to (not including) 100")
    return value


def _ratio(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a fraction from 0 to 1 (0.05 is 5 %)")
    return value


def _at_least_one(raw: str) -> float:
    value = float(raw)
    if not 1.0 <= value < float("inf"):
        raise ValueError("must be a number >= 1")
    return value


def _rate_limit(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    try:
        parse_many(value)
    except ValueError:
        raise ValueError("must look like 60/minute or 10/second;1000/hour") from None
    return value


def _networks(raw: str) -> tuple[str, ...]:
    networks = _csv(raw)
    for network in networks:
        if network == UNIX_SOCKET_PEER:
            continue
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{network!r} is not an IP address or network") from None
    return networks


def _state_url(raw: str) -> str:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "must be empty (state in the node) or a redis://, rediss:// or unix:// URL"
        )
    return value


def _worker_class(raw: str) -> str:
    value = raw.strip()
    if value not in ("sync", "gthread", "gevent"):
        raise ValueError("must be sync, gthread or gevent")
    return value


def _env(var: str, parse: Callable[[str], Any], **kw: Any) -> Any:
    """A settings field read from environment variable `var` through `parse`."""
    return field(metadata={"env": var, "parse": parse}, **kw)


@dataclass(frozen=True)
class Settings:
    """Everything the node is configured with. Secrets are kept out of repr()."""

    gemini_api_key: str = _env("GEMINI_API_KEY", str, default="", repr=False)
    # several projects' keys; GEMINI_API_KEY alone is a pool of one
    gemini_api_keys: tuple[str, ...] = _env("GEMINI_API_KEYS", _csv, default=(), repr=False)
    gemini_api_base: str = _env("GEMINI_API_BASE", _base_url, default=GOOGLE_API_BASE)
    gemini_models: tuple[str, ...] = _env("GEMINI_MODELS", _models, default=DEFAULT_MODELS)
    embedding_models: tuple[str, ...] = _env(
        "EMBEDDING_MODELS", _models, default=DEFAULT_EMBEDDING_MODELS
    )
    upstream_timeout: tuple[float, float] = _env(
        "UPSTREAM_TIMEOUT", _timeout_pair, default=(5.0, 110.0)
    )
    # 0: as many as MAX_CALLS_IN_FLIGHT, so every call in flight keeps its connection
    upstream_pool_size: int = _env("UPSTREAM_POOL_SIZE", _non_negative_int, default=0)
    port: int = _env("PORT", _port, default=8081)
    log_level: str = _env("LOG_LEVEL", _log_level, default="INFO")
    access_log: bool = _env("ACCESS_LOG", _bool, default=True)
    node_api_keys: tuple[str, ...] = _env("NODE_API_KEYS", _csv, default=(), repr=False)
    # who may call, with which models and limits (app.clients.registry); re-read on change
    clients_file: str = _env("CLIENTS_FILE", str, default="")
    max_request_bytes: int = _env("MAX_REQUEST_BYTES", _positive_int, default=20 * 1024 * 1024)
    simulator_mode: bool = _env("L104_SIMULATOR_MODE", _bool, default=False)
    # resilience
    request_deadline: float = _env("REQUEST_DEADLINE", _positive_float, default=120.0)
    max_retry_attempts: int = _env("MAX_RETRY_ATTEMPTS", _non_negative_int, default=3)
    retry_backoff_base: float = _env("RETRY_BACKOFF_BASE", _positive_float, default=0.5)
    retry_backoff_multiplier: float = _env("RETRY_BACKOFF_MULTIPLIER", _at_least_one, default=2.0)
    retry_backoff_max: float = _env("RETRY_BACKOFF_MAX", _positive_float, default=8.0)
    retry_budget_ratio: float = _env("RETRY_BUDGET_RATIO", _non_negative_float, default=0.2)
    retry_budget_min: int = _env("RETRY_BUDGET_MIN", _non_negative_int, default=10)
    # hedged attempts and stall detection (README, Hedged attempts)
    hedge_enabled: bool = _env("HEDGE_ENABLED", _bool, default=True)
    hedge_percentile: float = _env("HEDGE_PERCENTILE", _percentile, default=95.0)
    hedge_min_delay: float = _env("HEDGE_MIN_DELAY", _positive_float, default=0.5)
    hedge_budget: float = _env("HEDGE_BUDGET", _ratio, default=0.05)
    hedge_max: int = _env("HEDGE_MAX", _non_negative_int, default=1)
    # 0: adaptive (a multiple of each model's recent latency, between a floor and a cap)
    upstream_stall_timeout: float = _env("UPSTREAM_STALL_TIMEOUT", _non_negative_float, default=0.0)
    stream_idle_timeout: float = _env("STREAM_IDLE_TIMEOUT", _positive_float, default=60.0)
    # generateContent sent upstream as streamGenerateContent and assembled (app.upstream.assembly)
    unary_as_stream: bool = _env("UNARY_AS_STREAM", _bool, default=True)
    circuit_breaker_threshold: int = _env("CIRCUIT_BREAKER_THRESHOLD", _positive_int, default=5)
    circuit_breaker_timeout: float = _env("CIRCUIT_BREAKER_TIMEOUT", _positive_float, default=60.0)
    circuit_breaker_probes: int = _env("CIRCUIT_BREAKER_PROBES", _positive_int, default=3)
    http_client_error_threshold: int = _env(
        "HTTP_CLIENT_ERROR_THRESHOLD", _positive_int, default=10
    )
    # seconds a key Gemini refused stays out of the pool before it is tried again
    key_probe_interval: float = _env("KEY_PROBE_INTERVAL", _positive_float, default=300.0)
    model_cooldown_seconds: float = _env("MODEL_COOLDOWN_SECONDS", _positive_float, default=30.0)
    allow_unlisted_models: bool = _env("ALLOW_UNLISTED_MODELS", _bool, default=False)
    auto_heal_enabled: bool = _env("AUTO_HEAL_ENABLED", _bool, default=True)
    auto_heal_error_threshold: int = _env("AUTO_HEAL_ERROR_THRESHOLD", _positive_int, default=20)
    auto_heal_window: float = _env("AUTO_HEAL_WINDOW", _positive_float, default=60.0)
    auto_heal_min_interval: float = _env(
        "AUTO_HEAL_MIN_INTERVAL", _non_negative_float, default=60.0
    )
    admin_token: str = _env("ADMIN_TOKEN", str, default="", repr=False)
    metrics_token: str = _env("METRICS_TOKEN", str, default="", repr=False)
    rate_limit: str = _env("RATE_LIMIT", _rate_limit, default="")
    trusted_proxies: tuple[str, ...] = _env("TRUSTED_PROXIES", _networks, default=())
    state_url: str = _env("STATE_URL", _state_url, default="")
    state_timeout: float = _env("STATE_TIMEOUT", _positive_float, default=0.05)
    state_dir: str = _env("L104_STATE_DIR", str, default="")
    # worker healing (gunicorn hooks and the watchdog)
    enable_watchdog: bool = _env("ENABLE_WATCHDOG_ENV", _bool, default=True)
    watchdog_interval: float = _env("WATCHDOG_INTERVAL", _positive_float, default=30.0)
    watchdog_failure_threshold: int = _env("WATCHDOG_FAILURE_THRESHOLD", _positive_int, default=3)
    watchdog_exit_on_failure: bool = _env("WATCHDOG_EXIT_ON_FAILURE", _bool, default=True)
    watchdog_max_rss_mb: int = _env("WATCHDOG_MAX_RSS_MB", _positive_int, default=512)
    watchdog_error_ratio: float = _env("WATCHDOG_ERROR_RATIO", _positive_float, default=0.5)
    worker_max_failures: int = _env("WORKER_MAX_FAILURES", _positive_int, default=50)
    worker_failure_window: float = _env("WORKER_FAILURE_WINDOW", _positive_float, default=60.0)
    worker_min_age: float = _env("WORKER_MIN_AGE", _non_negative_float, default=30.0)
    # gunicorn (read by gunicorn.conf.py)
    host: str = _env("HOST", str, default="127.0.0.1")
    web_concurrency: int = _env("WEB_CONCURRENCY", _positive_int, default=2)
    gunicorn_worker_class: str = _env("GUNICORN_WORKER_CLASS", _worker_class, default="gevent")
    gunicorn_threads: int = _env("GUNICORN_THREADS", _positive_int, default=64)
    # capacity (see README, Capacity): calls admitted at once per worker, connections held
    max_calls_in_flight: int = _env("MAX_CALLS_IN_FLIGHT", _positive_int, default=1500)
    # 0: MAX_CALLS_IN_FLIGHT + CONNECTION_HEADROOM (gunicorn's worker_connections)
    worker_connections: int = _env("WORKER_CONNECTIONS", _non_negative_int, default=0)
    gunicorn_timeout: int = _env("GUNICORN_TIMEOUT", _positive_int, default=180)
    graceful_timeout: int = _env("GRACEFUL_TIMEOUT", _positive_int, default=150)

    def __post_init__(self) -> None:
        if len(set(self.gemini_api_keys)) != len(self.gemini_api_keys):
            raise SettingsError("GEMINI_API_KEYS", "lists a key twice")
        both = sorted(set(self.gemini_models) & set(self.embedding_models))
        if both:
            raise SettingsError(
                "EMBEDDING_MODELS", f"{', '.join(both)} is also in GEMINI_MODELS; list it once"
            )
        if not self.upstream_pool_size:
            object.__setattr__(self, "upstream_pool_size", self.max_calls_in_flight)
        if not self.worker_connections:
            connections = self.max_calls_in_flight + CONNECTION_HEADROOM
            object.__setattr__(self, "worker_connections", connections)
        elif self.worker_connections <= self.max_calls_in_flight:
            raise SettingsError(
                "WORKER_CONNECTIONS",
                f"must be above MAX_CALLS_IN_FLIGHT ({self.max_calls_in_flight}), or calls past "
                "the limit would wait for a connection instead of being refused",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from environment variables; raise SettingsError naming a bad one."""
        values: dict[str, Any] = {}
        if "GEMINI_MODELS" not in environ and environ.get("GEMINI_MODEL", "").strip():
            environ = {**environ, "GEMINI_MODELS": environ["GEMINI_MODEL"]}
        for f in dataclasses.fields(cls):
            var = f.metadata["env"]
            raw = environ.get(var)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                reason = str(exc)
                if "invalid literal" in reason or "could not convert" in reason:
                    reason = f"{raw!r} is not a number"
                raise SettingsError(var, reason) from None
        return cls(**values)

    @property
    def upstream_keys(self) -> tuple[str, ...]:
        """The pool of upstream keys: GEMINI_API_KEYS, else GEMINI_API_KEY alone."""
        return self.gemini_api_keys or (self.gemini_api_key,)

    @property
    def served_models(self) -> tuple[str, ...]:
        """Every model the node tracks: the rotation list, then the embedding models."""
        return self.gemini_models + self.embedding_models

    @property
    def upstream_kind(self) -> str:
        """Which upstream is configured: google, simulator or custom."""
        if self.simulator_mode:
            return "simulator"
        host = urlsplit(self.gemini_api_base).hostname or ""
        return "google" if host.endswith("googleapis.com") else "custom"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs, metrics or responses."""
        values = (
            self.gemini_api_key,
            *self.gemini_api_keys,
            self.admin_token,
            self.metrics_token,
            *self.node_api_keys,
        )
        return tuple(s for s in values if s)


def env_vars() -> frozenset[str]:
    """Every environment variable the node reads (GEMINI_MODEL too)."""
    names = {str(f.metadata["env"]) for f in dataclasses.fields(Settings)}
    return frozenset(names | {"GEMINI_MODEL"})
