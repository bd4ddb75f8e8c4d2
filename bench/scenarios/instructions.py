"""cpu-cost: instructions per generateContent call in one gunicorn worker, counted by callgrind.

Wall-clock figures on this shared 2-core machine move by half from one minute to the next;
instruction counts do not (the same code, input and environment give the same count). Each
server runs twice under `valgrind --tool=callgrind` with one gthread worker, once for FEW and
once for MANY calls over one keep-alive connection; the worker's count difference divided by
MANY - FEW is its cost per call, start-up and warm-up excluded. User-space instructions only:
system calls, context switches and cache misses are not in it (the wall-clock scenarios are).
"""

from __future__ import annotations

import http.client
import shutil
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import (
    PROMPT,
    SIM_KEY,
    api_headers,
    generate_path,
    node_env,
    reference_command,
)
from bench.scenarios.common import Context, log
from bench.scenarios.latency import BARE, LOCAL, NAIVE
from tests.support.processes import (
    Service,
    child_pids,
    free_port,
    start_process,
    wait_until,
)

FEW, MANY = 30, 330
QUICK_FEW, QUICK_MANY = 10, 110  # --quick: start-up is most of a run anyway
WARM_UP = 20
VALGRIND_START_SECONDS = 240  # a worker's imports run ~50x slower under callgrind
SERVERS = ("node", NAIVE, BARE, LOCAL)  # named as in the overhead scenario
_KINDS = {NAIVE: "naive", BARE: "bare", LOCAL: "local"}


def valgrind_prefix(out_dir: Path) -> list[str]:
    """callgrind on the gunicorn master and every worker it forks, one file per process."""
    valgrind = shutil.which("valgrind") or "valgrind"
    return [
        valgrind,
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={out_dir}/cg.%p",
    ]


def callgrind_total(path: Path) -> int:
    """The instruction count of one callgrind output file (its `summary:` or `totals:`)."""
    with path.open() as lines:
        for line in lines:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"{path}: no summary line")


def _start(
    name: str,
    sim_url: str,
    port: int,
    out_dir: Path,
    log_path: Path,
    node_extra: Mapping[str, str] | None = None,
) -> Service:
    ready = f"http://127.0.0.1:{port}/health"
    if name == "node":
        env = node_env(sim_url, "gthread", WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
        env.update(UPSTREAM_POOL_SIZE="4", PORT=str(port), HOST="127.0.0.1")
        env.update(GUNICORN_TIMEOUT="600", WATCHDOG_INTERVAL="600")  # nothing periodic in it
        env.update(node_extra or {})
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        args = [gunicorn, "-c", "gunicorn.conf.py"]
    else:
        env = {"UPSTREAM": f"{sim_url}/v1beta", "UPSTREAM_KEY": SIM_KEY, "PROXY_KIND": _KINDS[name]}
        args = [*reference_command(port, "gthread", workers=1, threads=4), "--timeout", "600"]
    return start_process(
        valgrind_prefix(out_dir) + args, env, log_path, port, ready, VALGRIND_START_SECONDS
    )


def _calls(port: int, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = dict(api_headers(False))
    try:
        for _ in range(count):
            connection.request("POST", generate_path(), body=PROMPT, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"call answered {answer.status}: {body[:200]!r}")
    finally:
        connection.close()


def count_worker(
    name: str,
    sim_url: str,
    calls: int,
    logs: Path,
    *,
    node_extra: Mapping[str, str] | None = None,
    tag: str = "",
) -> int:
    """The instructions one worker of `name` executed over its life, serving `calls` calls
    (after WARM_UP) on one keep-alive connection; `node_extra`: settings of the node's own
    (`tag` names its log)."""
    out_dir = Path(tempfile.mkdtemp(prefix="l104-bench-callgrind-"))
    port = free_port()
    log_path = logs / f"callgrind-{name.replace(' ', '-')}{tag}-{calls}.log"
    service = _start(name, sim_url, port, out_dir, log_path, node_extra)
    try:
        workers = child_pids(service.process.pid)
        if len(workers) != 1:
            raise RuntimeError(f"{name}: expected one worker, found {sorted(workers)}")
        _calls(port, WARM_UP + calls)
    finally:
        service.stop(timeout=120)
    (worker,) = workers
    result = out_dir / f"cg.{worker}"
    wait_until(result.exists, 30, f"callgrind output of worker {worker}")
    try:
        return callgrind_total(result)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def cpu_cost(ctx: Context) -> None:
    """Instructions per call: the node against the naive and bare proxies and Flask alone."""
    rounds = ctx.rounds_or(1)
    few, many = (QUICK_FEW, QUICK_MANY) if ctx.quick else (FEW, MANY)
    ctx.record(
        "cpu-cost",
        counter="valgrind --tool=callgrind (user-space instructions, one gthread worker)",
        calls=f"({many} - {few}) calls after {WARM_UP} warm-up calls, one keep-alive connection",
        rounds=rounds,
    )
    sim = ctx.stack.simulator()
    per_call = {
        s: ctx.measure("cpu-cost", s, "instructions per call (millions)", "M") for s in SERVERS
    }
    ratios = {
        other: ctx.measure("cpu-cost", "node", f"node instructions / {other} instructions", "")
        for other in SERVERS[1:]
    }
    logs = ctx.stack.logs
    for number in range(rounds):
        jobs = [(s, n) for s in SERVERS for n in (few, many)]
        with ThreadPoolExecutor(max_workers=2) as pool:  # valgrind runs one core per process
            totals = dict(
                zip(
                    jobs,
                    pool.map(lambda job: count_worker(job[0], sim.url, job[1], logs), jobs),
                    strict=True,
                )
            )
        cost = {s: (totals[(s, many)] - totals[(s, few)]) / (many - few) for s in SERVERS}
        for s in SERVERS:
            per_call[s].add(round(cost[s] / 1e6, 3), few=totals[(s, few)], many=totals[(s, many)])
        for other, m in ratios.items():
            m.add(round(cost["node"] / cost[other], 4))
        log(
            f"cpu-cost round {number + 1}/{rounds}: "
            + ", ".join(f"{s} {cost[s] / 1e6:.2f} M" for s in SERVERS)
        )
