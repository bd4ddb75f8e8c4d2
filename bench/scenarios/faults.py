"""fail-fast, failover and streaming: the node when models fail, and SSE time to first byte."""

from __future__ import annotations

import statistics
import time

import requests

from bench import wrk
from bench.client import StreamClient
from bench.harness import (
    DEFAULT_CLASS,
    MODELS,
    PROMPT,
    Service,
    control,
    generate_path,
    metric,
    wait_for,
)
from bench.report import Target
from bench.scenarios.common import HEALTH, Context, Endpoint, generate_request, log

DEFAULT = (DEFAULT_CLASS,)


def fail_fast(ctx: Context) -> None:
    """Every breaker open: the node's answer time and rate against its own /health."""
    rounds = ctx.rounds_or(5)
    seconds = 1
    env = {"CIRCUIT_BREAKER_TIMEOUT": "3600", "RETRY_BACKOFF_BASE": "0.01"}
    ctx.record("fail-fast", node_env=env, seconds_per_run=seconds, rounds=rounds)
    for worker_class in ctx.classes_or(DEFAULT):
        sim = ctx.stack.simulator()
        node = ctx.stack.node(sim, worker_class, **env)
        sim_control = control(sim)
        sim_control.fault("503", model="*")
        answer = _open_every_breaker(node)
        calls_before = sim_control.calls()
        p99 = ctx.measure("fail-fast", worker_class, "node p99, 1 conn", "ms", Target("<=", 2))
        p99_gap = ctx.measure("fail-fast", worker_class, "node p99 - /health p99, 1 conn", "ms")
        rate = ctx.measure(
            "fail-fast", worker_class, "node req/s / /health req/s, 16 conn", "", Target(">=", 0.5)
        )
        runs = [
            ("fail", 1, generate_request(False)),
            ("health", 1, HEALTH),
            ("fail", 16, generate_request(False)),
            ("health", 16, HEALTH),
        ]
        for number in range(rounds):
            shift = number % 2  # alternate which of each pair goes first
            order = [runs[shift], runs[1 - shift], runs[2 + shift], runs[3 - shift]]
            res = {
                (name, c): wrk.run(node.url, request, connections=c, seconds=seconds)
                for name, c, request in order
            }
            fail1, health1 = res[("fail", 1)], res[("health", 1)]
            fail16, health16 = res[("fail", 16)], res[("health", 16)]
            p99.add(fail1.p99_ms, p50_ms=fail1.p50_ms, non_2xx=fail1.non_2xx)
            p99_gap.add(round(fail1.p99_ms - health1.p99_ms, 4), health_p99_ms=health1.p99_ms)
            rate.add(
                round(fail16.rps / health16.rps, 4),
                rps=round(fail16.rps),
                health_rps=round(health16.rps),
            )
            log(
                f"fail-fast {worker_class} round {number + 1}/{rounds}: p99 {fail1.p99_ms:.2f} ms"
                f" (/health {health1.p99_ms:.2f}), {fail16.rps:.0f} req/s"
                f" (/health {health16.rps:.0f})"
            )
        p99.detail["answer"] = f"{answer.status_code} {answer.text[:160]}"
        p99.detail["upstream_calls_while_measuring"] = sim_control.calls() - calls_before
        ctx.stack.stop(node)
        ctx.stack.stop(sim)


def _open_every_breaker(node: Service) -> requests.Response:
    """Call the node until every breaker is open; the answer it then gives."""
    with requests.Session() as session:

        def all_open() -> bool:
            session.post(node.url + generate_path(), data=PROMPT, timeout=30)
            return metric(node, "l104_node_circuit_open") == 1.0

        wait_for(all_open, 120, "every breaker to open")
        return session.post(node.url + generate_path(), data=PROMPT, timeout=30)


