"""tail: hung and slow upstream attempts (hedged attempts and stall detection, README's "Hung
and slow upstream calls"), on the shipped defaults, against the same load on a node with
HEDGE_ENABLED=false where a row compares the two.

One simulator; nodes of 2 gevent workers with two models in GEMINI_MODELS (so a hedge or a
stalled call has another model to go to; the simulator's faults are on "*"), as shipped or
with HEDGE_ENABLED=false. Each round of a hung-attempt row gets a fresh node (stalls count as
failures for the breakers, which must not carry over), warmed with no fault (WARM_CALLS calls
per model and call kind, a new connection each, so both workers' latency windows hold more
than the 20 samples the adaptive stall timeout needs) and then left idle for one hedge-budget
window (10 s), so the budget a fault run starts with is its own calls'. Latency is
measured per call by the asyncio client (`tests/support/http_load.py`; streams by the
scenario's own aiohttp loop, which times each stream's first event); upstream attempts are
the simulator's call counter; hedges are the node's `hedge_started` log lines, stalls its
`l104_upstream_stalls_total`.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
import requests

from app.resilience.hedging import HedgeConfig
from app.settings import Settings
from bench.harness import MODELS, PROMPT, Service, control, event_counts, generate_path, wait_for
from bench.report import Target
from bench.scenarios.capacity import client_gc_paused
from bench.scenarios.common import Context, log
from bench.scenarios.instructions import FEW, MANY, QUICK_FEW, QUICK_MANY, WARM_UP, count_worker
from tests.support.http_load import Call, calls_at_once, held_connections
from tests.support.simulator_client import SimulatorControl

TAIL_MODELS = MODELS[:2]
NODE_SETTINGS = {"GEMINI_MODELS": ",".join(TAIL_MODELS)}
HEDGING_OFF = {"HEDGE_ENABLED": "false"}
ON, OFF = "default", "HEDGE_ENABLED=false"
BODY = PROMPT.encode()
NODE_HEADERS = {"Content-Type": "application/json"}
CONNECTIONS = 16
WARM_CALLS = 120  # per node, model and call kind
_SHIPPED = Settings()
_HEDGE = HedgeConfig()  # the constants the settings do not name (allowance, stall multiple)
WORKERS = _SHIPPED.web_concurrency
BUDGET_WINDOW = 10.0  # seconds: the hedge budget's window (app.upstream.retry_budget)
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _quantile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def samples(node: Service, name: str) -> list[tuple[dict[str, str], float]]:
    """Every labelled sample of `name` on the node's /metrics (all workers summed)."""
    found = []
    for line in requests.get(f"{node.url}/metrics", timeout=10).text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            found.append((dict(_LABEL.findall(match.group(2))), float(match.group(3))))
    return found


def hedge_delays(node: Service) -> dict[str, float]:
    """`l104_hedge_delay_seconds` by "model/kind" (the highest of the live workers)."""
    return {
        f"{labels['model']}/{labels['kind']}": value
        for labels, value in samples(node, "l104_hedge_delay_seconds")
    }


def stall_timeout(p99: float) -> float:
    """The stall timeout README's rule gives for a model whose recent p99 is `p99`."""
    if _SHIPPED.upstream_stall_timeout:
        return _SHIPPED.upstream_stall_timeout
    cap = _SHIPPED.upstream_timeout[1]
    return min(cap, max(_HEDGE.stall_floor, _HEDGE.stall_multiple * p99))


@dataclass
class Snapshot:
    """The counters a run's figures are the difference of."""

    upstream: int
    outcomes: Counter[str]
    stalls: float
    log_offset: int


def snapshot(sim: SimulatorControl, node: Service) -> Snapshot:
    """The simulator's call counter and the node's hedge counters now."""
    outcomes: Counter[str] = Counter()
    for labels, value in samples(node, "l104_hedges_total"):
        outcomes[labels["outcome"]] += int(value)
    stalls = sum(value for _, value in samples(node, "l104_upstream_stalls_total"))
    return Snapshot(sim.calls(), outcomes, stalls, node.log_path.stat().st_size)


