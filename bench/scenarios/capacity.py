"""capacity: slow calls and streams held at once by the node as shipped (no worker class,
thread count, pool size or call limit of the scenario's own), against the same load sent
straight to the simulator, with the old default (gthread, 64 threads) as the reference row."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from bench import wrk
from bench.harness import (
    PROMPT,
    SIM_KEY,
    Service,
    control,
    generate_path,
    metric,
    rss_mb,
    wait_for,
    worker_pids,
)
from bench.report import Target
from bench.scenarios.common import Context, generate_request, log
from tests.support.http_load import (
    calls_at_once,
    held_connections,
    streams_at_once,
)
from tests.support.simulator_client import SimulatorControl

DEFAULT = "default"
OLD_DEFAULT = "gthread 64 (old default)"
SIZED_GTHREAD = "gthread 1500 threads"
# What each node sets beyond the upstream it is pointed at: nothing for the default.
NODES: dict[str, dict[str, str]] = {
    DEFAULT: {},
    OLD_DEFAULT: {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "64"},
    # `--worker-class all`: the other mechanism considered, a gthread pool sized like the limit
    SIZED_GTHREAD: {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "1500"},
}
BODY = PROMPT.encode()
# The 2000 x 10 s row also calls the default node's OpenAI-compatible surface (an open node:
# no client key, so no Authorization header), beside its native row in the same rounds.
OPENAI = "default, OpenAI-compatible"
OPENAI_PATH = "/v1beta/openai/chat/completions"
OPENAI_BODY = b'{"model": "gemini-3.8-flash", "messages": [{"role": "user", "content": "hi"}]}'
SIM_HEADERS = {"Content-Type": "application/json", "x-goog-api-key": SIM_KEY}
NODE_HEADERS = {"Content-Type": "application/json"}


@contextmanager
def client_gc_paused() -> Iterator[None]:
    """No cyclic GC in the bench's own client while it measures: a collection of its
    thousands of connections' objects pauses it for 50-100 ms, which it would report as the
    node's latency. Collected once after."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


@contextmanager
def _peak_rss(node: Service | None) -> Iterator[dict[int, float]]:
    """Each worker's highest RSS (MB), sampled every 0.5 s while the block runs."""
    peaks: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while node is not None and not stop.wait(0.5):
            for pid in worker_pids(node):
                try:
                    peaks[pid] = max(peaks.get(pid, 0.0), rss_mb(pid))
                except (OSError, RuntimeError):
                    pass

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


def capacity(ctx: Context) -> None:
    """The six capacity measures of issue 13; see the module docstring."""
    names = [DEFAULT, OLD_DEFAULT] + ([SIZED_GTHREAD] if ctx.worker_classes else [])
    sim = ctx.stack.simulator()
    nodes = {name: ctx.stack.node(sim, None, **NODES[name]) for name in names}
    ctx.record(
        "capacity",
        nodes={name: NODES[name] or "the shipped defaults" for name in names},
        client="wrk for 400 connections; aiohttp (tests/support/http_load.py) for the rest",
    )
    _slow_calls(ctx, sim, nodes)
    _held_calls(ctx, sim, nodes)
    _streams(ctx, sim, nodes)
    _connection_burst(ctx, sim, nodes)
    _over_the_limit(ctx, control(sim), nodes[DEFAULT])


def _slow_calls(ctx: Context, sim: Service, nodes: dict[str, Service]) -> None:
    """400 connections, upstream 1 s: node req/s against direct req/s, the connections'
    first calls spread over 1 s (steady load); then wrk, whose 400 connections call in step
    (a burst of 400 calls every second), reported alongside."""
    result = _held(ctx, sim, nodes, connections=400, latency=1.0, seconds=ctx.seconds(16, 10))
    ratio = {
        n: ctx.measure("capacity", n, "400 conn, 1 s upstream: req/s / direct", "", _at_least(n))
        for n in nodes
    }
    for rates in result:
        for name in nodes:
            ratio[name].add(round(rates[name] / rates["direct"], 4), rps=round(rates[name], 1))
    _in_step(ctx, sim, nodes)


