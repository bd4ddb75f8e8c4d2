"""Worker-level healing through real gunicorn: recycles lose no request."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import node_env, running_node
from tests.support.load import Load
from tests.support.logs import events
from tests.support.processes import Service, child_pids, start_node, wait_until
from tests.support.simulator_client import SimulatorControl

ADMIN = "worker-admin-s3cr3t-0123456789"
PROMPT = {"contents": [{"parts": [{"text": "keep going"}]}]}


# The default (gevent) first; gthread and sync stay supported, so recycling is tested on each.
@pytest.fixture(params=["gevent", "gthread", "sync"])
def worker_node(simulator_service: Service, logs_dir: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A fresh node per test: 2 workers of each class, recycle after 3 failures, no minimum
    age."""
    with running_node(
        simulator_service,
        logs_dir,
        request.node.name,
        GUNICORN_WORKER_CLASS=request.param,
        ADMIN_TOKEN=ADMIN,
        WORKER_MAX_FAILURES="3",
        WORKER_MIN_AGE="0",
        CIRCUIT_BREAKER_THRESHOLD="1000",
        MAX_RETRY_ATTEMPTS="0",
        AUTO_HEAL_ENABLED="false",
        GRACEFUL_TIMEOUT="10",
    ) as service:
        wait_until(lambda: len(events(service, "worker_ready")) == 2, 15, "two workers ready")
        yield service


def _list_models(node: Service) -> callable:  # type: ignore[valid-type]
    return lambda session: session.get(f"{node.url}/v1beta/models", timeout=10)


def _generate(node: Service) -> callable:  # type: ignore[valid-type]
    return lambda session: session.post(
        f"{node.url}/v1beta/models/gemini-3.8-flash:generateContent", json=PROMPT, timeout=10
    )


def test_failing_worker_is_replaced_while_clients_see_nothing(
    worker_node: Service, simulator: SimulatorControl
) -> None:
    master = worker_node.process.pid
    before = child_pids(master)
    # Generation fails on every model; model listing (the clients' load) keeps working.
    simulator.fault("500", model="*")
    with Load(_list_models(worker_node), clients=6) as load:
        for _ in range(12):
            requests.post(
                f"{worker_node.url}/v1beta/models/gemini-3.8-flash:generateContent",
                json=PROMPT,
                timeout=10,
            )
        wait_until(lambda: not (before <= child_pids(master)), 15, "a worker to be replaced")
        time.sleep(0.5)
    assert load.total > 0 and load.failures() == {}
    recycled = [e for e in events(worker_node, "worker_recycled") if e["reason"] == "failures"]
    assert recycled and recycled[0]["pid"] in before
    metrics = requests.get(f"{worker_node.url}/metrics", timeout=10).text
    assert 'l104_worker_recycles_total{reason="failures"}' in metrics


def test_heal_recycles_every_worker_one_at_a_time(
    worker_node: Service, simulator: SimulatorControl
) -> None:
    master = worker_node.process.pid
    before = child_pids(master)
    live_counts: list[int] = []
    with Load(_generate(worker_node), clients=6) as load:
        response = requests.post(
            f"{worker_node.url}/self/heal?recycle_workers=true",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        assert response.status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = child_pids(master)
            live_counts.append(len(pids))
            if len(pids) == 2 and not (pids & before):
                break
            time.sleep(0.02)
    after = child_pids(master)
    assert len(after) == 2 and not (after & before), (before, after)
    assert min(live_counts) >= 1
    assert load.total > 0 and load.failures() == {}
    reasons = [e["reason"] for e in events(worker_node, "worker_recycled")]
    assert reasons.count("heal") == 2


def test_kill_9_of_a_worker_under_load(worker_node: Service, simulator: SimulatorControl) -> None:
    master = worker_node.process.pid
    victim = min(child_pids(master))
    with Load(_generate(worker_node), clients=6) as load:
        wait_until(lambda: load.total > 20, 10, "load to start")
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(child_pids(master)) == 2 and victim not in child_pids(master),
            15,
            "the master to replace the killed worker",
        )
        settled = load.total
        wait_until(lambda: load.total > settled + 50, 15, "load after the replacement")
        failures_after_kill = dict(load.failures())
        late = load.total
    # What the clients saw: at most the requests in flight on the killed worker failed.
    assert sum(failures_after_kill.values()) <= 6, failures_after_kill
    assert load.total > late - 1
    assert any(
        e["pid"] == victim and e["reason"] == "exited"
        for e in events(worker_node, "worker_recycled")
    )
    print(f"kill -9 under load: {load.total} calls, failures {failures_after_kill}")


def test_hung_sync_worker_is_killed_and_logged(
    simulator_service: Service, simulator: SimulatorControl, logs_dir: Path
) -> None:
    env = node_env(
        simulator_service.url,
        GUNICORN_WORKER_CLASS="sync",
        GUNICORN_TIMEOUT="2",
        UPSTREAM_TIMEOUT="30",
        REQUEST_DEADLINE="30",
        WEB_CONCURRENCY="1",
    )
    node = start_node(logs_dir / "hung-sync-worker.log", env)
    try:
        simulator.fault("hang", model="*", seconds=20)
        with pytest.raises(requests.RequestException):
            requests.post(
                f"{node.url}/v1beta/models/gemini-3.8-flash:generateContent",
                json=PROMPT,
                timeout=15,
            ).raise_for_status()
        wait_until(lambda: events(node, "worker_abort"), 10, "the worker_abort line")
        wait_until(
            lambda: any(e["reason"] == "timeout" for e in events(node, "worker_recycled")),
            10,
            "the master to log the timeout",
        )
        simulator.reset()
        wait_until(lambda: requests.get(f"{node.url}/health", timeout=5).ok, 10, "a fresh worker")
    finally:
        node.stop()


def test_an_operators_recycle_of_young_workers_starts_at_once(
    simulator_service: Service, simulator: SimulatorControl, logs_dir: Path
) -> None:
    """WORKER_MIN_AGE (30 s by default) holds automatic recycles back; an operator's recycle
    of workers younger than that replaces every one within 10 s, one at a time, and no
    client call fails."""
    with running_node(
        simulator_service, logs_dir, "young-workers", ADMIN_TOKEN=ADMIN, GRACEFUL_TIMEOUT="10"
    ) as node:
        wait_until(lambda: len(events(node, "worker_ready")) == 2, 15, "two workers ready")
        master = node.process.pid
        before = child_pids(master)
        with Load(_generate(node), clients=6) as load:
            asked = time.monotonic()
            response = requests.post(
                f"{node.url}/self/heal?recycle_workers=true",
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=10,
            )
            assert response.status_code == 200
            wait_until(
                lambda: len(child_pids(master)) == 2 and not (child_pids(master) & before),
                10,
                "every worker replaced",
            )
            replaced_after = time.monotonic() - asked
            settled = load.total
            wait_until(lambda: load.total > settled + 20, 10, "calls after the recycle")
        assert load.total > 0 and load.failures() == {}
        requested = events(node, "worker_recycle_requested")
        assert requested and all(e["by_operator"] for e in requested)
        print(f"operator recycle of 2 young workers: {replaced_after:.2f} s")
