"""The simulator's key pool: several keys, keys added at run time, per-key quotas on a clock
the tests move, per-key faults, counters by key id, and no key in any answer or log line."""

from __future__ import annotations

import hashlib
import hmac
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from app.simulator import SimulatorServer, start_in_thread
from app.simulator.key_ids import key_id
from tests.support.simulator_client import SimulatorControl

# Every key holds this mark, so one substring test finds any key in any text.
MARK = "s3cr3t"
KEY1 = f"sim-{MARK}-key-one"
KEY2 = f"sim-{MARK}-key-two"
LATE = f"sim-{MARK}-key-added-later"
UNKNOWN = f"sim-{MARK}-key-unknown"
MODEL = "gemini-3.8-flash"
OTHER = "gemini-3.5-flash"
EMBED = "gemini-embedding-001"
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
CONTENT = {"content": {"parts": [{"text": "Hello there"}]}}
HELLO = [{"role": "user", "content": "Hello there"}]
PACIFIC = ZoneInfo("America/Los_Angeles")
ROOT = Path(__file__).resolve().parents[1]
BAD_KEY_ERROR = {
    "code": 400,
    "status": "INVALID_ARGUMENT",
    "message": "API key not valid. Please pass a valid API key.",
    "details": [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
        }
    ],
}


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    """One simulator that knows two keys, for the whole module."""
    sim = start_in_thread(api_keys=[KEY1, KEY2])
    yield sim
    sim.shutdown()


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorControl:
    """The module's simulator, reset before each test."""
    control = SimulatorControl(server.url, KEY1)
    control.reset()
    return control


def checked(response: requests.Response) -> requests.Response:
    """`response`, once it is known to hold no key."""
    assert MARK not in response.text
    return response


def native(
    sim: SimulatorControl,
    method: str = "generateContent",
    model: str = MODEL,
    key: str | None = KEY1,
    body: Any = PROMPT,
) -> requests.Response:
    """A native model call with `key` in x-goog-api-key."""
    headers = {} if key is None else {"x-goog-api-key": key}
    url = f"{sim.api_base}/models/{model}:{method}"
    return checked(requests.post(url, json=body, headers=headers, timeout=5))


def native_get(sim: SimulatorControl, path: str, key: str = KEY1) -> requests.Response:
    """A native GET (`models`, `models/X`) with `key` in ?key=."""
    return checked(requests.get(f"{sim.api_base}/{path}", params={"key": key}, timeout=5))


def openai(
    sim: SimulatorControl, endpoint: str, key: str = KEY1, body: Any = None
) -> requests.Response:
    """An OpenAI-surface call with `key` as the bearer token (POST when there is a body)."""
    url = f"{sim.openai_base}/{endpoint}"
    headers = {"Authorization": f"Bearer {key}"}
    if body is None:
        return checked(requests.get(url, headers=headers, timeout=5))
    return checked(requests.post(url, json=body, headers=headers, timeout=5))


def chat(sim: SimulatorControl, key: str = KEY1, model: str = MODEL) -> requests.Response:
    return openai(sim, "chat/completions", key, {"model": model, "messages": HELLO})


def error_of(response: requests.Response) -> dict[str, Any]:
    """The native error object of an error answer."""
    assert response.text.startswith('{\n  "error": {')
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


def array_error(response: requests.Response) -> dict[str, Any]:
    """The native error inside the OpenAI surface's one-element array."""
    body = response.json()
    assert isinstance(body, list) and len(body) == 1 and list(body[0]) == ["error"]
    error: dict[str, Any] = body[0]["error"]
    assert error["code"] == response.status_code
    return error