def since(before: Snapshot, sim: SimulatorControl, node: Service) -> dict[str, Any]:
    """What a run added: upstream attempts, hedges started (log lines) and their outcomes,
    stalls."""
    after = snapshot(sim, node)
    names = ("hedge_started", "upstream_stalled", "circuit_breaker_open")
    lines = event_counts(node, before.log_offset, names)
    outcomes = after.outcomes - before.outcomes
    return {
        "attempts": after.upstream - before.upstream,
        "hedges": lines["hedge_started"],
        "outcomes": dict(sorted(outcomes.items())),
        "stalls": int(after.stalls - before.stalls),
        "breakers_opened": lines["circuit_breaker_open"],
    }


def rounds_of(ctx: Context, normal: int) -> int:
    """The rounds asked for, else `normal` (one with --quick)."""
    return ctx.rounds if ctx.rounds is not None else (1 if ctx.quick else normal)


def failures(calls: Iterable[Call | TimedStream]) -> dict[str, str]:
    """The first answer of each failing status (its body's start), to read in results.json."""
    seen: dict[str, str] = {}
    for call in calls:
        if call.status != 200 and str(call.status) not in seen:
            seen[str(call.status)] = f"after {call.seconds:.1f} s: {call.body[:160]!r}"
    return seen


class Idle:
    """When each node last had load, so a fault run starts with an empty budget window."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def used(self, node: Service) -> None:
        self._last[node.url] = time.monotonic()

    def settle(self, node: Service) -> None:
        left = self._last.get(node.url, 0.0) + BUDGET_WINDOW + 0.5 - time.monotonic()
        if left > 0:
            time.sleep(left)


def warm(node: Service, streams: bool, idle: Idle, hedging: bool = True) -> dict[str, float]:
    """WARM_CALLS calls per model (and streams, if asked), a new connection each, no fault;
    their client-side p99 (seconds; a stream's: to its response head) per kind. With
    `hedging`, waits until the hedge delay gauges show every worker's windows full."""
    seconds: dict[str, list[float]] = {}
    for model in TAIL_MODELS:
        for stream in (False, True) if streams else (False,):
            calls = calls_at_once(
                node.url + generate_path(model, stream),
                WARM_CALLS,
                data=BODY,
                headers=NODE_HEADERS,
                timeout=60,
                new_connections=True,
                spread=1.0,
            )
            bad = Counter(str(c.status) for c in calls if c.status != 200)
            if bad:
                raise RuntimeError(f"warm-up calls to {model} failed: {dict(bad)}")
            kind = "stream" if stream else "unary"
            seconds.setdefault(kind, []).extend(
                (c.ttfb or c.seconds) if stream else c.seconds for c in calls
            )
    idle.used(node)
    kinds = ("unary", "stream") if streams else ("unary",)
    if hedging and _SHIPPED.hedge_enabled:

        def windows_full() -> bool:  # a worker with < 20 samples shows the 5 s default
            shown = hedge_delays(node)
            wanted = [f"{m}/{k}" for m in TAIL_MODELS for k in kinds]
            return all(shown.get(w, _HEDGE.default_delay) < _HEDGE.default_delay for w in wanted)

        try:
            wait_for(windows_full, 10, "every worker's latency windows", 0.5)
        except RuntimeError as error:
            log(f"tail: {error} (a worker may have too few samples)")
    return {kind: round(_quantile(values, 0.99), 4) for kind, values in seconds.items()}


def closed_loop(
    node: Service, connections: int, seconds: float, stagger: float, seed: int
) -> list[Call]:
    """`connections` clients calling generateContent again as soon as answered, for
    `seconds`."""
    with client_gc_paused():
        return held_connections(
            node.url + generate_path(TAIL_MODELS[0]),
            connections,
            seconds,
            BODY,
            NODE_HEADERS,
            stagger=stagger,
            timeout=150,
            seed=seed,
        )


def tail(ctx: Context) -> None:
    """The five rows of issue 21; see the module docstring."""
    sim = ctx.stack.simulator()
    ctx.record(
        "tail",
        nodes={ON: NODE_SETTINGS, OFF: {**NODE_SETTINGS, **HEDGING_OFF}},
        every_other_setting="as shipped: HEDGE_PERCENTILE 95, HEDGE_MIN_DELAY 0.5, "
        "HEDGE_BUDGET 0.05 (+2 per worker per 10 s), HEDGE_MAX 1, UPSTREAM_STALL_TIMEOUT 0 "
        "(adaptive), 2 gevent workers",
        warm_up=f"{WARM_CALLS} calls per model and kind, no fault, then {BUDGET_WINDOW:g} s idle",
        client="aiohttp (tests/support/http_load.py held_connections; streams: own loop)",
    )
    idle = Idle()
    sim_control = control(sim)
    _hung(ctx, sim, idle)
    _hung_streams(ctx, sim, idle)
    nodes = {
        ON: ctx.stack.node(sim, None, **NODE_SETTINGS),
        OFF: ctx.stack.node(sim, None, **NODE_SETTINGS, **HEDGING_OFF),
    }
    _slow(ctx, sim_control, nodes, idle)
    _uniform(ctx, sim_control, nodes, idle)
    for node in nodes.values():
        ctx.stack.stop(node)
    sim_control.reset()
    _instructions(ctx, sim)


def _stalled_seconds(calls: list[Call], stall: float) -> float | None:
    """The median of the calls that took between 0.5 and 1.5 stall timeouts: one stall."""
    one = [c.seconds for c in calls if 0.5 * stall <= c.seconds < 1.5 * stall]
    return round(statistics.median(one), 3) if one else None


def _hung(ctx: Context, simulator: Service, idle: Idle) -> None:
    """20 % of attempts hang (until the node closes them), 16 connections closed-loop."""
    seconds, clean_seconds = ctx.seconds(60, 15), ctx.seconds(5, 3)
    rounds = rounds_of(ctx, 1)
    sim = control(simulator)
    name = "20 % of attempts hang, 16 conn"
    ctx.record(
        "tail",
        hang={
            "fault": {"model": "*", "fault": "hang", "rate": 0.2},
            "connections": CONNECTIONS,
            "seconds": seconds,
            "no_fault_seconds": clean_seconds,
            "no_fault_run": "the same node and client, after the warm-up, before the fault",
            "stall_timeout": "README's rule (4 x p99, floor 10 s, cap 110 s) on the warm "
            "calls' client-side p99, an upper bound of the upstream attempts' p99",
        },
    )
    answered = ctx.measure("tail", ON, f"{name}: answered 200", "", Target("==", 1.0, "min"))
    slowest = ctx.measure(
        "tail", ON, f"{name}: slowest call / stall timeout", "", Target("<=", 3, "max")
    )
    p99_gap = ctx.measure(
        "tail", ON, f"{name}: p99 - no-fault p99 - stall timeout", "s", Target("<=", 0.5)
    )
    attempts = ctx.measure(
        "tail", ON, f"{name}: upstream attempts / calls", "", Target("<=", 1.3, "max")
    )
    stall_m = ctx.measure("tail", ON, f"{name}: stall timeout in force", "s")
    hedged = ctx.measure("tail", ON, f"{name}: hedges / calls", "")
    for number in range(rounds):
        node = ctx.stack.node(simulator, None, **NODE_SETTINGS)
        p99_warm = warm(node, False, idle)["unary"]
        stall = stall_timeout(p99_warm)
        delays = hedge_delays(node)
        sim.reset()
        clean = closed_loop(node, CONNECTIONS, clean_seconds, 1.0, number)  # no fault, first
        idle.used(node)
        idle.settle(node)
        sim.fault("hang", model="*", rate=0.2)
        before = snapshot(sim, node)
        calls = closed_loop(node, CONNECTIONS, seconds, 1.0, number)
        counts = since(before, sim, node)
        sim.reset()
        ok = [c for c in calls if c.status == 200]
        p99 = _quantile([c.seconds for c in calls], 0.99)
        clean_p99 = _quantile([c.seconds for c in clean if c.status == 200], 0.99)
        worst = max(c.seconds for c in calls)
        answered.add(
            round(len(ok) / len(calls), 5),
            calls=len(calls),
            by_status=dict(Counter(str(c.status) for c in calls)),
            failures=failures(calls),
        )
        slowest.add(round(worst / stall, 3), slowest_s=round(worst, 3))
        p99_gap.add(
            round(p99 - clean_p99 - stall, 3),
            p99_s=round(p99, 3),
            no_fault_p99_s=round(clean_p99, 4),
            p50_s=round(_quantile([c.seconds for c in calls], 0.5), 4),
            p95_s=round(_quantile([c.seconds for c in calls], 0.95), 3),
            no_fault_calls=len(clean),
        )
        attempts.add(round(counts["attempts"] / len(calls), 4), attempts=counts["attempts"])
        stall_m.add(
            stall,
            warm_p99_s=p99_warm,
            hedge_delay_s=delays,
            one_stall_calls_median_s=_stalled_seconds(calls, stall),
        )
        hedged.add(round(counts["hedges"] / len(calls), 4), **counts)
        log(
            f"tail hang round {number + 1}/{rounds}: {len(ok)}/{len(calls)} answered 200, p99 "
            f"{p99:.2f} s (no fault {clean_p99 * 1000:.1f} ms), slowest {worst:.1f} s, stall "
            f"{stall:g} s, {counts['attempts']} attempts, {counts['hedges']} hedges, "
            f"{counts['stalls']} stalls, {counts['breakers_opened']} breaker openings"
        )
        ctx.stack.stop(node)


@dataclass
class TimedStream:
    """One SSE stream: its status, data events, whether one was an error, and the seconds
    from its start to its first data event."""

    status: int | str
    events: int
    error: bool
    first_event: float | None
    seconds: float = 0.0
    body: bytes = b""  # a refused stream's answer


async def _timed_stream(session: aiohttp.ClientSession, url: str, timeout: float) -> TimedStream:
    start = time.monotonic()
    first, events, error = None, 0, False
    try:
        async with session.post(
            url, data=BODY, headers=NODE_HEADERS, timeout=aiohttp.ClientTimeout(timeout)
        ) as response:
            if response.status != 200:
                body = await response.read()
                return TimedStream(response.status, 0, True, None, time.monotonic() - start, body)
            async for line in response.content:
                if line.startswith(b"data: "):
                    if first is None:
                        first = time.monotonic() - start
                    events += 1
                    error = error or line.startswith(b'data: {"error"')
            return TimedStream(response.status, events, error, first, time.monotonic() - start)
    except (aiohttp.ClientError, TimeoutError) as failure:
        return TimedStream(type(failure).__name__, events, True, first, time.monotonic() - start)


def timed_streams(url: str, count: int, spread: float, timeout: float) -> list[TimedStream]:
    """`count` SSE streams opened evenly over `spread` seconds, each on its own connection."""

    async def run() -> list[TimedStream]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(number: int) -> TimedStream:
                await asyncio.sleep(spread * number / count)
                return await _timed_stream(session, url, timeout)

            return list(await asyncio.gather(*(one(n) for n in range(count))))

    with client_gc_paused():
        return asyncio.run(run())


def _hung_streams(ctx: Context, simulator: Service, idle: Idle) -> None:
    """1000 streams opened over 1 s, 20 % of attempts hung before the first event."""
    streams, rounds, chunks = 1000, rounds_of(ctx, 2), 4
    sim = control(simulator)
    name = "1000 streams, 20 % hang before the first event"
    ctx.record(
        "tail",
        streams={
            "streams": streams,
            "opened_over_s": 1,
            "chunks": chunks,
            "fault": {"model": "*", "fault": "hang", "rate": 0.2},
            "ttfb": "client-side, the stream's start to its first data event (streams that "
            "got one; the others are counted by `complete`)",
            "no_fault_run": "the same 1000 streams on the same node before the fault",
        },
    )
    complete = ctx.measure("tail", ON, f"{name}: complete", "", Target("==", 1.0, "min"))
    gap = ctx.measure("tail", ON, f"{name}: TTFB p99 - hedge delay", "s", Target("<=", 0.5))
    ttfb = ctx.measure("tail", ON, f"{name}: TTFB p99", "s")
    clean_ttfb = ctx.measure("tail", ON, "1000 streams, no fault: TTFB p99", "s")
    hedged = ctx.measure("tail", ON, f"{name}: hedges / streams", "")
    attempts = ctx.measure("tail", ON, f"{name}: upstream attempts / streams", "")
    for number in range(rounds):
        node = ctx.stack.node(simulator, None, **NODE_SETTINGS)
        url = node.url + generate_path(TAIL_MODELS[0], stream=True)
        warm_p99 = warm(node, True, idle)
        delay = hedge_delays(node).get(f"{TAIL_MODELS[0]}/stream", float("nan"))
        sim.reset()
        sim.configure(stream_chunks=chunks)
        clean = timed_streams(url, streams, 1.0, 150)  # the same streams, no fault, first
        clean_firsts = [s.first_event for s in clean if s.first_event is not None]
        clean_ttfb.add(
            round(_quantile(clean_firsts, 0.99), 3),
            p50_s=round(_quantile(clean_firsts, 0.5), 4),
            complete=sum(s.status == 200 and s.events == chunks and not s.error for s in clean),
        )
        idle.used(node)
        idle.settle(node)
        sim.fault("hang", model="*", rate=0.2)
        before = snapshot(sim, node)
        done = timed_streams(url, streams, 1.0, 150)
        counts = since(before, sim, node)
        idle.used(node)
        sim.reset()
        whole = [s for s in done if s.status == 200 and s.events == chunks and not s.error]
        firsts = [s.first_event for s in done if s.first_event is not None]
        p99 = _quantile(firsts, 0.99)
        complete.add(
            round(len(whole) / streams, 4),
            by_status=dict(Counter(str(s.status) for s in done)),
            with_error_event=sum(s.error and s.status == 200 for s in done),
            failures=failures(done),
        )
        gap.add(round(p99 - delay, 3), hedge_delay_s=delay)
        ttfb.add(
            round(p99, 3),
            p50_s=round(_quantile(firsts, 0.5), 4),
            p90_s=round(_quantile(firsts, 0.9), 3),
            max_s=round(max(firsts, default=float("nan")), 3),
            stall_timeout_s=stall_timeout(warm_p99["stream"]),
            warm_p99_s=warm_p99,
        )
        hedged.add(round(counts["hedges"] / streams, 4), **counts)
        attempts.add(round(counts["attempts"] / streams, 4))
        log(
            f"tail streams round {number + 1}/{rounds}: {len(whole)}/{streams} complete, TTFB "
            f"p99 {p99:.2f} s (hedge delay {delay:g} s), {counts['hedges']} hedges, "
            f"{counts['stalls']} stalls, {counts['breakers_opened']} breaker openings"
        )
        ctx.stack.stop(node)


def _slow(ctx: Context, sim: SimulatorControl, nodes: dict[str, Service], idle: Idle) -> None:
    """5 % of attempts slow (2 s more than the 0.2 s every call takes), 16 connections,
    hedging on against off in the same rounds."""
    base_ms, slow_s, rate = 200, 2.0, 0.05
    seconds, rounds = ctx.seconds(10, 6), rounds_of(ctx, 2)
    name = "5 % slow (+2 s on 0.2 s), 16 conn"
    fault: dict[str, Any] = {"model": "*", "rate": rate, "seconds": slow_s}
    ctx.record(
        "tail",
        slow={
            "latency_ms": base_ms,
            "fault": {"fault": "slow", **fault},
            "connections": CONNECTIONS,
            "seconds": seconds,
            "note": "the simulator waits latency_ms before the fault: a slow attempt answers "
            f"after {base_ms / 1000 + slow_s:g} s",
        },
    )
    ratio = ctx.measure("tail", ON, f"{name}: p99 hedging off / on", "", Target(">=", 3))
    p99 = {n: ctx.measure("tail", n, f"{name}: p99", "s") for n in nodes}
    attempts = {
        n: ctx.measure(
            "tail",
            n,
            f"{name}: upstream attempts / calls",
            "",
            Target("<=", 1.06) if n == ON else None,
        )
        for n in nodes
    }
    hedged = ctx.measure("tail", ON, f"{name}: hedges / calls", "")
    sim.reset()
    sim.configure(latency_ms=base_ms)
    for label, node in nodes.items():
        warm(node, False, idle, hedging=label == ON)
    for number in range(rounds):
        order = list(nodes) if number % 2 == 0 else list(reversed(nodes))
        found: dict[str, float] = {}
        for label in order:
            node = nodes[label]
            idle.settle(node)
            sim.fault("slow", **fault)  # a fresh count: the same calls are slow in each run
            before = snapshot(sim, node)
            calls = closed_loop(node, CONNECTIONS, seconds, base_ms / 1000, number)
            counts = since(before, sim, node)
            idle.used(node)
            ok = [c.seconds for c in calls if c.status == 200]
            found[label] = _quantile(ok, 0.99)
            p99[label].add(
                round(found[label], 3),
                p50_s=round(_quantile(ok, 0.5), 4),
                max_s=round(max(ok), 3),
                calls=len(calls),
                failed=len(calls) - len(ok),
            )
            attempts[label].add(round(counts["attempts"] / len(calls), 4))
            if label == ON:
                hedged.add(round(counts["hedges"] / len(calls), 4), **counts)
        ratio.add(round(found[OFF] / found[ON], 3))
        log(
            f"tail slow round {number + 1}/{rounds}: p99 on {found[ON]:.3f} s, off "
            f"{found[OFF]:.3f} s"
        )
    sim.reset()


def _uniform(ctx: Context, sim: SimulatorControl, nodes: dict[str, Service], idle: Idle) -> None:
    """Every attempt 3 s, 64 connections: hedges within the budget, req/s against off."""
    latency, connections = 3.0, 64
    seconds, rounds = ctx.seconds(12, 10), rounds_of(ctx, 2)
    warm_s = latency * 1.2
    name = f"every attempt 3 s, {connections} conn"
    ctx.record(
        "tail",
        uniform={
            "latency_ms": int(latency * 1000),
            "connections": connections,
            "seconds": seconds,
            "rate": f"calls answered 200 that ended {warm_s:g} s after the start or later",
            "allowance": f"{_HEDGE.budget_allowance} hedges per worker per started "
            f"{BUDGET_WINDOW:g} s of the run",
            "windows": "the first round starts with the 0.2 s windows of the slow row (the "
            "upstream turning slow), later rounds with 3 s samples in them too",
            "connections_why": "64, not 16: at 16 the fixed allowance alone would be ~8 % of "
            "the calls, which says nothing about the 5 % share",
        },
    )
    share = ctx.measure("tail", ON, f"{name}: hedges / calls", "")
    beyond = ctx.measure(
        "tail", ON, f"{name}: (hedges - allowance) / calls", "", Target("<=", _SHIPPED.hedge_budget)
    )
    rate = ctx.measure("tail", ON, f"{name}: req/s on / off", "", Target(">=", 0.95))
    attempts = ctx.measure("tail", ON, f"{name}: upstream attempts / calls", "")
    sim.reset()
    sim.configure(latency_ms=int(latency * 1000))
    for number in range(rounds):
        order = list(nodes) if number % 2 == 0 else list(reversed(nodes))
        rps: dict[str, float] = {}
        for label in order:
            node = nodes[label]
            idle.settle(node)
            before = snapshot(sim, node)
            started = time.monotonic()
            calls = closed_loop(node, connections, seconds, latency, number)
            counts = since(before, sim, node)
            idle.used(node)
            window = [c for c in calls if c.status == 200 and c.end >= started + warm_s]
            rps[label] = len([c for c in window if c.end <= started + seconds]) / (seconds - warm_s)
            if label != ON:
                continue
            ran = max(c.end for c in calls) - started
            allowance = WORKERS * _HEDGE.budget_allowance * math.ceil(ran / BUDGET_WINDOW)
            share.add(
                round(counts["hedges"] / len(calls), 4),
                calls=len(calls),
                allowance=allowance,
                allowance_share=round(allowance / len(calls), 4),
                hedge_delay_after_s=hedge_delays(node),
                **counts,
            )
            beyond.add(round((counts["hedges"] - allowance) / len(calls), 4))
            attempts.add(round(counts["attempts"] / len(calls), 4))
        rate.add(round(rps[ON] / rps[OFF], 4), rps_on=round(rps[ON], 2), rps_off=round(rps[OFF], 2))
        log(f"tail uniform round {number + 1}/{rounds}: {rps[ON]:.1f} req/s on, {rps[OFF]:.1f} off")
    sim.reset()


def _instructions(ctx: Context, sim: Service) -> None:
    """No fault: instructions per call in one gthread worker (callgrind, as cpu-cost counts
    them), hedging on against HEDGE_ENABLED=false."""
    few, many = (QUICK_FEW, QUICK_MANY) if ctx.quick else (FEW, MANY)
    rounds = rounds_of(ctx, 1)
    settings = {ON: NODE_SETTINGS, OFF: {**NODE_SETTINGS, **HEDGING_OFF}}
    ctx.record(
        "tail",
        instructions={
            "counter": "valgrind --tool=callgrind, one gthread worker (cpu-cost's node)",
            "calls": f"({many} - {few}) calls after {WARM_UP} warm-up calls",
            "rounds": rounds,
        },
    )
    per_call = {n: ctx.measure("tail", n, "no fault: instructions per call", "M") for n in settings}
    ratio = ctx.measure(
        "tail", ON, "no fault: instructions per call on / off", "", Target("<=", 1.03)
    )
    logs = ctx.stack.logs
    for number in range(rounds):
        jobs = [(label, calls) for label in settings for calls in (few, many)]

        def count(job: tuple[str, int]) -> int:
            label, calls = job
            tag = "-hedging-off" if label == OFF else ""
            return count_worker("node", sim.url, calls, logs, node_extra=settings[label], tag=tag)

        with ThreadPoolExecutor(max_workers=2) as pool:  # valgrind runs one core per process
            totals = dict(zip(jobs, pool.map(count, jobs), strict=True))
        cost = {n: (totals[(n, many)] - totals[(n, few)]) / (many - few) for n in settings}
        for label in settings:
            per_call[label].add(
                round(cost[label] / 1e6, 3), few=totals[(label, few)], many=totals[(label, many)]
            )
        ratio.add(round(cost[ON] / cost[OFF], 4))
        log(
            f"tail instructions round {number + 1}/{rounds}: on {cost[ON] / 1e6:.3f} M, off "
            f"{cost[OFF] / 1e6:.3f} M"
        )
