"""recovery and recycle: the node when the upstream comes back, and when workers are replaced."""

from __future__ import annotations

import time
from collections import Counter

import requests

from bench import wrk
from bench.client import Prober
from bench.harness import (
    ADMIN_TOKEN,
    DEFAULT_CLASS,
    Service,
    control,
    event_counts,
    metric,
    ready_workers,
    wait_for,
    worker_pids,
)
from bench.report import Target
from bench.scenarios.common import Context, generate_request, log

DEFAULT = (DEFAULT_CLASS,)
BREAKER_TIMEOUT = 5
NODE_EVENTS = (
    "circuit_breaker_open",
    "circuit_breaker_half_open",
    "circuit_breaker_closed",
    "heal_requested",
    "http_client_auto_reset",
)


def recovery(ctx: Context) -> None:
    """The simulator is killed for 10 s, then restarted on its port: seconds from its return
    to the node's first successful answer."""
    rounds = ctx.rounds_or(3)
    down = ctx.seconds(10, 3)
    env = {"CIRCUIT_BREAKER_TIMEOUT": str(BREAKER_TIMEOUT)}
    ctx.record(
        "recovery",
        node_env=env,
        downtime_seconds=down,
        rounds=rounds,
        how="SIGTERM the simulator, restart it on the same port; 4 client threads call the "
        "node in a loop; 'back' is when the new simulator first answers /_sim/health (polled "
        "every 50 ms, so the figure may be up to ~50 ms short)",
    )
    for worker_class in ctx.classes_or(DEFAULT):
        sim = ctx.stack.simulator()
        node = ctx.stack.node(sim, worker_class, **env)
        measure = ctx.measure(
            "recovery",
            worker_class,
            "upstream back -> first node 200",
            "s",
            Target("<=", BREAKER_TIMEOUT + 1, "max"),
        )
        for number in range(rounds):
            sim, seconds, detail = _outage(ctx, sim, node, down)
            measure.add(round(seconds, 3), **detail)
            log(
                f"recovery {worker_class} round {number + 1}/{rounds}: first 200 after "
                f"{seconds:.2f} s ({detail})"
            )
        ctx.stack.stop(node)
        ctx.stack.stop(sim)


def _outage(
    ctx: Context, sim: Service, node: Service, down: float
) -> tuple[Service, float, dict[str, object]]:
    log_start = node.log_path.stat().st_size
    prober = Prober(node.url).start()
    try:
        time.sleep(1)
        went_down = time.monotonic()
        ctx.stack.stop(sim)
        time.sleep(max(0.0, went_down + down - time.monotonic()))
        all_open = metric(node, "l104_node_circuit_open")
        back_at = time.monotonic()
        sim = ctx.stack.simulator(sim.port)
        up = time.monotonic()
        wait_for(lambda: prober.first_success_after(up) is not None, 60, "a node success")
        first = prober.first_success_after(up)
        assert first is not None
    finally:
        prober.stop()
    during = Counter(o for s, _, o in prober.outcomes if went_down < s < up)
    detail = {
        "all_breakers_open_before_restart": all_open == 1.0,
        "restart_seconds": round(up - back_at, 3),
        "answers_while_down": dict(during),
        "node_events": event_counts(node, log_start, NODE_EVENTS),
    }
    return sim, first - up, detail


RECYCLES = 20
CONNECTIONS = 50
UPSTREAM_LATENCY_MS = 20


def recycle(ctx: Context) -> None:
    """20 workers recycled through POST /self/heal?recycle_workers=true under 50 connections:
    failed client requests (and, for reference, failures in as long a run without recycles)."""
    rounds = ctx.rounds_or(1)
    recycles = 4 if ctx.quick else RECYCLES
    env = {"ADMIN_TOKEN": ADMIN_TOKEN, "WORKER_MIN_AGE": "0"}
    ctx.record(
        "recycle",
        node_env={**env, "ADMIN_TOKEN": "(set)"},
        connections=CONNECTIONS,
        upstream_latency_ms=UPSTREAM_LATENCY_MS,
        recycles_per_round=recycles,
        rounds=rounds,
        how="wrk (50 keep-alive connections) runs while POST /self/heal?recycle_workers=true "
        "is repeated, each time waiting until both old worker pids are gone and two new "
        "workers run, until the recycles are counted",
    )
    for worker_class in ctx.classes_or(DEFAULT):
        sim = ctx.stack.simulator()
        node = ctx.stack.node(sim, worker_class, **env)
        control(sim).configure(latency_ms=UPSTREAM_LATENCY_MS)
        failed = ctx.measure(
            "recycle",
            worker_class,
            f"failed requests, {recycles} recycles",
            "",
            Target("==", 0, "max"),
        )
        clean = ctx.measure("recycle", worker_class, "failed requests, no recycles", "")
        for number in range(rounds):
            for kind in ("recycles", "clean") if number % 2 == 0 else ("clean", "recycles"):
                if kind == "clean":
                    res = wrk.run(
                        node.url,
                        generate_request(False),
                        connections=CONNECTIONS,
                        seconds=10,
                        timeout=10,
                    )
                    clean.add(res.failed, requests=res.requests)
                    continue
                res, seconds, done = _recycling(node, recycles)
                failed.add(
                    res.failed,
                    requests=res.requests,
                    recycles=done,
                    seconds=round(seconds, 1),
                    socket_errors=res.socket_errors,
                    non_2xx=res.non_2xx,
                )
                log(
                    f"recycle {worker_class} round {number + 1}/{rounds}: {done} recycles in "
                    f"{seconds:.1f} s, {res.failed} of {res.requests} requests failed "
                    f"({res.socket_errors} socket errors, {res.non_2xx} non-2xx)"
                )
        ctx.stack.stop(node)
        ctx.stack.stop(sim)


def _recycling(node: Service, recycles: int) -> tuple[wrk.WrkResult, float, int]:
    load = wrk.Wrk(
        node.url, generate_request(False), connections=CONNECTIONS, seconds=900, timeout=10
    )
    started = time.monotonic()
    done = 0
    try:
        time.sleep(1)
        workers = worker_pids(node)
        while done < recycles:
            answer = requests.post(
                f"{node.url}/self/heal?recycle_workers=true",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            answer.raise_for_status()
            old = workers

            def replaced(old: set[int] = old) -> bool:
                # The next heal must find every worker ready: one still booting would take
                # the new heal generation as its starting point and never recycle.
                now = worker_pids(node)
                return not now & old and len(now) >= len(old) and now <= ready_workers(node)

            wait_for(replaced, 120, "every worker to be replaced")
            workers = worker_pids(node)
            done += len(old)
            time.sleep(0.5)  # the new workers serve a moment before the next recycle
        time.sleep(1)
    finally:
        result = load.stop()
    return result, time.monotonic() - started, done