def quota_details(error: dict[str, Any]) -> tuple[str, dict[str, str], float]:
    """(quotaId, quotaDimensions, retry delay in seconds) of a 429's details."""
    quota, retry = error["details"]
    assert quota["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
    assert retry["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    (violation,) = quota["violations"]
    delay = retry["retryDelay"]
    assert re.fullmatch(r"[0-9]+(\.[0-9]{1,3})?s", delay), delay
    assert error["message"].endswith(f"Please retry in {delay}.")
    return violation["quotaId"], violation["quotaDimensions"], float(delay[:-1])


def control(sim: SimulatorControl, method: str, endpoint: str, body: Any = None) -> Any:
    """A control call: its JSON answer, checked to hold no key."""
    url = f"{sim.url}/_sim/{endpoint}"
    response = checked(requests.request(method, url, json=body, timeout=5))
    assert response.status_code == 200, response.text
    return response.json()


def refused(sim: SimulatorControl, endpoint: str, body: Any) -> str:
    """The message of a control POST refused with 400."""
    response = checked(requests.post(f"{sim.url}/_sim/{endpoint}", json=body, timeout=5))
    assert response.status_code == 400
    message: str = error_of(response)["message"]
    return message


# --- key ids and several keys ---------------------------------------------------------------


def test_key_id_is_the_hmac_the_node_computes() -> None:
    digest = hmac.new(b"l104-key-id", KEY1.encode(), hashlib.sha256).hexdigest()
    assert key_id(KEY1) == f"key-{digest[:8]}"
    assert re.fullmatch(r"key-[0-9a-f]{8}", key_id(KEY2)) and key_id(KEY1) != key_id(KEY2)


def test_every_listed_key_is_accepted_on_both_surfaces(sim: SimulatorControl) -> None:
    for key in (KEY1, KEY2):
        assert native(sim, key=key).status_code == 200
        assert native_get(sim, "models", key).status_code == 200
        assert chat(sim, key).status_code == 200
        assert openai(sim, "models", key).status_code == 200
    wrong = native(sim, key=UNKNOWN)
    assert wrong.status_code == 400 and error_of(wrong) == BAD_KEY_ERROR
    wrong = chat(sim, UNKNOWN)
    assert wrong.status_code == 400 and array_error(wrong) == BAD_KEY_ERROR
    assert native(sim, key=None).status_code == 403
    log = sim.requests()
    assert [(e["api_key"], e["key_id"]) for e in log[-3:]] == [
        (UNKNOWN, key_id(UNKNOWN)),
        (UNKNOWN, key_id(UNKNOWN)),
        (None, None),
    ]
    assert control(sim, "GET", "keys") == {"keys": [key_id(KEY1), key_id(KEY2)]}


def test_one_api_key_is_a_pool_of_one() -> None:
    with SimulatorServer(api_key=KEY1, api_keys=[KEY2, KEY1]) as single:
        assert single.state.keys.ids() == [key_id(KEY1), key_id(KEY2)]
    lone = start_in_thread(api_key=KEY1)
    try:
        sim = SimulatorControl(lone.url, KEY1)
        assert native(sim).status_code == 200
        assert native(sim, key=KEY2).status_code == 400
        assert control(sim, "GET", "keys") == {"keys": [key_id(KEY1)]}
    finally:
        lone.shutdown()


def test_keys_added_at_run_time_last_until_reset(sim: SimulatorControl) -> None:
    assert native(sim, key=LATE).status_code == 400
    assert sim.add_keys(LATE) == [key_id(KEY1), key_id(KEY2), key_id(LATE)]
    assert native(sim, key=LATE).status_code == 200
    assert chat(sim, LATE).status_code == 200
    assert sim.add_keys(LATE, KEY1) == [key_id(KEY1), key_id(KEY2), key_id(LATE)]  # no twice
    sim.reset()
    assert native(sim, key=LATE).status_code == 400  # forgotten
    assert native(sim, key=KEY2).status_code == 200  # the keys given at start stay
    assert control(sim, "GET", "keys") == {"keys": [key_id(KEY1), key_id(KEY2)]}
    bad_keys: list[Any] = [[], "k", [""], ["a b"], [1], None]
    for bad in bad_keys:
        assert "keys" in refused(sim, "keys", {"keys": bad})
    assert "keys[0]" in refused(sim, "keys", {"keys": [f"{MARK},other"]})  # never echoed
    assert refused(sim, "keys", {"keys": ["k"], "more": 1}).startswith("the body must be")


def test_keys_added_to_an_open_simulator_close_it_until_reset() -> None:
    open_sim = start_in_thread()
    try:
        sim = SimulatorControl(open_sim.url, KEY1)
        assert native(sim, key=None).status_code == 200
        sim.add_keys(LATE)
        assert native(sim, key=None).status_code == 403
        assert native(sim, key=LATE).status_code == 200
        sim.reset()
        assert native(sim, key=UNKNOWN).status_code == 200
    finally:
        open_sim.shutdown()


# --- quotas -------------------------------------------------------------------------------


def test_per_minute_quota_refuses_past_n_until_the_window_ends(sim: SimulatorControl) -> None:
    listed = sim.quota(KEY1, MODEL, per_minute=3)
    assert listed == {
        "key": key_id(KEY1),
        "model": MODEL,
        "per_minute": 3,
        "per_day": None,
        "used": {},
    }
    assert [native(sim).status_code for _ in range(3)] == [200, 200, 200]
    response = native(sim)
    assert response.status_code == 429
    error = error_of(response)
    assert error["status"] == "RESOURCE_EXHAUSTED"
    quota_id, dimensions, delay = quota_details(error)
    assert "PerMinute" in quota_id and quota_id.startswith("GenerateRequestsPerMinute")
    assert dimensions == {"location": "global", "model": MODEL}
    assert error["details"][0]["violations"][0]["quotaValue"] == "3"
    assert 50 < delay <= 60
    assert native(sim).status_code == 429  # a refused call is not counted
    (used,) = sim.quotas()
    assert used["used"] == {MODEL: {"minute": 3, "day": 3}}
    sim.advance_clock(30)
    _, _, later = quota_details(error_of(native(sim)))
    assert delay - 31 < later <= delay - 30  # the same window, 30 s on
    sim.advance_clock(later)  # waiting the delay given is enough
    assert native(sim).status_code == 200
    assert sim.quotas()[0]["used"] == {MODEL: {"minute": 1, "day": 4}}


def test_per_day_quota_refuses_until_midnight_pacific(sim: SimulatorControl) -> None:
    # Move the clock to noon in California, far from both ends of the day.
    now = sim.advance_clock(0)["now"]
    today = datetime.fromtimestamp(now, PACIFIC).date()
    noon = datetime.combine(today + timedelta(days=1), clock_time(12), PACIFIC).timestamp()
    midnight = datetime.combine(today + timedelta(days=2), clock_time(0), PACIFIC).timestamp()
    assert sim.advance_clock(noon - now)["now"] >= noon
    sim.quota(KEY1, per_minute=100, per_day=2)
    assert [native(sim).status_code for _ in range(2)] == [200, 200]
    response = native(sim)
    assert response.status_code == 429
    quota_id, dimensions, delay = quota_details(error_of(response))
    assert quota_id == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert dimensions["model"] == MODEL
    expected = midnight - noon
    assert expected - 5 < delay <= expected
    sim.advance_clock(delay)
    assert native(sim).status_code == 200  # a new day


def test_quotas_are_per_key_and_per_model(sim: SimulatorControl) -> None:
    sim.quota(KEY1, per_minute=1)  # "*": each model of KEY1 gets one call a minute
    sim.quota(KEY1, OTHER, per_minute=2)  # the model's own quota wins over "*"
    assert native(sim).status_code == 200
    assert native(sim).status_code == 429
    assert [native(sim, model=OTHER).status_code for _ in range(3)] == [200, 200, 429]
    assert native(sim, model="gemini-3.5-flash-lite").status_code == 200
    assert [native(sim, key=KEY2).status_code for _ in range(5)] == [200] * 5  # no quota
    by_model = {q["model"]: q["used"] for q in sim.quotas()}
    assert by_model == {
        "*": {MODEL: {"minute": 1, "day": 1}, "gemini-3.5-flash-lite": {"minute": 1, "day": 1}},
        OTHER: {OTHER: {"minute": 2, "day": 2}},
    }
    again = sim.quota(KEY1, per_day=5)  # replaces the "*" quota, counts start again
    assert again["per_minute"] is None and again["used"] == {}
    assert native(sim).status_code == 200


def test_quotas_count_every_model_method_but_not_model_listing(sim: SimulatorControl) -> None:
    sim.quota(KEY1, per_minute=1)
    assert native(sim).status_code == 200
    assert native(sim, "streamGenerateContent").status_code == 429
    assert native(sim, "countTokens").status_code == 429
    assert chat(sim).status_code == 429
    assert native(sim, "embedContent", EMBED, body=CONTENT).status_code == 200
    batch = {"requests": [{"model": f"models/{EMBED}", **CONTENT}]}
    assert native(sim, "batchEmbedContents", EMBED, body=batch).status_code == 429
    embeddings = openai(sim, "embeddings", body={"model": EMBED, "input": "Hello"})
    assert embeddings.status_code == 429
    for path in ("models", f"models/{MODEL}"):
        assert native_get(sim, path).status_code == 200
        assert openai(sim, path).status_code == 200


def test_a_quota_on_the_openai_surface_answers_an_array(sim: SimulatorControl) -> None:
    sim.quota(KEY2, MODEL, per_minute=1)
    assert chat(sim, KEY2).status_code == 200
    response = chat(sim, KEY2)
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert response.text.startswith('[{\n  "error": {')
    error = array_error(response)
    quota_id, dimensions, delay = quota_details(error)
    assert "PerMinute" in quota_id and dimensions["model"] == MODEL and 0 < delay <= 60
    assert chat(sim, KEY1).status_code == 200


def test_quota_and_clock_bodies_are_checked(sim: SimulatorControl) -> None:
    assert "key must be" in refused(sim, "quotas", {"per_minute": 1})
    assert "key must be" in refused(sim, "quotas", {"key": "", "per_minute": 1})
    assert "model must be" in refused(sim, "quotas", {"key": KEY1, "model": 3, "per_minute": 1})
    assert "per_minute must be" in refused(sim, "quotas", {"key": KEY1, "per_minute": -1})
    assert "per_day must be" in refused(sim, "quotas", {"key": KEY1, "per_day": "5"})
    assert "per_day must be" in refused(sim, "quotas", {"key": KEY1, "per_day": True})
    assert "give per_minute" in refused(sim, "quotas", {"key": KEY1})
    assert "unknown field(s): rpm" in refused(sim, "quotas", {"key": KEY1, "rpm": 1})
    assert "valid JSON" in refused(sim, "quotas", None)
    assert "never goes back" in refused(sim, "clock", {"advance": -1})
    assert "number of seconds" in refused(sim, "clock", {"advance": "60s"})
    assert refused(sim, "clock", {"offset": 5}).startswith("the body must be")
    assert sim.quotas() == []
    assert control(sim, "GET", "clock")["offset"] == 0


# --- per-key faults -----------------------------------------------------------------------


def test_a_key_fault_applies_to_that_key_only(sim: SimulatorControl) -> None:
    sim.fault("429", key=KEY1)
    response = native(sim)
    assert response.status_code == 429
    assert quota_details(error_of(response))[2] == 26
    assert native(sim, key=KEY2).status_code == 200
    assert chat(sim, KEY1).status_code == 429 and array_error(chat(sim, KEY1))["code"] == 429
    assert chat(sim, KEY2).status_code == 200
    (shown,) = control(sim, "GET", "faults")
    assert shown == {
        "key": key_id(KEY1),
        "model": "*",
        "fault": "429",
        "remaining": None,
        "params": {"retry_delay": "26s", "no_details": False},
    }


def test_key_faults_win_over_model_faults(sim: SimulatorControl) -> None:
    sim.fault("429")
    sim.fault("504", MODEL)
    sim.fault("500", key=KEY1)
    sim.fault("503", MODEL, key=KEY1)
    assert native(sim).status_code == 503
    assert native(sim, model=OTHER).status_code == 500
    assert native(sim, key=KEY2).status_code == 504
    assert native(sim, key=KEY2, model=OTHER).status_code == 429
    assert len(control(sim, "GET", "faults")) == 4
    assert "key must be" in refused(sim, "faults", {"fault": "500", "key": ""})


def test_invalid_key_fault_everywhere_like_a_bad_key(sim: SimulatorControl) -> None:
    sim.fault("invalid_key", key=KEY1)
    for response in (native(sim), native_get(sim, "models"), native_get(sim, f"models/{MODEL}")):
        assert response.status_code == 400 and error_of(response) == BAD_KEY_ERROR
    for response in (chat(sim), openai(sim, "models"), openai(sim, f"models/{MODEL}")):
        assert response.status_code == 400 and array_error(response) == BAD_KEY_ERROR
    assert native(sim, model="gemini-0-nope").status_code == 400  # the key comes first
    assert native(sim, key=KEY2).status_code == 200
    assert sim.stats()["faults_served"] == 7


def test_permission_denied_fault_names_the_key_by_id_only(sim: SimulatorControl) -> None:
    sim.fault("permission_denied", key=KEY2, count=3)
    expected = {
        "code": 403,
        "status": "PERMISSION_DENIED",
        "message": f"Permission denied: Consumer 'api_key:{key_id(KEY2)}' has been suspended.",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CONSUMER_SUSPENDED",
                "domain": "googleapis.com",
            }
        ],
    }
    assert error_of(native(sim, key=KEY2)) == expected
    assert error_of(native_get(sim, "models", KEY2)) == expected
    assert array_error(chat(sim, KEY2)) == expected
    assert native(sim, key=KEY2).status_code == 200  # count=3 used up
    assert native(sim).status_code == 200