def _in_step(ctx: Context, sim: Service, nodes: dict[str, Service]) -> None:
    connections, seconds, rounds = 400, ctx.seconds(10, 5), ctx.rounds_or(3)
    ratio = {
        n: ctx.measure("capacity", n, "400 conn in step (wrk): req/s / direct", "") for n in nodes
    }

    def run(url: str, direct: bool) -> wrk.WrkResult:
        request = generate_request(direct)
        return wrk.run(url, request, connections=connections, seconds=seconds, timeout=10)

    for url, direct in [(sim.url, True), *((n.url, False) for n in nodes.values())]:
        run(url, direct)  # warm: every connection and pool opened once
    for number in range(rounds):
        base = run(sim.url, True).sustained_rps(connections)
        for name, node in nodes.items():
            result = run(node.url, False)
            rps = result.sustained_rps(connections)
            ratio[name].add(round(rps / base, 4), rps=round(rps, 1), failed=result.failed)
        log(f"capacity 400 in step round {number + 1}/{rounds}: direct {base:.0f} req/s")


def _held_calls(ctx: Context, sim: Service, nodes: dict[str, Service]) -> None:
    """2000 connections, upstream 10 s: req/s against the ideal 200, errors, p99, and each
    worker's peak RSS while 2000 calls are in flight."""
    _held(ctx, sim, nodes, connections=2000, latency=10.0, seconds=ctx.seconds(34, 24))


def _held(
    ctx: Context,
    sim: Service,
    nodes: dict[str, Service],
    connections: int,
    latency: float,
    seconds: float,
) -> list[dict[str, float]]:
    """`connections` clients calling again as soon as answered, each one's first call at a
    random moment of the first `latency` seconds (a steady load, not one burst), through
    each node and straight to the simulator; req/s, failures, p99 and worker RSS. Returns
    each round's req/s by target."""
    rounds = ctx.rounds_or(2)
    warm = latency * 1.2  # every client has had its first answer by then
    ideal = connections / latency
    name = f"{connections} conn, {latency:g} s upstream"
    control(sim).configure(latency_ms=int(latency * 1000))
    ctx.record(
        "capacity",
        **{
            name: {
                "upstream_latency_s": latency,
                "seconds": seconds,
                "measured_after_s": warm,
                "first_calls_spread_over_s": latency,
                "ideal_rps": ideal,
                "rate": "calls that ended between measured_after_s and seconds, per second",
            }
        },
    )
    targets = [(sim.url, True, None), *((n.url, False, n) for n in nodes.values())]
    labels = ["direct", *nodes]
    slow = latency > 5  # the 2000 x 10 s row has absolute targets
    if slow:  # the OpenAI-compatible surface of the default node, right after its native row
        labels.insert(2, OPENAI)
        targets.insert(2, (nodes[DEFAULT].url, False, nodes[DEFAULT]))
    rate = {
        n: ctx.measure(
            "capacity", n, f"{name}: req/s / {ideal:g}", "", _at_least(n) if slow else None
        )
        for n in labels
    }
    errors = {n: ctx.measure("capacity", n, f"{name}: failed", "", _zero(n)) for n in labels}
    p99 = {
        n: ctx.measure(
            "capacity",
            n,
            f"{name}: p99",
            "s",
            Target("<=", latency + 0.5) if slow and n not in ("direct", OPENAI) else None,
        )
        for n in labels
    }
    same_p99 = (
        ctx.measure(
            "capacity", OPENAI, f"{name}: p99 / native p99 (same round)", "", Target("<=", 1.1)
        )
        if OPENAI in labels
        else None
    )
    memory = {
        n: ctx.measure(
            "capacity",
            n,
            f"{connections} in flight: RSS per worker",
            "MB",
            Target("<=", 150, "max") if slow and n == DEFAULT else None,
        )
        for n in nodes
    }
    results = []
    for number in range(rounds):
        rates: dict[str, float] = {}
        round_p99: dict[str, float] = {}
        for index, label in enumerate(labels):
            if label == OPENAI:  # the default node, restarted or not
                targets[index] = (nodes[DEFAULT].url, False, nodes[DEFAULT])
            url, direct, node = targets[index]
            path, body = (OPENAI_PATH, OPENAI_BODY) if label == OPENAI else (generate_path(), BODY)
            started = time.monotonic()
            with _peak_rss(node) as peaks, client_gc_paused():
                calls = held_connections(
                    url + path,
                    connections,
                    seconds,
                    body,
                    SIM_HEADERS if direct else NODE_HEADERS,
                    stagger=latency,
                    timeout=60,
                    seed=number,
                )
            window = [c for c in calls if started + warm <= c.end <= started + seconds]
            ok = [c for c in window if c.status == 200]
            failed = sum(c.status != 200 for c in calls)
            rates[label] = rps = len(ok) / (seconds - warm)
            rate[label].add(round(rps / ideal, 4), rps=round(rps, 1), calls=len(calls))
            errors[label].add(failed, by_status=dict(Counter(str(c.status) for c in calls)))
            round_p99[label] = _quantile([c.seconds for c in ok], 0.99)
            p99[label].add(round(round_p99[label], 3))
            if label == OPENAI and same_p99 is not None:
                same_p99.add(
                    round(round_p99[OPENAI] / round_p99[DEFAULT], 4),
                    native_p99_s=round(round_p99[DEFAULT], 3),
                )
            if label in memory:
                memory[label].add(round(max(peaks.values(), default=0.0), 1), workers=peaks)
            log(f"capacity {name} {label}: {rps:.1f} req/s, {failed} failed")
            if failed and node is not None:
                # The calls its client gave up on still wait in its queue and would load the
                # machine for minutes: the next measures get a fresh node.
                for pid in worker_pids(node):  # not gracefully: that would wait for them
                    os.kill(pid, signal.SIGKILL)
                ctx.stack.stop(node)
                owner = DEFAULT if label == OPENAI else label
                nodes[owner] = ctx.stack.node(sim, None, **NODES[owner])
                for at, (_, _, before) in enumerate(targets):  # both surfaces of the default
                    if before is node:
                        targets[at] = (nodes[owner].url, False, nodes[owner])
        results.append(rates)
    return results


