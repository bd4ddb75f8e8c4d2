"""Clients of a real node (gunicorn, the simulator): recognised on every surface, models
outside a client's list refused before anything goes upstream, the file re-read on change,
a bad file refused at start."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import redis
import requests
from google import genai
from google.genai import types

from app.clients.registry import key_hash
from tests.conftest import running_node
from tests.support.logs import events
from tests.support.processes import ROOT, Service, wait_until
from tests.support.redis_server import RedisServer
from tests.support.simulator_client import SimulatorControl

OPEN_KEY = "wide-client-s3cr3t-key"
NARROW_KEY = "narrow-client-s3cr3t-key"
LEGACY_KEY = "legacy-node-api-key-s3cr3t"
METERED_KEY = "metered-client-s3cr3t-key"
ADMIN = "clients-admin-s3cr3t-0123456789"
PROMPT = {"contents": [{"parts": [{"text": "who am I"}]}]}
CLIENTS = f"""\
[clients.wide]
key_sha256 = "{key_hash(OPEN_KEY)}"

[clients.narrow]
key_sha256 = "{key_hash(NARROW_KEY)}"
models = ["gemini-3.5-*"]

[clients.metered]
key_sha256 = "{key_hash(METERED_KEY)}"
tokens_per_minute = 30
requests_per_minute = 1000
"""


@pytest.fixture(scope="module")
def clients_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clients") / "clients.toml"
    path.write_text(CLIENTS)
    return path


@pytest.fixture(scope="module")
def clients_node(
    simulator_service: Service, logs_dir: Path, clients_file: Path
) -> Iterator[Service]:
    with running_node(
        simulator_service,
        logs_dir,
        "clients-node",
        CLIENTS_FILE=str(clients_file),
        NODE_API_KEYS=LEGACY_KEY,
        ADMIN_TOKEN=ADMIN,
    ) as service:
        yield service


def _generate(node: Service, key: str | None, model: str = "gemini-3.8-flash") -> requests.Response:
    headers = {"x-goog-api-key": key} if key else {}
    return requests.post(
        f"{node.url}/v1beta/models/{model}:generateContent",
        json=PROMPT,
        headers=headers,
        timeout=10,
    )


def test_known_keys_call_and_others_are_refused(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    assert _generate(clients_node, OPEN_KEY).status_code == 200
    assert _generate(clients_node, LEGACY_KEY).status_code == 200  # NODE_API_KEYS still work
    assert _generate(clients_node, "someone-else").status_code == 400
    assert _generate(clients_node, None).status_code == 403
    assert requests.post(
        f"{clients_node.url}/v1beta/models/gemini-3.8-flash:generateContent",
        params={"key": OPEN_KEY},
        json=PROMPT,
        timeout=10,
    ).ok
    assert simulator.calls() == 3


def test_openai_surface_knows_the_file_clients(clients_node: Service) -> None:
    client = openai.OpenAI(api_key=OPEN_KEY, base_url=f"{clients_node.url}/v1beta/openai/")
    reply = client.chat.completions.create(
        model="gemini-3.8-flash", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    stranger = openai.OpenAI(api_key="nope", base_url=f"{clients_node.url}/v1beta/openai/")
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(
            model="gemini-3.8-flash", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_model_outside_the_clients_list_is_refused_before_upstream(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    refused = _generate(clients_node, NARROW_KEY, "gemini-3.8-flash")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["status"] == "PERMISSION_DENIED" and "narrow" in error["message"]
    assert NARROW_KEY not in refused.text and key_hash(NARROW_KEY) not in refused.text
    assert simulator.calls() == 0
    openai_refused = requests.post(
        f"{clients_node.url}/v1beta/openai/chat/completions",
        json={"model": "gemini-3.8-flash", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {NARROW_KEY}"},
        timeout=10,
    )
    assert openai_refused.status_code == 403 and simulator.calls() == 0
    assert _generate(clients_node, NARROW_KEY, "gemini-3.5-flash").status_code == 200


def test_rotation_stays_within_the_clients_models(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("503", model="gemini-3.5-flash")
    response = _generate(clients_node, NARROW_KEY, "gemini-3.5-flash")
    assert response.status_code == 503  # no other model of its list is served
    assert set(simulator.stats()["by_model"]) == {"gemini-3.5-flash"}
    assert _generate(clients_node, OPEN_KEY, "gemini-3.5-flash").status_code == 200  # rotated


def test_a_client_added_to_the_file_can_call_within_seconds(
    clients_node: Service, clients_file: Path
) -> None:
    late = "late-client-s3cr3t-key"
    assert _generate(clients_node, late).status_code == 400
    clients_file.write_text(CLIENTS + f'\n[clients.late]\nkey_sha256 = "{key_hash(late)}"\n')
    wait_until(lambda: len(_loaded_by(clients_node, 4)) == 2, 10, "both workers read it")
    assert _generate(clients_node, late).status_code == 200
    clients_file.write_text(CLIENTS + "\n[clients.broken\n")  # a bad edit: kept out
    wait_until(
        lambda: "clients_file_rejected" in clients_node.log_text(), 10, "the bad edit logged"
    )
    # the clients before it stay, in every worker
    assert all(_generate(clients_node, late).status_code == 200 for _ in range(8))
    assert _generate(clients_node, OPEN_KEY).status_code == 200


def _loaded_by(node: Service, clients: int) -> set[int]:
    """The workers that logged loading a file of `clients` clients (plus NODE_API_KEYS')."""
    return {
        e["worker_pid"] for e in events(node, "clients_file_loaded") if e["clients"] == clients + 1
    }


def test_a_bad_clients_file_stops_the_node_at_start(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text('# clients\n[clients.a]\nkey_sha256 = "not-a-hash"\n')
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    result = subprocess.run(
        [gunicorn, "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "GEMINI_API_KEY": "x", "CLIENTS_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"l104-node: invalid CLIENTS_FILE: {path}, line 2 ([clients.a]): "
        "key_sha256 must be 64 hex digits (a SHA-256)"
    )


def _admin_reset(node: Service, client: str) -> None:
    requests.post(
        f"{node.url}/self/clients/{client}/reset",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=5,
    ).raise_for_status()


def test_tokens_are_charged_and_the_next_call_refused_in_geminis_shape(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    """The simulator's usage is charged (its totalTokenCount); once the minute's 30 tokens
    are spent the next call is refused at once, nothing sent upstream."""
    spent = 0
    while spent < 30:
        answer = _generate(clients_node, METERED_KEY)
        assert answer.status_code == 200
        spent += answer.json()["usageMetadata"]["totalTokenCount"]
        assert int(answer.headers["x-ratelimit-limit-tokens"]) == 30
        assert int(answer.headers["x-ratelimit-remaining-tokens"]) == max(0, 30 - spent)
    upstream = simulator.calls()
    refused = _generate(clients_node, METERED_KEY)
    assert refused.status_code == 429 and simulator.calls() == upstream
    error = refused.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    failure, retry = error["details"]
    assert failure["@type"].endswith("QuotaFailure")
    assert failure["violations"][0]["quotaId"] == "TokensPerMinutePerClient"
    assert retry["@type"].endswith("RetryInfo")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert METERED_KEY not in refused.text and key_hash(METERED_KEY) not in refused.text
    sdk = genai.Client(
        api_key=METERED_KEY,
        http_options=types.HttpOptions(base_url=clients_node.url, api_version="v1beta"),
    )
    with pytest.raises(genai.errors.ClientError) as caught:  # google-genai sees the 429
        sdk.models.generate_content(model="gemini-3.8-flash", contents="more")
    assert caught.value.code == 429
    assert any("RetryInfo" in d.get("@type", "") for d in caught.value.details["error"]["details"])
    metrics = requests.get(f"{clients_node.url}/metrics", timeout=5).text
    assert 'l104_client_refusals_total{client="metered",limit="tokens_per_minute"}' in metrics
    assert 'l104_client_tokens_total{client="metered",kind="prompt"' in metrics
    assert METERED_KEY not in metrics and key_hash(METERED_KEY) not in metrics
    _admin_reset(clients_node, "metered")
    assert _generate(clients_node, METERED_KEY).status_code == 200


def test_openai_sdk_reads_the_limits_and_gets_a_rate_limit_error(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    _admin_reset(clients_node, "metered")
    client = openai.OpenAI(
        api_key=METERED_KEY, base_url=f"{clients_node.url}/v1beta/openai/", max_retries=0
    )
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-3.8-flash", messages=[{"role": "user", "content": "count me"}]
    )
    used = raw.parse().usage
    assert used is not None
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == max(0, 30 - used.total_tokens)
    while int(raw.headers["x-ratelimit-remaining-tokens"]) > 0:
        raw = client.chat.completions.with_raw_response.create(
            model="gemini-3.8-flash", messages=[{"role": "user", "content": "count me"}]
        )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="gemini-3.8-flash", messages=[{"role": "user", "content": "one more"}]
        )
    assert int(caught.value.response.headers["retry-after"]) >= 1
    _admin_reset(clients_node, "metered")


def test_a_stream_is_charged_from_its_last_event(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    _admin_reset(clients_node, "metered")
    simulator.configure(stream_chunks=4)
    path = f"{clients_node.url}/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse"
    response = requests.post(path, json=PROMPT, headers={"x-goog-api-key": METERED_KEY}, timeout=10)
    frames = [line for line in response.text.splitlines() if line.startswith("data: ")]
    total = json.loads(frames[-1][6:])["usageMetadata"]["totalTokenCount"]
    after = _generate(clients_node, METERED_KEY)  # its headers show the stream's charge
    spent = total + after.json()["usageMetadata"]["totalTokenCount"]
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == max(0, 30 - spent)
    _admin_reset(clients_node, "metered")


def test_max_in_flight_refuses_at_once_node_wide(
    simulator_service: Service, logs_dir: Path, simulator: SimulatorControl, tmp_path: Path
) -> None:
    key = "busy-client-s3cr3t-key"
    path = tmp_path / "clients.toml"
    path.write_text(f'[clients.busy]\nkey_sha256 = "{key_hash(key)}"\nmax_in_flight = 2\n')
    with running_node(simulator_service, logs_dir, "busy-node", CLIENTS_FILE=str(path)) as node:
        simulator.fault("slow", seconds=3)
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(_generate, node, key) for _ in range(2)]
            wait_until(lambda: simulator.stats()["in_flight"] == 2, 10, "two calls upstream")
            refused = _generate(node, key)  # both slots taken (on either worker)
            assert refused.status_code == 429
            assert "max_in_flight" in refused.json()["error"]["message"]
            assert simulator.stats()["total"] == 2  # nothing more went upstream
            assert [f.result().status_code for f in slow] == [200, 200]
        simulator.reset()
        assert _generate(node, key).status_code == 200  # the slots were given back


def test_an_openai_stream_without_include_usage_gets_no_usage_chunk_and_is_charged(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    _admin_reset(clients_node, "metered")
    client = openai.OpenAI(
        api_key=METERED_KEY, base_url=f"{clients_node.url}/v1beta/openai/", max_retries=0
    )
    chunks = list(
        client.chat.completions.create(
            model="gemini-3.8-flash", messages=[{"role": "user", "content": "s"}], stream=True
        )
    )
    assert chunks and all(chunk.usage is None and chunk.choices for chunk in chunks)
    (seen,) = [r for r in simulator.requests() if r["api_method"] == "chat.completions"]
    assert seen["body"]["stream_options"] == {"include_usage": True}
    after = requests.get(
        f"{clients_node.url}/self/clients", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5
    ).json()["clients"]["metered"]
    assert after["windows"]["tokens_per_minute"]["used"] > 0  # charged all the same
    assert after["in_flight"] == 0
    with_usage = list(
        client.chat.completions.create(
            model="gemini-3.8-flash",
            messages=[{"role": "user", "content": "s"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage is not None and not with_usage[-1].choices
    _admin_reset(clients_node, "metered")


def test_two_nodes_on_one_redis_share_a_clients_token_budget(
    simulator_service: Service,
    logs_dir: Path,
    redis_server: RedisServer,
    simulator: SimulatorControl,
    tmp_path: Path,
) -> None:
    """Calls alternate between two nodes until the budget is spent: the tokens charged add
    up to the simulator's reported usage, and both nodes refuse together."""
    key = "shared-client-s3cr3t-key"
    path = tmp_path / "clients.toml"
    path.write_text(f'[clients.shared]\nkey_sha256 = "{key_hash(key)}"\ntokens_per_day = 60\n')
    redis.Redis.from_url(redis_server.url).flushdb()
    settings = {"CLIENTS_FILE": str(path), "STATE_URL": redis_server.url}
    with (
        running_node(simulator_service, logs_dir, "budget-a", **settings) as a,
        running_node(simulator_service, logs_dir, "budget-b", **settings) as b,
    ):
        reported, turn = 0, 0
        while True:
            answer = _generate((a, b)[turn % 2], key)
            turn += 1
            if answer.status_code == 429:
                break
            assert answer.status_code == 200
            reported += answer.json()["usageMetadata"]["totalTokenCount"]
        assert reported >= 60 and turn >= 3  # both nodes took part before the refusal
        for node in (a, b):  # refused together, nothing more upstream
            before = simulator.calls()
            refused = _generate(node, key)
            assert refused.status_code == 429 and simulator.calls() == before
            assert "TokensPerDayPerClient" in refused.text
        view = (
            requests.get(f"{a.url}/metrics", timeout=5).text
            + requests.get(f"{b.url}/metrics", timeout=5).text
        )
        shared = 'l104_client_tokens_total{client="shared"'
        charged = sum(
            float(line.rsplit(" ", 1)[1])
            for line in view.splitlines()
            if line.startswith(shared) and ('kind="prompt"' in line or 'kind="candidates"' in line)
        )
        assert charged == reported  # prompt + candidates = the simulator's totals
    redis.Redis.from_url(redis_server.url).flushdb()


def test_the_access_log_names_the_client_and_its_tokens_never_its_key(
    clients_node: Service, simulator: SimulatorControl
) -> None:
    _admin_reset(clients_node, "metered")

    def lines() -> list[dict[str, object]]:
        return [
            e
            for e in events(clients_node, "access")
            if e.get("client") == "metered" and str(e["path"]).endswith(":generateContent")
        ]

    before = len(lines())
    answer = _generate(clients_node, METERED_KEY)
    tokens = answer.json()["usageMetadata"]["totalTokenCount"]
    wait_until(lambda: len(lines()) > before, 10, "the call's access line")
    (line,) = lines()[before:]
    assert (line["client"], line["tokens"]) == ("metered", tokens)
    text = clients_node.log_text()
    for secret in (METERED_KEY, key_hash(METERED_KEY), OPEN_KEY, key_hash(OPEN_KEY)):
        assert secret not in text
    _admin_reset(clients_node, "metered")