def test_key_faults_apply_on_an_open_simulator_too() -> None:
    open_sim = start_in_thread()
    try:
        sim = SimulatorControl(open_sim.url, KEY1)
        sim.fault("permission_denied", key=UNKNOWN)
        assert native(sim, key=UNKNOWN).status_code == 403
        assert native(sim, key=KEY1).status_code == 200
    finally:
        open_sim.shutdown()


# --- counters and reset -------------------------------------------------------------------


def test_counters_by_key_and_model(sim: SimulatorControl) -> None:
    native(sim)
    native(sim, "countTokens")
    native(sim, key=KEY2, model=OTHER)
    chat(sim, KEY2)
    native(sim, key=UNKNOWN)  # refused, still counted under its id
    native_get(sim, "models", KEY2)  # no model
    native(sim, key=None)  # no key: not in by_key
    assert sim.by_key() == {key_id(KEY1): 2, key_id(KEY2): 3, key_id(UNKNOWN): 1}
    assert sim.stats()["by_key_model"] == {
        key_id(KEY1): {MODEL: 2},
        key_id(KEY2): {OTHER: 1, MODEL: 1},
        key_id(UNKNOWN): {MODEL: 1},
    }
    assert sim.stats()["total"] == 7
    entry = sim.requests()[3]
    assert (entry["auth"], entry["api_key"], entry["key_id"]) == ("bearer", KEY2, key_id(KEY2))


