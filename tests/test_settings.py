"""Settings: parsing, validation, and start-up refusing bad values with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.settings import (
    CONNECTION_HEADROOM,
    DEFAULT_MODELS,
    GOOGLE_API_BASE,
    Settings,
    SettingsError,
)
from tests.support.processes import ROOT


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.gemini_api_base == GOOGLE_API_BASE
    assert settings.gemini_models == DEFAULT_MODELS
    assert settings.port == 8081
    assert settings.node_api_keys == ()
    assert settings.upstream_kind == "google"


def test_capacity_defaults_follow_the_call_limit() -> None:
    default = Settings.from_env({})
    assert default.gunicorn_worker_class == "gevent"
    assert default.max_calls_in_flight == 1500
    assert default.upstream_pool_size == 1500  # a kept connection for every call in flight
    assert default.worker_connections == 1500 + CONNECTION_HEADROOM
    sized = Settings.from_env({"MAX_CALLS_IN_FLIGHT": "40"})
    assert (sized.upstream_pool_size, sized.worker_connections) == (40, 40 + CONNECTION_HEADROOM)
    explicit = Settings.from_env(
        {"MAX_CALLS_IN_FLIGHT": "40", "UPSTREAM_POOL_SIZE": "8", "WORKER_CONNECTIONS": "41"}
    )
    assert (explicit.upstream_pool_size, explicit.worker_connections) == (8, 41)


def test_embedding_models_are_their_own_list() -> None:
    default = Settings.from_env({})
    assert default.embedding_models == ("gemini-embedding-001",)
    assert default.served_models == (*DEFAULT_MODELS, "gemini-embedding-001")
    custom = Settings.from_env({"GEMINI_MODELS": "a", "EMBEDDING_MODELS": "e1,e2"})
    assert custom.served_models == ("a", "e1", "e2")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"GEMINI_MODELS": "a,b", "EMBEDDING_MODELS": "b"})
    assert caught.value.var == "EMBEDDING_MODELS" and "also in GEMINI_MODELS" in str(caught.value)


def test_worker_connections_must_leave_room_past_the_call_limit() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MAX_CALLS_IN_FLIGHT": "40", "WORKER_CONNECTIONS": "40"})
    assert caught.value.var == "WORKER_CONNECTIONS"
    assert "above MAX_CALLS_IN_FLIGHT (40)" in str(caught.value)


def test_values_from_environment() -> None:
    settings = Settings.from_env(
        {
            "GEMINI_API_KEY": "k",
            "GEMINI_API_BASE": "http://127.0.0.1:9/v1beta/",
            "GEMINI_MODELS": " gemini-a , gemini-b ",
            "UPSTREAM_TIMEOUT": "3,30",
            "PORT": "9000",
            "LOG_LEVEL": "debug",
            "NODE_API_KEYS": "a,b",
        }
    )
    assert settings.gemini_api_base == "http://127.0.0.1:9/v1beta"
    assert settings.gemini_models == ("gemini-a", "gemini-b")
    assert settings.upstream_timeout == (3.0, 30.0)
    assert settings.port == 9000
    assert settings.log_level == "DEBUG"
    assert settings.node_api_keys == ("a", "b")
    assert settings.upstream_kind == "custom"


def test_single_timeout_applies_to_connect_and_read() -> None:
    assert Settings.from_env({"UPSTREAM_TIMEOUT": "7"}).upstream_timeout == (7.0, 7.0)


def test_gemini_model_alone_is_a_one_model_list() -> None:
    assert Settings.from_env({"GEMINI_MODEL": "gemini-x"}).gemini_models == ("gemini-x",)
    both = {"GEMINI_MODEL": "gemini-x", "GEMINI_MODELS": "gemini-y"}
    assert Settings.from_env(both).gemini_models == ("gemini-y",)


@pytest.mark.parametrize(
    ("var", "value", "problem"),
    [
        ("UPSTREAM_TIMEOUT", "-1", "positive"),
        ("UPSTREAM_TIMEOUT", "abc", "not a number"),
        ("UPSTREAM_TIMEOUT", "1,2,3", "CONNECT,READ"),
        ("PORT", "70000", "between 1 and 65535"),
        ("PORT", "abc", "not a number"),
        ("GEMINI_MODELS", ",", "at least one"),
        ("GEMINI_MODELS", "../x", "letters, digits"),
        ("GEMINI_MODELS", "a,a", "twice"),
        ("EMBEDDING_MODELS", "../e", "letters, digits"),
        ("GEMINI_API_BASE", "ftp://x", "http(s) URL"),
        ("GEMINI_API_BASE", "https://x/v1beta?key=1", "query"),
        ("LOG_LEVEL", "loud", "DEBUG"),
        ("MAX_REQUEST_BYTES", "0", "positive integer"),
        ("WEB_CONCURRENCY", "two", "not a number"),
        ("GUNICORN_WORKER_CLASS", "eventlet", "sync, gthread or gevent"),
        ("L104_SIMULATOR_MODE", "maybe", "true or false"),
        ("STATE_URL", "http://127.0.0.1:6379", "redis://"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,nowhere", "not an IP address"),
        ("RATE_LIMIT", "lots", "60/minute"),
        ("MAX_CALLS_IN_FLIGHT", "0", "positive integer"),
        ("WORKER_CONNECTIONS", "-1", "0 or a positive integer"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({var: value})
    assert caught.value.var == var
    message = str(caught.value)
    assert message.startswith(f"invalid setting {var}: ")
    assert problem in message
    assert "\n" not in message


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "GEMINI_API_KEY": "sekrit-1",
            "NODE_API_KEYS": "sekrit-2,sekrit-3",
            "ADMIN_TOKEN": "sekrit-4",
            "METRICS_TOKEN": "sekrit-5",
        }
    )
    assert "sekrit" not in repr(settings)
    assert set(settings.secrets) == {f"sekrit-{n}" for n in range(1, 6)}


def test_gunicorn_refuses_to_start_with_one_clear_line() -> None:
    gunicorn = str(ROOT / ".venv" / "bin" / "gunicorn")
    if not (ROOT / ".venv" / "bin" / "gunicorn").exists():
        gunicorn = sys.executable.replace("python", "gunicorn")
    result = subprocess.run(
        [gunicorn, "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "UPSTREAM_TIMEOUT": "-5", "GEMINI_API_KEY": "x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "l104-node: invalid setting UPSTREAM_TIMEOUT: must be a positive number of seconds"
    )
    assert "Traceback" not in result.stdout + result.stderr
