"""`python -m bench [SCENARIO ...] [--rounds N] [--quick] [--worker-class C] [--output F]`."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.harness import SIM_KEY, WORKER_CLASSES, node_env, stack
from bench.report import Measure, machine, table, write
from bench.scenarios import SCENARIOS
from bench.scenarios.common import Context, log

DEFAULT_OUTPUT = Path(__file__).with_name("results.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure L104 Node against direct calls to the simulator (same run, "
        "interleaved rounds) and print min/median/max per measure.",
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of: {', '.join(SCENARIOS)} (all)"
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default: per scenario)")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rounds")
    parser.add_argument(
        "--worker-class",
        choices=[*WORKER_CLASSES, "all"],
        help="gunicorn worker class(es) to run (default: all three for overhead and throughput, "
        "the default class for the rest; capacity: the sized gthread pool too)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios, print the table, write the results file."""
    args = _parser().parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.rounds is not None and args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    names = args.scenarios or list(SCENARIOS)
    classes = {None: None, "all": WORKER_CLASSES}.get(args.worker_class, (args.worker_class,))
    logs = Path(tempfile.mkdtemp(prefix="l104-bench-logs-"))
    info = machine()
    env = node_env("http://127.0.0.1:PORT", "WORKER_CLASS")
    env["GEMINI_API_KEY"] = "(the simulator's key)" if env["GEMINI_API_KEY"] == SIM_KEY else "?"
    info["node_env"] = {**env, "other settings": "the node's defaults unless a scenario says"}
    measures: list[Measure] = []
    setups: dict[str, object] = {}
    failed = False
    started = time.monotonic()
    try:
        for name in names:
            log(f"scenario {name}")
            (logs / name).mkdir()
            with stack(logs / name) as running:
                ctx = Context(running, args.quick, args.rounds, classes, setups, measures)
                try:
                    SCENARIOS[name](ctx)
                except Exception as error:  # report it, go on with the next scenario
                    failed = True
                    log(f"scenario {name} failed: {error}")
                    setups.setdefault(name, {})["error"] = str(error)  # type: ignore[index]
    except KeyboardInterrupt:
        log("interrupted: every process is stopped; writing what was measured")
        failed = True
    info["seconds"] = round(time.monotonic() - started, 1)
    write(args.output, measures, info, setups)
    print(table(measures))
    print(f"\nresults: {args.output}")
    if failed or args.keep_logs:
        print(f"process logs: {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