def test_reset_forgets_quotas_key_faults_clock_and_late_keys(sim: SimulatorControl) -> None:
    sim.add_keys(LATE)
    sim.quota(LATE, per_minute=0)
    sim.quota(KEY1, per_minute=0)
    sim.fault("503", key=KEY2)
    assert sim.advance_clock(3600)["offset"] == 3600
    assert native(sim).status_code == 429
    assert native(sim, key=KEY2).status_code == 503
    native(sim, key=LATE)
    sim.reset()
    assert sim.quotas() == [] and control(sim, "GET", "faults") == []
    assert control(sim, "GET", "clock")["offset"] == 0
    assert sim.by_key() == {} and sim.stats()["by_key_model"] == {}
    assert native(sim).status_code == 200 and native(sim, key=KEY2).status_code == 200
    assert native(sim, key=LATE).status_code == 400


def test_control_answers_show_key_ids_only(sim: SimulatorControl) -> None:
    late = key_id(LATE)
    sim.add_keys(LATE)
    assert control(sim, "POST", "quotas", {"key": LATE, "per_day": 9})["key"] == late
    assert control(sim, "POST", "faults", {"fault": "503", "key": LATE})["key"] == late
    native(sim, key=LATE)
    assert native(sim, key=UNKNOWN).status_code == 400
    # `control` checks that no answer holds a key; each shows the ids instead.
    assert late in control(sim, "GET", "keys")["keys"]
    assert control(sim, "GET", "quotas")[0]["key"] == late
    assert control(sim, "GET", "faults")[0]["key"] == late
    assert set(control(sim, "GET", "stats")["by_key"]) == {late, key_id(UNKNOWN)}
    assert control(sim, "POST", "clock", {"advance": 1})["offset"] == 1


