"""Hung and stalled upstream attempts through real gunicorn and the real simulator: every call
answered, every hung attempt closed by the node (the simulator's count of attempts their
client closed), nothing left in flight."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NODE_MODELS, running_node
from tests.support.logs import events
from tests.support.processes import Service, wait_until
from tests.support.simulator_client import SimulatorControl

MODELS = NODE_MODELS.split(",")
MODEL = MODELS[0]
PROMPT = {"contents": [{"parts": [{"text": "hedge me"}]}]}


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


def test_stalled_stream_ends_with_an_error_event(
    simulator_service: Service, logs_dir: Path, simulator: SimulatorControl
) -> None:
    with running_node(
        simulator_service, logs_dir, "idle-node", STREAM_IDLE_TIMEOUT="1", UPSTREAM_TIMEOUT="2,60"
    ) as node:
        simulator.configure(stream_chunks=4)
        simulator.fault("stall", model=MODEL, after=2, count=1)
        path = f"{node.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
        response = requests.post(path, json=PROMPT, timeout=30)
        frames = [
            json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
        ]
        assert len(frames) == 3  # two events, then the terminal error
        assert frames[-1]["error"]["code"] == 504
        assert "stream idle timeout" in frames[-1]["error"]["message"]  # not the read timeout
        wait_until(lambda: _settled(simulator, 1), 10, "the stalled stream closed")
