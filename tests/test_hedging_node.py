"""Hung and stalled upstream attempts through real gunicorn and the real simulator: every call
answered, every hung attempt closed by the node (the simulator's count of attempts their
client closed), nothing left in flight."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests
from google import genai
from google.genai import types
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NODE_MODELS, running_node
from tests.support.admin import status
from tests.support.logs import events
from tests.support.processes import Service, wait_until
from tests.support.simulator_client import SimulatorControl

MODELS = NODE_MODELS.split(",")
MODEL = MODELS[0]
PROMPT = {"contents": [{"parts": [{"text": "hedge me"}]}]}
CLIENT_KEY = "hedging-client-s3cr3t-0123456789"
ADMIN = "hedging-admin-s3cr3t-0123456789"


@pytest.fixture(scope="module")
def hedging_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node whose attempts stall after 1 s and hedge after 0.2 s once it knows the
    models' latencies (every other setting as shipped, but for the test environment's)."""
    with running_node(
        simulator_service,
        logs_dir,
        "hedging-node",
        UPSTREAM_STALL_TIMEOUT="1",
        HEDGE_MIN_DELAY="0.2",
        AUTO_HEAL_ENABLED="false",
        CIRCUIT_BREAKER_THRESHOLD="1000",
        ADMIN_TOKEN=ADMIN,
    ) as service:
        yield service


def _generate(node: Service, model: str = MODEL) -> requests.Response:
    return requests.post(
        f"{node.url}/v1beta/models/{model}:generateContent", json=PROMPT, timeout=30
    )


def _counter(node: Service, name: str, **labels: str) -> float:
    text = requests.get(f"{node.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _warm(node: Service, path: str, calls: int = 60) -> None:
    """Enough quick successes for both workers' latency windows."""
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: requests.post(path, json=PROMPT, timeout=30), range(calls)))
    assert {r.status_code for r in codes} == {200}


def _settled(simulator: SimulatorControl, closed: int) -> bool:
    stats = simulator.stats()
    return stats["in_flight"] == 0 and stats["closed_by_client"] >= closed


def test_forty_calls_while_a_fifth_of_attempts_hang(
    hedging_node: Service, simulator: SimulatorControl
) -> None:
    simulator.fault("hang", rate=0.2)  # every model, every key: calls 5, 10, 15, ...
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _generate(hedging_node), range(40)))
    assert [r.status_code for r in answers] == [200] * 40
    hung = simulator.stats()["faults_served"]
    assert hung >= 8  # at least 40 calls' worth of attempts reached the simulator
    wait_until(lambda: _settled(simulator, hung), 10, "every hung attempt closed")
    stats = simulator.stats()
    assert stats["closed_by_client_by_fault"]["hang"] == hung  # the node closed each one
    assert stats["in_flight"] == 0
    # each one ended by the node: by a hedge that answered first, or by the stall timer
    stalled = sum(_counter(hedging_node, "l104_upstream_stalls_total", model=m) for m in MODELS)
    won = sum(_counter(hedging_node, "l104_hedges_total", model=m, outcome="won") for m in MODELS)
    assert stalled + won >= hung


def test_stalled_attempts_are_counted_and_logged(
    hedging_node: Service, simulator: SimulatorControl
) -> None:
    before = _counter(hedging_node, "l104_upstream_stalls_total", model=MODEL)
    simulator.fault("hang", model=MODEL, count=1)
    assert _generate(hedging_node).status_code == 200
    wait_until(
        lambda: (
            _counter(hedging_node, "l104_upstream_stalls_total", model=MODEL) > before
            or _counter(hedging_node, "l104_hedges_total", model=MODEL, outcome="won") > 0
        ),
        10,
        "the hung attempt ended by a hedge or the stall timer",
    )
    wait_until(lambda: _settled(simulator, 1), 10, "the hung attempt closed")
    assert simulator.stats()["closed_by_client"] == 1


