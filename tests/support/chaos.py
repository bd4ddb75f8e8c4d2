"""Chaos helpers: four kinds of Gemini clients under load, recording every outcome, and a
sampler of gunicorn's live workers."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests
from google import genai
from google.genai import errors, types

from tests.support.processes import Service, child_pids, start_process

# The statuses a client may get when the node cannot answer; anything else breaks the contract.
ALLOWED_ERRORS = frozenset({429, 500, 502, 503, 504})
KINDS = ("http", "sse", "sdk", "sdk_stream")
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "chaos"}]}]}
Verdict = tuple[int | None, str | None]  # (200 or the Gemini error code, a broken contract)


@dataclass(frozen=True)
class Outcome:
    """One client call: when it ran, what the client got, and what was wrong with it."""

    kind: str
    started: float
    ended: float
    status: int | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """A complete, successful answer."""
        return self.status == 200 and self.problem is None

    @property
    def latency(self) -> float:
        """Seconds the call took, as the client saw it."""
        return self.ended - self.started


def gemini_error(status: int, body: bytes | str, where: str = "") -> Verdict:
    """Judge a non-200 answer: a Gemini error object whose code is a sensible status."""
    try:
        error = json.loads(body)["error"]
        code, message, name = error["code"], error["message"], error["status"]
    except (ValueError, KeyError, TypeError):
        return status, f"{status}{where} without a Gemini error body"
    if code != status or not isinstance(message, str) or not isinstance(name, str):
        return status, f"{status}{where} with a mismatched error {error!r:.80}"
    if status not in ALLOWED_ERRORS:
        return status, f"unexpected status {status}{where}"
    return status, None


def failure_name(exc: BaseException) -> str:
    """The exception's class, and the innermost error named in it (`RemoteDisconnected`)."""
    inner = re.findall(r"\b(\w+(?:Error|Disconnected|Exception|Timeout))\(", repr(exc))
    name = type(exc).__name__
    return f"{name} ({inner[-1]})" if inner and inner[-1] != name else name


def stream_end(events: list[dict[str, Any]]) -> Verdict:
    """Judge a 200 stream: it ends with a finished candidate or with one error event."""
    if not events:
        return None, "stream without any event"
    if any("error" in event for event in events[:-1]):
        return None, "stream went on after an error event"
    last = events[-1]
    if "error" in last:
        return gemini_error(int(last["error"].get("code", 0)), json.dumps(last), " (event)")
    candidates = last.get("candidates") or [{}]
    if not candidates[0].get("finishReason"):
        return None, "stream ended without finishReason or error event"
    return 200, None


class Client(Protocol):
    """One client of one kind, used by one thread."""

    def call(self) -> Verdict: ...

    def close(self) -> None: ...


class HttpClient:
    """Raw HTTP: generateContent, or SSE streaming read to its end."""

    def __init__(self, base_url: str, model: str, timeout: float, stream: bool) -> None:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        self.url = f"{base_url}/v1beta/models/{model}:{method}"
        self.stream = stream
        self.timeout = timeout
        self.session = requests.Session()

    def call(self) -> Verdict:
        try:
            with self.session.post(
                self.url, json=PROMPT, stream=self.stream, timeout=self.timeout
            ) as response:
                if response.status_code != 200:
                    return gemini_error(response.status_code, response.content)
                if not self.stream:
                    body = response.json()
                    return (200, None) if body.get("candidates") else (None, "200 without text")
                lines = [line for line in response.iter_lines() if line.startswith(b"data:")]
                return stream_end([json.loads(line[5:]) for line in lines])
        except requests.RequestException as exc:
            return None, failure_name(exc)
        except ValueError:
            return None, "unparsable body or event"

    def close(self) -> None:
        self.session.close()


class SdkClient:
    """The google-genai SDK: generate_content, or generate_content_stream consumed to its end."""

    def __init__(self, base_url: str, model: str, timeout: float, stream: bool) -> None:
        options = types.HttpOptions(
            base_url=base_url, api_version="v1beta", timeout=int(timeout * 1000)
        )
        # The SDK closes its HTTP client when the Client is collected: keep this reference.
        self.client = genai.Client(api_key="chaos-client-key", http_options=options)
        self.model = model
        self.stream = stream

    def call(self) -> Verdict:
        models = self.client.models
        try:
            if self.stream:
                chunks = list(models.generate_content_stream(model=self.model, contents="chaos"))
            else:
                chunks = [models.generate_content(model=self.model, contents="chaos")]
        except errors.APIError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            if not isinstance(details.get("error"), dict):
                return exc.code, f"{exc.code} without a Gemini error body (SDK)"
            return gemini_error(exc.code, json.dumps(details), " (SDK)")
        except Exception as exc:  # transport errors: the contract is broken, say how
            return None, f"SDK {failure_name(exc)}"
        last = chunks[-1] if chunks else None
        if last is None or not last.candidates or last.candidates[0].finish_reason is None:
            return None, "SDK answer without a finished candidate"
        return 200, None

    def close(self) -> None:
        self.client.close()


def make_client(kind: str, base_url: str, model: str, timeout: float) -> Client:
    """A client of `kind` (one of KINDS)."""
    stream = kind in ("sse", "sdk_stream")
    if kind.startswith("sdk"):
        return SdkClient(base_url, model, timeout, stream)
    return HttpClient(base_url, model, timeout, stream)


class ChaosLoad:
    """`per_kind` threads of each client kind calling the node until stopped."""

    def __init__(
        self, base_url: str, model: str, timeout: float, per_kind: int = 2, think: float = 0.02
    ) -> None:
        self._base_url, self._model, self._timeout, self._think = base_url, model, timeout, think
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), name=f"chaos-{kind}", daemon=True)
            for kind in KINDS
            for _ in range(per_kind)
        ]

    def _run(self, kind: str) -> None:
        try:
            client = make_client(kind, self._base_url, self._model, self._timeout)
        except Exception as exc:  # never let a client thread die silently
            self._record(Outcome(kind, time.monotonic(), time.monotonic(), None, repr(exc)))
            return
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status, problem = client.call()
                except Exception as exc:
                    status, problem = None, f"client crashed: {exc!r:.80}"
                self._record(Outcome(kind, started, time.monotonic(), status, problem))
                self._stop.wait(self._think)
        finally:
            client.close()

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    def outcomes(self) -> list[Outcome]:
        """Every call finished so far."""
        with self._lock:
            return list(self._outcomes)

    def __enter__(self) -> ChaosLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._timeout + 5)


class WorkerSampler:
    """Counts gunicorn's live workers (children of the master) every `interval` seconds."""

    def __init__(self, master_pid: int, interval: float = 0.05) -> None:
        self.master_pid = master_pid
        self.interval = interval
        self.counts: list[int] = []
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = child_pids(self.master_pid)
            self.counts.append(len(pids))
            self.pids |= pids
            self._stop.wait(self.interval)

    @property
    def minimum(self) -> int:
        """The fewest live workers seen."""
        return min(self.counts, default=0)

    def __enter__(self) -> WorkerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def start_simulator_on(port: int, log_path: Path, api_key: str) -> Service:
    """The bundled simulator on a given port (to restart it where the node expects it)."""
    return start_process(
        [sys.executable, "-m", "app.simulator", "--port", str(port), "--api-key", api_key],
        {},
        log_path,
        port,
        f"http://127.0.0.1:{port}/_sim/health",
    )


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` for at most `timeout` seconds; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
