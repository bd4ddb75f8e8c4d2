"""memory: each worker's RSS after many requests, and its growth from 10 % to 100 % of them."""

from __future__ import annotations

import math

from bench import wrk
from bench.harness import DEFAULT_CLASS, Service, rss_mb, worker_pids
from bench.report import Target
from bench.scenarios.common import Context, generate_request, log

DEFAULT = (DEFAULT_CLASS,)
CONNECTIONS = 16


def memory(ctx: Context) -> None:
    """100k generate calls through the node (10k with --quick)."""
    total = 10_000 if ctx.quick else 100_000
    early = total // 10
    rounds = ctx.rounds_or(1)
    ctx.record(
        "memory",
        requests=total,
        first_snapshot_at=early,
        connections=CONNECTIONS,
        rounds=rounds,
        how="VmRSS of each child of the gunicorn master (a fresh node per round); growth is "
        "the largest of the workers' (RSS at the end / RSS after the first 10 %) - 1",
    )
    for worker_class in ctx.classes_or(DEFAULT):
        rss = ctx.measure("memory", worker_class, "RSS per worker (max)", "MB", Target("<=", 80))
        growth = ctx.measure(
            "memory", worker_class, f"RSS growth {early} -> {total} req", "%", Target("<=", 5)
        )
        for number in range(rounds):
            sim = ctx.stack.simulator()
            node = ctx.stack.node(sim, worker_class)
            pids = worker_pids(node)
            done, rate = _drive(node, 0, early, 0.0)
            first = {pid: rss_mb(pid) for pid in pids}
            done, rate = _drive(node, done, total, rate)
            last = {pid: rss_mb(pid) for pid in pids}
            if worker_pids(node) != pids:
                raise RuntimeError("a worker was replaced during the memory run")
            worst = max((last[p] / first[p] - 1) * 100 for p in pids)
            rss.add(round(max(last.values()), 1), per_worker_mb=sorted(last.values()))
            growth.add(
                round(worst, 2),
                first_mb=sorted(first.values()),
                requests=done,
                rate_rps=round(rate),
            )
            log(
                f"memory {worker_class} round {number + 1}/{rounds}: {done} requests, RSS "
                f"{_mb(first)} MB after {early}, {_mb(last)} MB at the end"
            )
            ctx.stack.stop(node)
            ctx.stack.stop(sim)


def _mb(values: dict[int, float]) -> str:
    return "/".join(f"{v:.1f}" for v in sorted(values.values()))


def _drive(node: Service, done: int, goal: int, rate: float) -> tuple[int, float]:
    """Send generate calls until `goal` have been answered in all; (answered, req/s)."""
    while done < goal:
        left = goal - done
        # Short runs, re-estimating the rate each time, so the count overshoots little.
        seconds = 3 if not rate else max(1, min(15, math.ceil(left / rate)))
        res = wrk.run(node.url, generate_request(False), connections=CONNECTIONS, seconds=seconds)
        if res.failed:
            raise RuntimeError(f"{res.failed} requests failed during the memory run")
        done += res.requests
        rate = res.rps
    return done, rate
