"""state-backend: what sharing state through Redis costs, against the in-node SQLite state."""

from __future__ import annotations

from bench import wrk
from bench.harness import DEFAULT_CLASS
from bench.report import Target
from bench.scenarios.common import Context, Endpoint, generate_request, interleaved, log

LOCAL, REDIS = "local state", "redis state"


def state_backend(ctx: Context) -> None:
    """Two nodes in front of one simulator, one on in-node state and one on loopback Redis
    (STATE_URL): p50 and req/s at 1 and 16 connections, measured in the same rounds."""
    classes = ctx.classes_or((DEFAULT_CLASS,))
    seconds = ctx.seconds(2, 1)
    rounds = ctx.rounds_or(4)
    ctx.record("state-backend", connections=[1, 16], seconds_per_run=seconds, rounds=rounds)
    sim = ctx.stack.simulator()
    redis = ctx.stack.redis()
    endpoints = []
    for worker_class in classes:
        local = ctx.stack.node(sim, worker_class)
        shared = ctx.stack.node(sim, worker_class, STATE_URL=redis.url)
        endpoints += [
            Endpoint(f"{worker_class} {LOCAL}", local.url),
            Endpoint(f"{worker_class} {REDIS}", shared.url),
        ]
    for connections in (1, 16):
        for e in endpoints:  # warm up: pools, breakers and cooldowns known to both backends
            wrk.run(e.url, generate_request(False), connections=connections, seconds=1)
        _compare(ctx, classes, endpoints, connections, seconds, rounds)


def _compare(
    ctx: Context,
    classes: tuple[str, ...],
    endpoints: list[Endpoint],
    connections: int,
    seconds: float,
    rounds: int,
) -> None:
    target = Target("<=", 0.5) if connections == 1 else None
    added = {
        c: ctx.measure(
            "state-backend", c, f"redis p50 - local p50, {connections} conn", "ms", target
        )
        for c in classes
    }
    rate = {
        c: ctx.measure("state-backend", c, f"redis req/s / local req/s, {connections} conn", "")
        for c in classes
    }

    def run(e: Endpoint) -> wrk.WrkResult:
        return wrk.run(e.url, generate_request(False), connections=connections, seconds=seconds)

    def each_round(number: int, res: dict[str, wrk.WrkResult]) -> None:
        for c in classes:
            local, shared = res[f"{c} {LOCAL}"], res[f"{c} {REDIS}"]
            added[c].add(
                round(shared.p50_ms - local.p50_ms, 4),
                redis_p50_ms=shared.p50_ms,
                local_p50_ms=local.p50_ms,
                failed=local.failed + shared.failed,
            )
            rate[c].add(round(shared.rps / local.rps, 4), redis_rps=round(shared.rps))
        summary = ", ".join(f"{k} p50 {v.p50_ms:.3f} ms {v.rps:.0f} req/s" for k, v in res.items())
        log(f"state-backend {connections} conn round {number + 1}/{rounds}: {summary}")

    interleaved(endpoints, rounds, run, each_round)