def failover(ctx: Context) -> None:
    """The first model answers 429 to every call; the second answers: success and p99 cost."""
    rounds = ctx.rounds_or(5)
    seconds = ctx.seconds(2, 1)
    connections = 4
    fault = {"fault": "429", "model": MODELS[0], "retry_delay": "0.001s"}
    ctx.record(
        "failover",
        connections=connections,
        seconds_per_run=seconds,
        rounds=rounds,
        fault=fault,
        paced_calls_per_run=PACED_CALLS,
        paced_pause_seconds=PACED_PAUSE,
        note="retryDelay 0.001s, but the node rests a model at least 0.1 s after a 429 "
        "(app/resilience/cooldowns.py), so under wrk only some calls "
        "(detail: first_model_tried_ratio) try the first model, get 429 and rotate; the paced "
        "runs (one call every 0.12 s, after the rest is over) make every call rotate",
    )
    for worker_class in ctx.classes_or(DEFAULT):
        sim = ctx.stack.simulator()
        node = ctx.stack.node(sim, worker_class)
        sim_control = control(sim)
        success = ctx.measure(
            "failover", worker_class, "success ratio", "", Target("==", 1.0, "min")
        )
        p99 = ctx.measure(
            "failover", worker_class, "node p99 - no-fault p99", "ms", Target("<=", 20)
        )
        paced = ctx.measure("failover", worker_class, "paced p50 - no-fault paced p50", "ms")
        for number in range(rounds):
            res: dict[str, wrk.WrkResult] = {}
            slow: dict[str, list[float]] = {}
            tried_first: float = 0.0
            for kind in ["clean", "fault"] if number % 2 == 0 else ["fault", "clean"]:
                sim_control.reset()
                if kind == "fault":
                    sim_control.fault(**fault)
                res[kind] = wrk.run(
                    node.url, generate_request(False), connections=connections, seconds=seconds
                )
                if kind == "fault":
                    by_model = sim_control.stats()["by_model"]
                    tried_first = by_model.get(MODELS[0], 0) / max(1, res[kind].requests)
                    sim_control.reset()
                    sim_control.fault(**fault)
                slow[kind] = _paced(node.url)
                if kind == "fault":
                    paced_tried = sim_control.stats()["by_model"].get(MODELS[0], 0)
            hit, clean = res["fault"], res["clean"]
            success.add(
                round(hit.ok / hit.requests, 6) if hit.requests else 0.0,
                requests=hit.requests,
                failed=hit.failed,
                first_model_tried_ratio=round(tried_first, 3),
            )
            p99.add(
                round(hit.p99_ms - clean.p99_ms, 4),
                p99_ms=hit.p99_ms,
                clean_p99_ms=clean.p99_ms,
                p50_ms=hit.p50_ms,
                clean_p50_ms=clean.p50_ms,
            )
            fault_p50 = statistics.median(slow["fault"])
            clean_p50 = statistics.median(slow["clean"])
            paced.add(
                round(fault_p50 - clean_p50, 4),
                p50_ms=round(fault_p50, 3),
                clean_p50_ms=round(clean_p50, 3),
                first_model_tried=f"{paced_tried}/{PACED_CALLS}",
            )
            log(
                f"failover {worker_class} round {number + 1}/{rounds}: {hit.failed} failed of "
                f"{hit.requests}, p99 {hit.p99_ms:.2f} ms (clean {clean.p99_ms:.2f} ms), "
                f"first model tried for {tried_first:.0%} of calls"
            )
        ctx.stack.stop(node)
        ctx.stack.stop(sim)


PACED_CALLS = 20
PACED_PAUSE = 0.12


def _paced(url: str) -> list[float]:
    """Milliseconds of PACED_CALLS generate calls made one at a time, PACED_PAUSE apart."""
    times: list[float] = []
    with requests.Session() as session:
        for _ in range(PACED_CALLS):
            time.sleep(PACED_PAUSE)
            start = time.perf_counter()
            answer = session.post(url + generate_path(), data=PROMPT, timeout=30)
            times.append((time.perf_counter() - start) * 1000)
            if answer.status_code != 200:
                raise RuntimeError(f"paced failover call answered {answer.status_code}")
    return times


CHUNKS = 20
CHUNK_DELAY_MS = 1


def streaming(ctx: Context) -> None:
    """SSE with 20 chunks: time to the first body byte via the node minus direct."""
    rounds = ctx.rounds_or(5)
    iterations = 20 if ctx.quick else 60
    ctx.record(
        "streaming",
        stream_chunks=CHUNKS,
        chunk_delay_ms=CHUNK_DELAY_MS,
        streams_per_target_per_round=iterations,
        rounds=rounds,
        client="http.client, one keep-alive connection per target, targets alternated per call",
    )
    for worker_class in ctx.classes_or(DEFAULT):
        sim = ctx.stack.simulator()
        nginx = ctx.stack.nginx(sim)
        node = ctx.stack.node(sim, worker_class)
        bare = ctx.stack.naive_proxy(sim, kind="bare")
        control(sim).configure(stream_chunks=CHUNKS, chunk_delay_ms=CHUNK_DELAY_MS)
        endpoints = [
            Endpoint("direct", sim.url, True),
            Endpoint("nginx", nginx.url, True),
            Endpoint("bare proxy", bare.url),
            Endpoint(worker_class, node.url),
        ]
        clients = {e.name: StreamClient(e.url, e.direct) for e in endpoints}
        node_gap = ctx.measure(
            "streaming", worker_class, "node TTFB - direct TTFB", "ms", Target("<=", 2)
        )
        nginx_gap = ctx.measure("streaming", "nginx", "nginx TTFB - direct TTFB", "ms")
        bare_gap = ctx.measure("streaming", "bare proxy", "bare TTFB - direct TTFB (floor)", "ms")
        try:
            for client in clients.values():  # warm-up
                for _ in range(5):
                    client.ttfb()
            for number in range(rounds):
                times: dict[str, list[float]] = {name: [] for name in clients}
                short = 0
                for i in range(iterations):
                    names = list(clients)
                    shift = i % len(names)
                    for name in names[shift:] + names[:shift]:
                        seconds, events = clients[name].ttfb()
                        times[name].append(seconds * 1000)
                        short += events != CHUNKS
                med = {name: statistics.median(values) for name, values in times.items()}
                node_gap.add(
                    round(med[worker_class] - med["direct"], 4),
                    node_ttfb_ms=round(med[worker_class], 3),
                    direct_ttfb_ms=round(med["direct"], 3),
                    incomplete_streams=short,
                )
                nginx_gap.add(round(med["nginx"] - med["direct"], 4))
                bare_gap.add(round(med["bare proxy"] - med["direct"], 4))
                log(
                    f"streaming {worker_class} round {number + 1}/{rounds}: median TTFB "
                    + ", ".join(f"{k} {v:.3f} ms" for k, v in med.items())
                )
        finally:
            for client in clients.values():
                client.close()
        ctx.stack.stop(node)
        ctx.stack.stop(bare)
        ctx.stack.stop(nginx)
        ctx.stack.stop(sim)
