"""The simulator's tail faults (hang until the client goes, slow, stall) and fault `rate`, against
the simulator process: what a client sees, and how `/_sim/stats` counts calls it closed."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app.simulator import start_in_thread
from tests.support.processes import Service, start_simulator, wait_until
from tests.support.simulator_client import SimulatorControl

KEY = "sim-tail-key"
OTHER_KEY = "sim-tail-other-key"
MODEL = "gemini-3.8-flash"
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], "stream": True}
REPLY = "L104 simulator reply to: Hello there"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
SSE = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
ARRAY = f"/v1beta/models/{MODEL}:streamGenerateContent"
OPENAI = "/v1beta/openai/chat/completions"
QUIET = 0.5  # how long a client waits for more before it decides nothing is coming
SETTLE = 5.0  # the most a poll of /_sim/stats waits for the simulator to catch up


@pytest.fixture(scope="module")
def service(logs_dir: Path) -> Iterator[Service]:
    """One simulator process for the whole module."""
    running = start_simulator(logs_dir / "simulator-tail.log", KEY)
    yield running
    running.stop()


@pytest.fixture
def sim(service: Service) -> SimulatorControl:
    """The module's simulator, reset before each test."""
    control = SimulatorControl(service.url, KEY)
    control.reset()
    return control


def fault(sim: SimulatorControl, kind: str, **params: Any) -> dict[str, Any]:
    response = requests.post(
        f"{sim.url}/_sim/faults", json={"model": MODEL, "fault": kind, **params}, timeout=5
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def generate(sim: SimulatorControl, key: str = KEY) -> requests.Response:
    url = f"{sim.url}{GENERATE}"
    return requests.post(url, json=PROMPT, headers={"x-goog-api-key": key}, timeout=5)


def open_call(sim: SimulatorControl, path: str, body: dict[str, Any]) -> socket.socket:
    """Send one API call on a fresh connection and return the connection, unread."""
    port = int(sim.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=SETTLE)
    payload = json.dumps(body).encode()
    auth = f"Authorization: Bearer {KEY}" if path == OPENAI else f"x-goog-api-key: {KEY}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def read_until(sock: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    """What arrives until `done` says it is enough (within SETTLE seconds)."""
    sock.settimeout(SETTLE)
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        assert chunk, f"the simulator closed the connection after {data!r}"
        data += chunk
    return data


def nothing_more(sock: socket.socket) -> bool:
    """True when nothing arrives for QUIET seconds and the connection stays open."""
    sock.settimeout(QUIET)
    try:
        chunk = sock.recv(65536)
    except TimeoutError:
        return True
    raise AssertionError(f"expected silence, got {chunk!r}")


def settled(sim: SimulatorControl, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /_sim/stats until `check` holds (failing after SETTLE seconds); the stats."""
    wait_until(lambda: check(sim.stats()), SETTLE, "the simulator's stats to settle")
    return sim.stats()


def closed_and_idle(count: int) -> Callable[[dict[str, Any]], bool]:
    """`count` calls closed by their client, and none left in flight."""
    return lambda stats: stats["closed_by_client"] == count and stats["in_flight"] == 0


def events(data: bytes) -> int:
    return data.count(b"data: ")


# --- rate ---------------------------------------------------------------------------------


def test_rate_hits_every_fifth_call(sim: SimulatorControl) -> None:
    shown = fault(sim, "503", rate=0.2)
    assert shown["params"] == {"rate": 0.2}
    codes = [generate(sim).status_code for _ in range(15)]
    assert [index + 1 for index, code in enumerate(codes) if code == 503] == [5, 10, 15]
    assert set(codes) == {200, 503}
    assert sim.stats()["faults_served"] == 3


def test_rate_with_count_uses_the_count_only_on_hits(sim: SimulatorControl) -> None:
    fault(sim, "500", rate=0.5, count=2)
    codes = [generate(sim).status_code for _ in range(6)]
    assert codes == [200, 500, 200, 500, 200, 200]
    assert requests.get(f"{sim.url}/_sim/faults", timeout=5).json() == []


def test_rate_on_a_key_fault_counts_each_call_once(sim: SimulatorControl) -> None:
    fault(sim, "invalid_key", rate=0.5)
    assert [generate(sim).status_code for _ in range(4)] == [200, 400, 200, 400]


def test_a_keys_fault_with_a_rate_applies_only_to_that_key(sim: SimulatorControl) -> None:
    sim.add_keys(OTHER_KEY)
    fault(sim, "503", key=OTHER_KEY, rate=0.5)
    mine, others = [], []
    for _ in range(4):  # interleaved: calls with KEY must not move OTHER_KEY's fault along
        mine.append(generate(sim).status_code)
        others.append(generate(sim, key=OTHER_KEY).status_code)
    assert mine == [200] * 4
    assert others == [200, 503, 200, 503]


@pytest.mark.parametrize(
    "bad",
    [
        {"fault": "503", "rate": 0},
        {"fault": "503", "rate": 1.5},
        {"fault": "503", "rate": "x"},
        {"fault": "503", "rate": True},
        {"fault": "503", "rate": None},
        {"fault": "hang", "rate": -0.1},
        {"fault": "slow", "seconds": "x"},
        {"fault": "slow", "seconds": None},
        {"fault": "stall", "after": -1},
        {"fault": "stall", "seconds": 1},
        {"fault": "hang", "seconds": -1},
    ],
)
def test_bad_parameters_are_refused(sim: SimulatorControl, bad: dict[str, Any]) -> None:
    response = requests.post(f"{sim.url}/_sim/faults", json=bad, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400
    assert requests.get(f"{sim.url}/_sim/faults", timeout=5).json() == []


# --- hang, slow -------------------------------------------------------------------------


def test_hang_without_seconds_waits_until_the_client_closes(sim: SimulatorControl) -> None:
    assert fault(sim, "hang")["params"] == {"seconds": None}
    assert sim.stats()["closed_by_client"] == 0
    with open_call(sim, GENERATE, PROMPT) as sock:
        settled(sim, lambda stats: stats["in_flight"] == 1)
        assert nothing_more(sock)
    stats = settled(sim, closed_and_idle(1))
    assert stats["closed_by_client_by_fault"] == {"hang": 1, "slow": 0, "stall": 0}
    assert stats["faults_served"] == 1
    assert len(requests.get(f"{sim.url}/_sim/faults", timeout=5).json()) == 1  # no count
    sim.reset()
    assert sim.stats()["closed_by_client"] == 0


def test_hang_keeps_a_stream_from_starting(sim: SimulatorControl) -> None:
    fault(sim, "hang", count=1)
    with open_call(sim, SSE, PROMPT) as sock:
        assert nothing_more(sock)  # not even the status line
    settled(sim, closed_and_idle(1))
    assert requests.get(f"{sim.url}/_sim/faults", timeout=5).json() == []


def test_a_timed_hang_ends_early_when_the_client_goes(sim: SimulatorControl) -> None:
    fault(sim, "hang", seconds=60, count=1)
    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{sim.url}{GENERATE}", json=PROMPT, headers={"x-goog-api-key": KEY}, timeout=QUIET
        )
    settled(sim, closed_and_idle(1))


def test_slow_answers_normally_after_its_seconds(sim: SimulatorControl) -> None:
    shown = fault(sim, "slow", seconds=0.3, count=1)
    assert shown["params"] == {"seconds": 0.3}
    started = time.monotonic()
    response = generate(sim)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == REPLY
    assert sim.stats()["closed_by_client"] == 0


def test_slow_stops_waiting_when_the_client_goes(sim: SimulatorControl) -> None:
    fault(sim, "slow", seconds=60)
    with open_call(sim, GENERATE, PROMPT) as sock:
        assert nothing_more(sock)
    stats = settled(sim, closed_and_idle(1))
    assert stats["closed_by_client_by_fault"]["slow"] == 1


# --- stall --------------------------------------------------------------------------------


def test_stall_on_sse_sends_its_events_then_nothing(sim: SimulatorControl) -> None:
    sim.configure(stream_chunks=4)
    fault(sim, "stall", after=2)
    with open_call(sim, SSE, PROMPT) as sock:
        data = read_until(sock, lambda got: got.count(b"\r\n\r\n\r\n") >= 2)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert nothing_more(sock)
        assert events(data) == 2 and b"finishReason" not in data
        assert not data.endswith(b"0\r\n\r\n")  # the chunked stream never ends
        assert sim.stats()["in_flight"] == 1
    stats = settled(sim, closed_and_idle(1))
    assert stats["closed_by_client_by_fault"] == {"hang": 0, "slow": 0, "stall": 1}


def test_stall_on_the_openai_stream(sim: SimulatorControl) -> None:
    fault(sim, "stall", after=1, rate=0.5)
    assert requests.post(  # the first call is spared by the rate: a whole stream
        f"{sim.url}{OPENAI}", json=CHAT, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ).text.endswith("data: [DONE]\n\n")
    with open_call(sim, OPENAI, CHAT) as sock:
        data = read_until(sock, lambda got: b"\n\n\r\n" in got)
        assert nothing_more(sock)
        assert events(data) == 1 and b"[DONE]" not in data
    settled(sim, closed_and_idle(1))


def test_stall_on_the_array_stream_and_on_a_unary_call(sim: SimulatorControl) -> None:
    fault(sim, "stall", count=2)  # after 1 event by default
    with open_call(sim, ARRAY, PROMPT) as sock:
        data = read_until(sock, lambda got: b"[{" in got and got.endswith(b"}\r\n"))
        assert nothing_more(sock)
        assert b",\r\n{" not in data and not data.rstrip().endswith(b"]")
    settled(sim, closed_and_idle(1))
    with open_call(sim, GENERATE, PROMPT) as sock:  # not a stream: a hang
        assert nothing_more(sock)
    stats = settled(sim, closed_and_idle(2))
    assert stats["closed_by_client_by_fault"]["stall"] == 2


# --- other closes -------------------------------------------------------------------------


def test_a_write_failing_after_the_client_went_counts(sim: SimulatorControl) -> None:
    fault(sim, "slow_body", ms=5000, count=1)
    with open_call(sim, GENERATE, PROMPT) as sock:
        assert read_until(sock, lambda got: b"\r\n\r\n" in got).startswith(b"HTTP/1.1 200 ")
    stats = settled(sim, closed_and_idle(1))
    assert stats["closed_by_client_by_fault"]["slow_body"] == 1


def test_a_stopping_server_ends_a_hang_without_counting_it() -> None:
    server = start_in_thread(api_key=KEY)
    try:
        control = SimulatorControl(server.url, KEY)
        fault(control, "hang")
        with open_call(control, GENERATE, PROMPT) as sock:
            settled(control, lambda stats: stats["in_flight"] == 1)
            server.shutdown()
            sock.settimeout(SETTLE)
            try:
                assert sock.recv(1) == b""  # closed, unanswered
            except ConnectionResetError:
                pass
        recorder = server.state.recorder
        wait_until(lambda: recorder.stats()["in_flight"] == 0, SETTLE, "the hang to end")
        assert recorder.stats()["closed_by_client"] == 0
    finally:
        server.shutdown()
