"""key-failover: a pool of three upstream keys whose first answers 429 to every call."""

from __future__ import annotations

from app.upstream.key_pool import key_id
from bench import wrk
from bench.harness import DEFAULT_CLASS, MODELS, control
from bench.report import Target
from bench.scenarios.common import Context, generate_request, log

# The scenario is about this setting: three projects' keys (the simulator knows them all).
BENCH_KEYS = ("bench-key-one", "bench-key-two", "bench-key-three")


def key_failover(ctx: Context) -> None:
    """Key 1 rate-limited on every call: success, the requested model kept, and the p99
    cost against the same node with no fault, in one run."""
    rounds = ctx.rounds_or(5)
    seconds = ctx.seconds(2, 1)
    connections = 4
    fault = {"fault": "429", "key": BENCH_KEYS[0], "retry_delay": "0.001s"}
    ctx.record(
        "key-failover",
        connections=connections,
        seconds_per_run=seconds,
        rounds=rounds,
        keys=len(BENCH_KEYS),
        fault={**fault, "key": "the first key"},
        note="GEMINI_API_KEYS with three keys (the only setting the scenario changes); "
        "retryDelay 0.001s, and a (model, key) pair rests at least 0.1 s, so key 1 is tried "
        "about ten times a second and each of those calls fails over to the next key",
    )
    sim = ctx.stack.simulator(keys=BENCH_KEYS)
    node = ctx.stack.node(sim, None, GEMINI_API_KEYS=",".join(BENCH_KEYS))
    sim_control = control(sim)
    success = ctx.measure(
        "key-failover", DEFAULT_CLASS, "success ratio", "", Target("==", 1.0, "min")
    )
    kept = ctx.measure(
        "key-failover", DEFAULT_CLASS, "requested model kept", "", Target("==", 1.0, "min")
    )
    p99 = ctx.measure(
        "key-failover", DEFAULT_CLASS, "node p99 - no-fault p99", "ms", Target("<=", 20)
    )
    for number in range(rounds):
        res: dict[str, wrk.WrkResult] = {}
        other_models = key_one = 0
        for kind in ["clean", "fault"] if number % 2 == 0 else ["fault", "clean"]:
            sim_control.reset()
            if kind == "fault":
                sim_control.fault(**fault)
            res[kind] = wrk.run(
                node.url, generate_request(False), connections=connections, seconds=seconds
            )
            if kind == "fault":
                stats = sim_control.stats()
                other_models = sum(n for m, n in stats["by_model"].items() if m != MODELS[0])
                key_one = sum(stats["by_key_model"].get(key_id(BENCH_KEYS[0]), {}).values())
        hit, clean = res["fault"], res["clean"]
        success.add(
            round(hit.ok / hit.requests, 6) if hit.requests else 0.0,
            requests=hit.requests,
            failed=hit.failed,
            key_one_calls=key_one,
        )
        kept.add(round(1 - other_models / max(1, hit.requests), 6), other_models=other_models)
        p99.add(
            round(hit.p99_ms - clean.p99_ms, 4),
            p99_ms=hit.p99_ms,
            clean_p99_ms=clean.p99_ms,
            p50_ms=hit.p50_ms,
            clean_p50_ms=clean.p50_ms,
        )
        log(
            f"key-failover round {number + 1}/{rounds}: {hit.failed} failed of {hit.requests}, "
            f"p99 {hit.p99_ms:.2f} ms (clean {clean.p99_ms:.2f} ms), key 1 tried {key_one} "
            f"times, {other_models} calls to other models"
        )
    ctx.stack.stop(node)
    ctx.stack.stop(sim)