def _streams(ctx: Context, sim: Service, nodes: dict[str, Service]) -> None:
    """1000 SSE streams at once, 30 chunks 1 s apart: all complete; chunk delay p99 (from
    the simulator's `simSentAt` stamp to arrival at the client)."""
    streams, chunks, rounds = 1000, 30, ctx.rounds_or(2)
    control(sim).configure(latency_ms=0, stream_chunks=chunks, chunk_delay_ms=1000, stamp_chunks=1)
    ctx.record(
        "capacity",
        streams={
            "streams": streams,
            "chunks": chunks,
            "chunk_gap_s": 1,
            "opened_over_s": 1,
            "why_spread": "streams opened in the same millisecond send every chunk in the same "
            "millisecond too: the client then measures its own queue (direct p99 73-333 ms)",
            "nodes": "not the old default: it holds 128 streams at once, so 1000 streams of "
            "29 s would take 4 minutes",
        },
    )
    path = generate_path(stream=True)
    targets = {"direct": (sim.url, SIM_HEADERS)}
    targets.update({n: (s.url, NODE_HEADERS) for n, s in nodes.items() if n != OLD_DEFAULT})
    complete = {
        n: ctx.measure(
            "capacity", n, "1000 streams x 30 chunks: complete", "", Target("==", 1.0, "min")
        )
        for n in targets
    }
    delay = {
        n: ctx.measure(
            "capacity",
            n,
            "1000 streams: chunk delay p99",
            "ms",
            Target("<=", 50) if n == DEFAULT else None,
        )
        for n in targets
    }
    for _ in range(rounds):
        for label, (url, headers) in targets.items():
            with client_gc_paused():
                done = streams_at_once(url + path, streams, BODY, headers, timeout=120, spread=1)
            whole = [s for s in done if s.status == 200 and len(s.events) == chunks]
            delays = [(at - data["simSentAt"]) * 1000 for s in whole for at, data in s.events]
            complete[label].add(
                round(len(whole) / streams, 4),
                by_status=dict(Counter(str(s.status) for s in done)),
            )
            delay[label].add(
                round(_quantile(delays, 0.99), 2),
                p50_ms=round(_quantile(delays, 0.5), 2),
                max_ms=round(max(delays, default=float("nan")), 2),
            )
            log(f"capacity streams {label}: {len(whole)}/{streams} complete")
    control(sim).configure(stream_chunks=4, chunk_delay_ms=0, stamp_chunks=0)