# --- no key in the simulator's own output --------------------------------------------------


def _raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_the_cli_takes_api_keys_and_never_logs_a_key(tmp_path: Path) -> None:
    log = tmp_path / "simulator.log"
    args = [sys.executable, "-m", "app.simulator", "--port", "0", "--verbose"]
    args += ["--api-key", KEY1, "--api-keys", f"{KEY2}, {LATE}"]
    with (
        log.open("w") as stderr,
        subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc,
    ):
        try:
            assert proc.stdout is not None
            match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", proc.stdout.readline())
            assert match
            sim = SimulatorControl(match.group(1), KEY1)
            assert native(sim, key=KEY2).status_code == 200
            assert native_get(sim, "models", LATE).status_code == 200
            assert native_get(sim, "models", UNKNOWN).status_code == 400
            assert chat(sim, KEY1).status_code == 200
            bad_line = f"GET /v1beta/models?key={KEY1} HTTP/1.1 x\r\n\r\n".encode()
            answer = _raw_exchange(int(match.group(2)), bad_line)
            assert answer.startswith(b"HTTP/1.1 400 ") and MARK.encode() not in answer
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "GET /v1beta/models?key=" + key_id(LATE) in text  # logged, by id
    assert key_id(KEY1) in text and MARK not in text


def test_the_cli_refuses_a_bad_key_without_printing_it() -> None:
    args = [sys.executable, "-m", "app.simulator", "--api-keys", f"ok,{MARK} bad"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "keys[1]" in done.stderr and MARK not in done.stderr + done.stdout
