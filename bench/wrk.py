"""Run wrk with a generated Lua script and parse the JSON its `done()` prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

WRK = "wrk"
_MARK = "BENCH_JSON "
_PERCENTILES = (50, 90, 99, 99.9)

_LUA = """\
wrk.method = {method}
wrk.body = {body}
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  local p = {{}}
  for _, q in ipairs({{{percentiles}}}) do
    p[#p + 1] = string.format('"%s": %d', tostring(q), latency:percentile(q))
  end
  io.write(string.format(
    '{mark}{{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "mean_us": %f, "max_us": %d, ' ..
    '"percentiles_us": {{%s}}}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency.max, table.concat(p, ", ")))
end
"""


def _lua_string(text: str) -> str:
    level = "=" * 4
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


@dataclass(frozen=True)
class Request:
    """What every wrk connection sends."""

    path: str
    method: str = "GET"
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def script(self) -> str:
        """The Lua script that makes wrk send this request and print JSON when done."""
        headers = "\n".join(
            f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in self.headers
        )
        return _LUA.format(
            method=_lua_string(self.method),
            body=_lua_string(self.body) if self.body else "nil",
            headers=headers,
            percentiles=", ".join(str(q) for q in _PERCENTILES),
            mark=_MARK,
        )


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: counts, errors and latency (milliseconds)."""

    requests: int
    seconds: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    non_2xx: int
    mean_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second (responses of any status)."""
        return self.requests / self.seconds if self.seconds else 0.0

    def sustained_rps(self, connections: int) -> float:
        """Requests per second every connection kept up: connections / mean latency (Little's
        law; wrk keeps each connection busy). Unlike `rps` it does not lose the request each
        connection has in flight when the run stops, which costs up to one latency's worth
        per connection (10 % of a 10 s run with 1 s calls). With timeouts or socket errors
        the busy connections are not all counted, so this falls back to `rps`."""
        if self.socket_errors or not self.mean_ms:
            return self.rps
        return connections / (self.mean_ms / 1000)

    @property
    def socket_errors(self) -> int:
        """Connect, read and write errors and timeouts."""
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def failed(self) -> int:
        """Requests that did not get a 2xx/3xx answer (wrk counts statuses >= 400)."""
        return self.socket_errors + self.non_2xx

    @property
    def ok(self) -> int:
        """Requests answered with a status below 400."""
        return max(0, self.requests - self.non_2xx)


def parse(output: str) -> WrkResult:
    """The result from wrk's stdout (the line our `done()` wrote)."""
    for line in output.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            break
    else:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    p = {float(k): v / 1000 for k, v in data["percentiles_us"].items()}
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        connect_errors=data["connect"],
        read_errors=data["read"],
        write_errors=data["write"],
        timeouts=data["timeout"],
        non_2xx=data["status"],
        mean_ms=data["mean_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        p50_ms=p[50.0],
        p90_ms=p[90.0],
        p99_ms=p[99.0],
        p999_ms=p[99.9],
    )


class Wrk:
    """A wrk process in the background; `stop()` ends it early (SIGINT) and parses."""

    def __init__(
        self,
        base_url: str,
        request: Request,
        *,
        connections: int,
        seconds: float,
        threads: int = 1,
        timeout: float = 5.0,
    ) -> None:
        fd, name = tempfile.mkstemp(prefix="l104-bench-", suffix=".lua")
        with os.fdopen(fd, "w") as script:
            script.write(request.script())
        self._script = Path(name)
        args = [
            WRK,
            f"-t{max(1, min(threads, connections))}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout))}s",
            "-s",
            name,
            base_url + request.path,
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait(self, timeout: float | None = None) -> WrkResult:
        """Wait for wrk to finish; the parsed result."""
        try:
            output, _ = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._script.unlink(missing_ok=True)
        if self.process.returncode != 0:
            raise RuntimeError(f"wrk exited {self.process.returncode}:\n{output}")
        return parse(output)

    def stop(self) -> WrkResult:
        """End the run now (wrk prints its statistics on SIGINT)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.wait(timeout=30)


def run(
    base_url: str,
    request: Request,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    timeout: float = 5.0,
) -> WrkResult:
    """Run wrk for `seconds` against `base_url` and return its result."""
    wrk = Wrk(
        base_url,
        request,
        connections=connections,
        seconds=seconds,
        threads=threads,
        timeout=timeout,
    )
    return wrk.wait(timeout=seconds + timeout + 60)