def test_stream_hedged_before_its_first_event(
    hedging_node: Service, simulator: SimulatorControl, logs_dir: Path
) -> None:
    path = f"{hedging_node.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    _warm(hedging_node, path)
    won = _counter(hedging_node, "l104_hedges_total", model=MODEL, outcome="won")
    simulator.fault("hang", model=MODEL, count=1)
    response = requests.post(path, json=PROMPT, timeout=30)
    assert response.status_code == 200
    frames = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert frames and all("error" not in json.loads(f[6:]) for f in frames)
    wait_until(lambda: _settled(simulator, 1), 10, "the hung stream attempt closed")
    assert _counter(hedging_node, "l104_hedges_total", model=MODEL, outcome="won") == won + 1
    assert events(hedging_node, "hedge_won")
    assert response.headers["X-L104-Hedged"] == "1"
    hedges = status(hedging_node, ADMIN)["hedges"]
    assert hedges["enabled"] and hedges["outcomes"]["won"] >= 1
    assert set(hedges["delays"][MODEL]) >= {"stream"}  # this worker's window of streams
    wait_until(
        lambda: any(e.get("hedged") is True for e in events(hedging_node, "access")),
        10,
        "the access line of the hedged answer",
    )


def test_slow_but_steady_stream_is_never_abandoned(
    hedging_node: Service, simulator: SimulatorControl
) -> None:
    """Chunks 0.3 s apart for 2.4 s: longer than the stall timeout (1 s), but arriving."""
    simulator.configure(stream_chunks=8, chunk_delay_ms=300)
    path = f"{hedging_node.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    response = requests.post(path, json=PROMPT, timeout=30)
    frames = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert len(frames) == 8
    assert all("error" not in json.loads(f[6:]) for f in frames)


