"""overhead and throughput: the node against direct calls and an nginx hop."""

from __future__ import annotations

from bench import wrk
from bench.harness import WORKER_CLASSES, Service
from bench.report import Target
from bench.scenarios.common import Context, Endpoint, generate_request, interleaved, log

ALL = WORKER_CLASSES


NAIVE = "naive proxy"
BARE = "bare proxy"
LOCAL = "flask alone"


def _endpoints(
    ctx: Context, classes: tuple[str, ...], with_nginx: bool = True, with_local: bool = False
) -> tuple[Service, list[Endpoint], dict[str, Service]]:
    sim = ctx.stack.simulator()
    endpoints = [Endpoint("direct", sim.url, direct=True)]
    if with_nginx:
        endpoints.append(Endpoint("nginx", ctx.stack.nginx(sim).url, direct=True))
        endpoints.append(Endpoint(NAIVE, ctx.stack.naive_proxy(sim).url))
        endpoints.append(Endpoint(BARE, ctx.stack.naive_proxy(sim, kind="bare").url))
    if with_local:
        endpoints.append(Endpoint(LOCAL, ctx.stack.naive_proxy(sim, kind="local").url))
    nodes = {c: ctx.stack.node(sim, c) for c in classes}
    endpoints += [Endpoint(c, node.url) for c, node in nodes.items()]
    return sim, endpoints, nodes


def _warm(endpoints: list[Endpoint], connections: int, seconds: float = 1) -> None:
    for e in endpoints:
        wrk.run(e.url, generate_request(e.direct), connections=connections, seconds=seconds)


def overhead(ctx: Context) -> None:
    """Fast upstream, one connection: node p50 minus direct p50 (nginx for reference)."""
    classes = ctx.classes_or(ALL)
    seconds = ctx.seconds(2, 1)
    rounds = ctx.rounds_or(4)
    ctx.record("overhead", connections=1, seconds_per_run=seconds, rounds=rounds)
    _, endpoints, _ = _endpoints(ctx, classes, with_local=True)
    _warm(endpoints, 1)
    nodes = {
        c: ctx.measure("overhead", c, "node p50 - direct p50", "ms", Target("<=", 0.8))
        for c in classes
    }
    nginx = ctx.measure("overhead", "nginx", "nginx p50 - direct p50", "ms")
    naive = ctx.measure("overhead", NAIVE, "naive p50 - direct p50", "ms")
    bare = ctx.measure("overhead", BARE, "bare p50 - direct p50 (floor)", "ms")
    local = ctx.measure("overhead", LOCAL, "flask alone p50 - direct p50 (no upstream call)", "ms")
    against_naive = {
        c: ctx.measure("overhead", c, "node p50 - naive proxy p50", "ms") for c in classes
    }

    def run(e: Endpoint) -> wrk.WrkResult:
        return wrk.run(e.url, generate_request(e.direct), connections=1, seconds=seconds)

    def each_round(number: int, res: dict[str, wrk.WrkResult]) -> None:
        direct = res["direct"]
        references = [("nginx", nginx), (NAIVE, naive), (BARE, bare), (LOCAL, local)]
        for name, m in [*references, *nodes.items()]:
            m.add(
                round(res[name].p50_ms - direct.p50_ms, 4),
                p50_ms=res[name].p50_ms,
                direct_p50_ms=direct.p50_ms,
                failed=res[name].failed,
            )
        for name, m in against_naive.items():
            m.add(round(res[name].p50_ms - res[NAIVE].p50_ms, 4), naive_p50_ms=res[NAIVE].p50_ms)
        log(f"overhead round {number + 1}/{rounds}: " + _p50s(res))

    interleaved(endpoints, rounds, run, each_round)


def _p50s(res: dict[str, wrk.WrkResult]) -> str:
    return ", ".join(f"{k} p50 {v.p50_ms:.3f} ms" for k, v in res.items())


def throughput(ctx: Context) -> None:
    """Fast upstream, 16 connections: node req/s divided by direct req/s."""
    classes = ctx.classes_or(ALL)
    seconds = ctx.seconds(2, 1)
    rounds = ctx.rounds_or(5)
    ctx.record("throughput", connections=16, seconds_per_run=seconds, rounds=rounds)
    _, endpoints, _ = _endpoints(ctx, classes)
    _warm(endpoints, 16)
    nodes = {c: ctx.measure("throughput", c, "node req/s / direct req/s", "") for c in classes}
    nginx = ctx.measure("throughput", "nginx", "nginx req/s / direct req/s", "")
    naive = ctx.measure("throughput", NAIVE, "naive req/s / direct req/s", "")
    bare = ctx.measure("throughput", BARE, "bare req/s / direct req/s (floor)", "")
    beats_naive = {
        c: ctx.measure("throughput", c, "node req/s / naive req/s", "", Target(">=", 1.0))
        for c in classes
    }

    def run(e: Endpoint) -> wrk.WrkResult:
        return wrk.run(e.url, generate_request(e.direct), connections=16, seconds=seconds)

    def each_round(number: int, res: dict[str, wrk.WrkResult]) -> None:
        direct = res["direct"]
        for name, m in [("nginx", nginx), (NAIVE, naive), (BARE, bare), *nodes.items()]:
            m.add(
                round(res[name].rps / direct.rps, 4),
                rps=round(res[name].rps),
                direct_rps=round(direct.rps),
                failed=res[name].failed,
            )
        for name, m in beats_naive.items():
            m.add(round(res[name].rps / res[NAIVE].rps, 4), naive_rps=round(res[NAIVE].rps))
        log(f"throughput round {number + 1}/{rounds}: " + _rps(res))

    interleaved(endpoints, rounds, run, each_round)


def _rps(res: dict[str, wrk.WrkResult]) -> str:
    return ", ".join(f"{k} {v.rps:.0f} req/s ({v.failed} failed)" for k, v in res.items())
