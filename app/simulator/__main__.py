"""Command line: `python -m app.simulator --host 127.0.0.1 --port N [--api-keys K1,K2] ...`.

The process serves each connection on a gevent greenlet (the standard library's threading
server, monkey-patched): it is the upstream of the benchmarks, and holds thousands of slow
calls and streams, and bursts of new connections, without a thread for each. In-process
(`start_in_thread`) it stays a plain threading server.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402  (patched before anything else is imported)
import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from app.simulator.responses import DEFAULT_MODELS
from app.simulator.server import SimulatorServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.simulator", description="L104's fake Gemini API server."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--api-key", default=None, help="require this API key (default: none)")
    parser.add_argument(
        "--api-keys",
        default="",
        help="comma-separated API keys to accept, each with its own quotas (with --api-key too)",
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated model ids to serve (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT; return the exit status."""
    args = _parser().parse_args(argv)
    models = [m for m in (part.strip() for part in args.models.split(",")) if m]
    if not models:
        print("--models needs at least one model id", file=sys.stderr)
        return 2
    keys = [key for key in (part.strip() for part in args.api_keys.split(",")) if key]
    try:
        server = SimulatorServer(args.host, args.port, args.api_key, models, args.verbose, keys)
    except ValueError as error:  # never print the key itself
        print(f"bad --api-key/--api-keys: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    # gevent runs these handlers in its loop, between greenlets: nothing is interrupted.
    stopping = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda number, frame: stopping.set())
    thread = threading.Thread(target=server.serve_forever, name="l104-simulator", daemon=True)
    try:
        thread.start()
        server.wait_serving(10)
        print(f"L104 Gemini simulator listening on {server.url}", flush=True)
        stopping.wait()
    finally:
        server.shutdown()
        if thread.is_alive():
            thread.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
