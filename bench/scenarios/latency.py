"""overhead, throughput and concurrency: the node against direct calls and an nginx hop."""

from __future__ import annotations

from bench import wrk
from bench.harness import POOL_SIZE, THREADS, WORKER_CLASSES, Service, control
from bench.report import Target
from bench.scenarios.common import Context, Endpoint, generate_request, interleaved, log

ALL = WORKER_CLASSES
DEFAULT = ("gthread",)


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


CONNECTIONS = 400
LATENCY_MS = 1000


def concurrency(ctx: Context) -> None:
    """Upstream answers after 1 s, 400 connections: node req/s against the ideal 400 req/s."""
    classes = ctx.classes_or(ALL)
    seconds = ctx.seconds(10, 4)
    rounds = ctx.rounds_or(3)
    ideal = CONNECTIONS * 1000 / LATENCY_MS
    ctx.record(
        "concurrency",
        connections=CONNECTIONS,
        upstream_latency_ms=LATENCY_MS,
        seconds_per_run=seconds,
        rounds=rounds,
        gunicorn_threads=THREADS,
        upstream_pool_size=POOL_SIZE,
        ideal_rps=ideal,
        rate="connections / mean latency (Little's law; wrk keeps every connection busy), "
        "or wrk's completed/duration when a run had timeouts or socket errors; wrk's "
        "completed/duration is in the detail (it loses each connection's last in-flight call, "
        "so with 1 s calls over 10 s it cannot exceed 0.9 of the ideal)",
        note="sync nodes are restarted after each run: their listen backlog stays full",
    )
    sim, endpoints, nodes = _endpoints(ctx, classes, with_nginx=False)
    control(sim).configure(latency_ms=LATENCY_MS)
    log("concurrency: warming up 400 connections")
    _warm([e for e in endpoints if e.name != "sync"], CONNECTIONS, seconds=3)
    ratio = {
        c: ctx.measure("concurrency", c, "node req/s / 400", "", Target(">=", 0.9)) for c in classes
    }
    errors = {
        c: ctx.measure("concurrency", c, "failed requests", "", Target("==", 0, "max"))
        for c in classes
    }
    direct = ctx.measure("concurrency", "direct", "direct req/s / 400", "")

    def run(e: Endpoint) -> wrk.WrkResult:
        result = wrk.run(
            e.url,
            generate_request(e.direct),
            connections=CONNECTIONS,
            seconds=seconds,
            threads=2,
            timeout=5,
        )
        if e.name == "sync":
            # A sync node would go on serving the requests left in its backlog for minutes.
            ctx.stack.stop(nodes["sync"])
            nodes["sync"] = ctx.stack.node(sim, "sync")
            endpoints[endpoints.index(e)] = Endpoint("sync", nodes["sync"].url)
        return result

    def each_round(number: int, res: dict[str, wrk.WrkResult]) -> None:
        base = res["direct"]
        base_rps = base.sustained_rps(CONNECTIONS)
        direct.add(
            round(base_rps / ideal, 4),
            rps=round(base_rps, 1),
            wrk_rps=round(base.rps, 1),
            failed=base.failed,
        )
        for c in classes:
            node = res[c]
            rps = node.sustained_rps(CONNECTIONS)
            ratio[c].add(
                round(rps / ideal, 4),
                rps=round(rps, 1),
                wrk_rps=round(node.rps, 1),
                node_over_direct=round(rps / base_rps, 4),
                mean_ms=round(node.mean_ms, 1),
                p50_ms=node.p50_ms,
                p99_ms=node.p99_ms,
            )
            errors[c].add(
                node.failed,
                timeouts=node.timeouts,
                socket_errors=node.socket_errors,
                non_2xx=node.non_2xx,
            )
        log(f"concurrency round {number + 1}/{rounds}: " + _rps(res))

    interleaved(endpoints, rounds, run, each_round)