def _connection_burst(ctx: Context, sim: Service, nodes: dict[str, Service]) -> None:
    """1000 new connections at once, each one GET /health: all answered, p99 TTFB."""
    count, rounds = 1000, ctx.rounds_or(3)
    targets = {
        "direct": sim.url + "/_sim/health",
        **{n: s.url + "/health" for n, s in nodes.items()},
    }
    answered = {
        n: ctx.measure("capacity", n, "1000 new conns: answered", "", Target("==", 1.0, "min"))
        for n in targets
    }
    ttfb = {
        n: ctx.measure(
            "capacity",
            n,
            "1000 new conns: /health TTFB p99",
            "s",
            None if n == "direct" else Target("<=", 1.0),
        )
        for n in targets
    }
    for _ in range(rounds):
        for label, url in targets.items():
            with client_gc_paused():
                calls = calls_at_once(url, count, method="GET", timeout=30, new_connections=True)
            ok = [c for c in calls if c.status == 200 and c.ttfb is not None]
            answered[label].add(round(len(ok) / count, 4))
            ttfb[label].add(
                round(_quantile([c.ttfb for c in ok if c.ttfb is not None], 0.99), 3),
                p50_s=round(_quantile([c.ttfb for c in ok if c.ttfb is not None], 0.5), 3),
            )


def _over_the_limit(ctx: Context, sim: SimulatorControl, node: Service) -> None:
    """The default node filled to its limit (MAX_CALLS_IN_FLIGHT per worker, the default)
    with 60 s calls, then more generateContent calls, in rounds while it stays full: every one
    of those is answered 503 at once, none reaches the upstream, and /health still answers."""
    limit = int(metric(node, "l104_calls_in_flight_limit") or 0)
    seconds, rounds, held = ctx.seconds(5, 3), ctx.rounds_or(3), 60
    sim.configure(latency_ms=held * 1000)
    ctx.record(
        "capacity",
        over_the_limit={
            "limit": limit,
            "held_call_s": held,
            "refused_by": "wrk, 2 connections",
            "rounds_while_full": rounds,
        },
    )
    refused_p99 = ctx.measure(
        "capacity", DEFAULT, "over the limit: 503 latency p99", "ms", Target("<", 10)
    )
    refused_share = ctx.measure(
        "capacity", DEFAULT, "over the limit: share answered 503", "", Target("==", 1.0, "min")
    )
    queued = ctx.measure(
        "capacity", DEFAULT, "over the limit: calls upstream past it", "", Target("==", 0, "max")
    )
    health = ctx.measure("capacity", DEFAULT, "over the limit: /health p99", "ms")
    # Well past the limit, a connection per call: however the connections fall between the
    # workers (a burst splits about 58/42 between two gevent workers here), each fills up. A
    # refused call's kept-alive connection would send the next call to the same full worker.
    filler = threading.Thread(
        target=calls_at_once,
        args=(node.url + generate_path(), limit + limit // 3),
        kwargs={
            "data": BODY,
            "headers": NODE_HEADERS,
            "spread": 4.0,
            "new_connections": True,
            "timeout": held + 30,
        },
        daemon=True,
    )
    filler.start()
    wait_for(  # every half second: each scrape costs the node
        lambda: metric(node, "l104_calls_in_flight") == limit, 60, "the node to fill", 0.5
    )
    time.sleep(6)  # the refused fillers' idle keep-alive connections are closed after 5 s
    for _ in range(rounds):
        before = sim.stats()
        # Two connections calling back to back (wrk, in C): the refusal's own cost, not a
        # queue of saturating clients.
        refused = wrk.run(
            node.url, generate_request(False), connections=2, seconds=seconds, threads=1
        )
        probe = wrk.run(node.url, wrk.Request("/health"), connections=2, seconds=2, threads=1)
        after = sim.stats()
        refused_p99.add(
            round(refused.p99_ms, 3),
            p50_ms=refused.p50_ms,
            max_ms=refused.max_ms,
            calls=refused.requests,
        )
        refused_share.add(
            round(refused.non_2xx / max(1, refused.requests), 4),
            other_errors=refused.socket_errors + refused.timeouts,
        )
        queued.add(
            after["total"] - before["total"], limit=limit, peak_in_flight=after["peak_in_flight"]
        )
        health.add(round(probe.p99_ms, 3), failed=probe.failed)
        log(f"capacity over the limit: {refused.requests} calls, p99 {refused.p99_ms} ms")
    if metric(node, "l104_calls_in_flight") != limit:
        log("capacity over the limit: the node was no longer full at the end (held calls ended)")
    filler.join(held + 60)
    sim.configure(latency_ms=0)


def _at_least(name: str) -> Target | None:
    return Target(">=", 0.9) if name == DEFAULT else None


def _zero(name: str) -> Target | None:
    return Target("==", 0, "max") if name == DEFAULT else None