@pytest.fixture(scope="module")
def idle_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node whose streams end after 1 s without an event (the read timeout is far off)."""
    with running_node(
        simulator_service,
        logs_dir,
        "idle-node",
        STREAM_IDLE_TIMEOUT="1",
        UPSTREAM_TIMEOUT="2,60",
        NODE_API_KEYS=CLIENT_KEY,
    ) as service:
        yield service


def _stall_second_event(simulator: SimulatorControl) -> None:
    simulator.configure(stream_chunks=4)
    simulator.fault("stall", model=MODEL, after=2, count=1)


def test_stalled_stream_ends_with_an_error_event(
    idle_node: Service, simulator: SimulatorControl
) -> None:
    _stall_second_event(simulator)
    path = f"{idle_node.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    response = requests.post(path, json=PROMPT, headers={"x-goog-api-key": CLIENT_KEY}, timeout=30)
    frames = [json.loads(x[6:]) for x in response.text.splitlines() if x.startswith("data: ")]
    assert len(frames) == 3  # two events, then the terminal error
    assert frames[-1]["error"]["code"] == 504
    assert "stream idle timeout" in frames[-1]["error"]["message"]  # not the read timeout
    wait_until(lambda: _settled(simulator, 1), 10, "the stalled stream closed")
    assert _counter(idle_node, "l104_upstream_calls_total", model=MODEL, outcome="stalled") == 1


def test_stalled_stream_makes_the_google_genai_sdk_raise(
    idle_node: Service, simulator: SimulatorControl
) -> None:
    _stall_second_event(simulator)
    options = types.HttpOptions(base_url=idle_node.url, api_version="v1beta")
    client = genai.Client(api_key=CLIENT_KEY, http_options=options)
    texts: list[str] = []
    with pytest.raises(genai.errors.APIError):
        for chunk in client.models.generate_content_stream(model=MODEL, contents="stall"):
            texts.append(chunk.text or "")
    assert len(texts) == 2  # what arrived, then the error instead of a clean end


def test_stalled_stream_makes_the_openai_sdk_raise(
    idle_node: Service, simulator: SimulatorControl
) -> None:
    _stall_second_event(simulator)
    client = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{idle_node.url}/v1beta/openai/")
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stall"}], stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)
    wait_until(lambda: _settled(simulator, 1), 10, "the stalled stream closed")


@pytest.mark.parametrize("worker_class", ["gthread", "sync"])
def test_hung_attempts_are_closed_on_every_worker_class(
    simulator_service: Service, logs_dir: Path, simulator: SimulatorControl, worker_class: str
) -> None:
    with running_node(
        simulator_service,
        logs_dir,
        f"hedging-{worker_class}",
        GUNICORN_WORKER_CLASS=worker_class,
        UPSTREAM_STALL_TIMEOUT="1",
        HEDGE_MIN_DELAY="0.2",
    ) as node:
        simulator.fault("hang", rate=0.2)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _generate(node), range(20)))
        assert [r.status_code for r in answers] == [200] * 20
        hung = simulator.stats()["faults_served"]
        assert hung >= 4
        wait_until(lambda: _settled(simulator, hung), 10, "every hung attempt closed")
        assert simulator.stats()["closed_by_client_by_fault"]["hang"] == hung
        stalled = sum(_counter(node, "l104_upstream_stalls_total", model=m) for m in MODELS)
        won = sum(_counter(node, "l104_hedges_total", model=m, outcome="won") for m in MODELS)
        assert stalled + won >= hung


SURFACES = {
    "native": ("/v1beta/models/{model}:generateContent", PROMPT),
    "native-stream": ("/v1beta/models/{model}:streamGenerateContent?alt=sse", PROMPT),
    "count-tokens": ("/v1beta/models/{model}:countTokens", PROMPT),
    "embeddings": (
        "/v1beta/models/gemini-embedding-001:embedContent",
        {"content": {"parts": [{"text": "hedge me"}]}},
    ),
    "openai": (
        "/v1beta/openai/chat/completions",
        {"model": "{model}", "messages": [{"role": "user", "content": "hedge me"}]},
    ),
    "openai-stream": (
        "/v1beta/openai/chat/completions",
        {"model": "{model}", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ),
    "legacy": ("/api/stream", {"signal": "hedge me"}),
}


@pytest.mark.parametrize("surface", list(SURFACES))
def test_a_hung_attempt_is_closed_on_every_surface(
    hedging_node: Service, simulator: SimulatorControl, surface: str
) -> None:
    path, body = SURFACES[surface]
    body = json.loads(json.dumps(body).replace("{model}", MODEL))
    simulator.fault("hang", count=1)  # the call's first attempt, whichever model it is
    response = requests.post(f"{hedging_node.url}{path.format(model=MODEL)}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert "error" not in response.text
    wait_until(lambda: _settled(simulator, 1), 10, "the hung attempt closed by the node")
    assert simulator.stats()["closed_by_client_by_fault"]["hang"] == 1


def _text(response: requests.Response) -> str:
    parts = response.json()["candidates"][0]["content"]["parts"]
    return "".join(part["text"] for part in parts)


def test_unary_calls_go_upstream_as_streams_and_come_back_whole(
    hedging_node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(stream_chunks=5)
    response = _generate(hedging_node)
    assert response.status_code == 200
    assert _text(response) == "L104 simulator reply to: hedge me"
    assert response.json()["candidates"][0]["finishReason"] == "STOP"
    assert simulator.by_method() == {"streamGenerateContent": 1}


def test_a_unary_answer_cut_short_upstream_is_never_a_short_answer(
    hedging_node: Service, simulator: SimulatorControl
) -> None:
    simulator.configure(stream_chunks=4)
    simulator.fault("stream_cut", model=MODEL, after=2, count=1)
    response = _generate(hedging_node)
    assert response.status_code == 200
    assert _text(response) == "L104 simulator reply to: hedge me"  # from another attempt
    assert simulator.stats()["faults_served"] == 1


def test_a_unary_answer_silent_between_events_is_a_stall(
    hedging_node: Service, simulator: SimulatorControl
) -> None:
    before = sum(_counter(hedging_node, "l104_upstream_stalls_total", model=m) for m in MODELS)
    simulator.configure(stream_chunks=4)
    simulator.fault("stall", model=MODEL, after=1, count=1)
    response = _generate(hedging_node)
    assert response.status_code == 200
    assert _text(response) == "L104 simulator reply to: hedge me"
    wait_until(lambda: _settled(simulator, 1), 10, "the stalled attempt closed")
    after = sum(_counter(hedging_node, "l104_upstream_stalls_total", model=m) for m in MODELS)
    assert after == before + 1
