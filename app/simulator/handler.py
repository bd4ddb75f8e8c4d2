"""The request handler: Gemini API routes and how faults shape the answers."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, unquote

from app.simulator import responses as r
from app.simulator.control import handle_control
from app.simulator.faults import Fault
from app.simulator.state import SimulatorState
from app.simulator.wire import JSON_TYPE, BodyError, ClientGone, WireHandler

_API_PATH = re.compile(r"/(v1|v1beta)/models(?:/([^/:]+)(?::([^/:]+))?)?")
_MODEL_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})
_ERROR_FAULTS = {
    "500": (500, "An internal error has occurred."),
    "503": (503, "The model is overloaded. Please try again later."),
    "504": (504, "Deadline expired before operation could complete."),
}
_MALFORMED = {"sse": b'data: {"candidates": [{"content": \r\n\r\n', "array": b'[{"candidates": '}
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class _HasState(Protocol):
    state: SimulatorState


class _Reply(Exception):
    """Stop handling and answer with a Gemini error."""

    def __init__(self, code: int, message: str, details: list[r.JsonObject] | None = None) -> None:
        super().__init__(message)
        self.body = r.error_body(code, message, details=details)
        self.code = code


class SimulatorHandler(WireHandler):
    """One connection to the simulator; each request goes to `_handle`."""

    state: SimulatorState

    def setup(self) -> None:
        """Bind the shared state once per connection."""
        super().setup()
        self.state = cast(_HasState, self.server).state
        self.verbose = self.state.verbose

    def do_GET(self) -> None:
        """Route a GET."""
        self._handle()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def _handle(self) -> None:
        self.responded = False
        path, _, query_text = self.path.partition("?")
        query = dict(parse_qsl(query_text, keep_blank_values=True)) if query_text else {}
        try:
            try:
                raw = self.read_body()
            except BodyError as error:
                self.close_connection = True
                if not path.startswith("/_sim/"):
                    self._record(path, query, None, None, None)
                self.send_body(error.code, r.error_body(error.code, error.message))
                return
            if path.startswith("/_sim/"):
                code, body = handle_control(self.state, self.command, path, query, raw)
                self.send_body(code, body)
            else:
                self.state.recorder.call_started()
                try:
                    self._api(path, query, raw)
                finally:
                    self.state.recorder.call_ended()
        except ClientGone:
            self.close_connection = True
        except _Reply as reply:
            self.send_body(reply.code, reply.body)
        except OSError:  # the client went away mid-answer
            self.close_connection = True
        except Exception as error:  # never let a request take the server down
            self.report_bug(error)

    def _record(
        self,
        path: str,
        query: dict[str, str],
        model: str | None,
        api_method: str | None,
        body: object,
    ) -> tuple[str, str | None]:
        key = self.headers.get("x-goog-api-key")
        auth = "header" if key is not None else "query" if "key" in query else "none"
        if key is None:
            key = query.get("key")
        self.state.recorder.record(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "model": model,
                "api_method": api_method,
                "auth": auth,
                "api_key": key,
                "body": body,
                "user_agent": self.headers.get("User-Agent"),
            }
        )
        return auth, key

    def _api(self, path: str, query: dict[str, str], raw: bytes | None) -> None:
        match = _API_PATH.fullmatch(path)
        version, model, method = match.groups() if match else (None, None, None)
        model = unquote(model) if model else None
        if model is None:
            api_method = "listModels" if match else None
        elif method is None:
            api_method = "getModel"
        else:
            api_method = method if method in _MODEL_METHODS else None
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                body = None
        auth, key = self._record(path, query, model, api_method, body)
        latency = self.state.config.snapshot()["latency_ms"]
        if latency:
            self.state.stopping.wait(latency / 1000)
        if api_method is None or version is None:
            raise _Reply(404, f"Method not found: {self.command} {path}.")
        wanted = "POST" if api_method in _MODEL_METHODS else "GET"
        if self.command != wanted:
            raise _Reply(405, f"{api_method} accepts only {wanted}.")
        self._check_key(auth, key)
        if api_method == "listModels":
            self.send_body(200, self._model_page(query))
            return
        assert model is not None
        if model not in self.state.model_set:
            raise _Reply(404, r.not_found_model(model, version))
        fault = self.state.faults.take(model, api_method)
        if fault is not None:
            self.state.recorder.fault_served()
            if self._fault_before(fault, model, api_method):
                return
        if api_method == "getModel":
            self._send(r.compact(r.model_object(model)), fault)
            return
        if not isinstance(body, dict):
            reason = "Empty body." if not raw else "Expected a JSON object."
            raise _Reply(400, f"Invalid JSON payload received. {reason}")
        if api_method == "countTokens":
            self._send(r.compact({"totalTokens": r.count_tokens(body)}), fault)
            return
        text = r.reply_text(body)
        prompt = r.prompt_tokens(body)
        if api_method == "generateContent":
            reply = r.generate_response(text, prompt, model, r.response_id())
            self._send(r.compact(reply), fault)
            return
        pieces = self.state.config.snapshot()["stream_chunks"]
        chunks = r.stream_chunks(text, pieces, prompt, model, r.response_id())
        self._stream(chunks, query.get("alt") == "sse", fault)

    def _check_key(self, auth: str, key: str | None) -> None:
        expected = self.state.api_key
        if expected is None:
            return
        if auth == "none" or key is None:
            raise _Reply(403, r.NO_KEY_MESSAGE)
        if not secrets.compare_digest(key.encode(), expected.encode()):
            raise _Reply(400, r.BAD_KEY_MESSAGE, details=r.BAD_KEY_DETAILS)

    def _model_page(self, query: dict[str, str]) -> bytes:
        try:
            size = int(query.get("pageSize") or DEFAULT_PAGE_SIZE)
            start = int(query.get("pageToken") or "0", 16)
        except ValueError:
            raise _Reply(400, "Invalid pageSize or pageToken.") from None
        if size < 0 or start < 0 or start > len(self.state.models):
            raise _Reply(400, "Invalid pageSize or pageToken.")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page: r.JsonObject = {
            "models": [r.model_object(m) for m in self.state.models[start : start + size]]
        }
        if start + size < len(self.state.models):
            page["nextPageToken"] = f"{start + size:x}"
        return r.compact(page)

    def _fault_before(self, fault: Fault, model: str, api_method: str) -> bool:
        """Apply the part of `fault` that comes before any answer; True when it answered."""
        kind = fault.kind
        if kind in ("429", "429_day"):
            body = r.quota_error(
                model,
                kind == "429_day",
                fault.params["retry_delay"],
                with_details=not fault.params["no_details"],
            )
            self.send_body(429, body)
        elif kind in _ERROR_FAULTS:
            code, message = _ERROR_FAULTS[kind]
            self.send_body(code, r.error_body(code, message))
        elif kind == "reset" or (kind == "stream_cut" and api_method != "streamGenerateContent"):
            self.abort()
        elif kind == "hang":
            self.state.stopping.wait(fault.params["seconds"])
            self.close_connection = True
        elif kind == "latency":
            self.state.stopping.wait(fault.params["ms"] / 1000)
            return False
        else:
            return False
        return True

    def _send(self, body: bytes, fault: Fault | None, content_type: str = JSON_TYPE) -> None:
        """A 200 answer, reshaped by a `slow_body` or `malformed` fault."""
        kind = fault.kind if fault else None
        if kind == "malformed":
            body = b'{"candidates": ['
        if kind == "slow_body":
            assert fault is not None
            self._send_slowly(body, fault.params["ms"] / 1000, content_type)
        else:
            self.send_body(200, body, content_type)

    def _send_slowly(self, body: bytes, seconds: float, content_type: str) -> None:
        self.send_head_only(200, len(body), content_type)
        step = max(8, -(-len(body) // 50))
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
        pause = seconds / max(1, len(pieces))
        for piece in pieces:
            if self.state.stopping.wait(pause):
                self.close_connection = True
                return
            self.wfile.write(piece)

    def _stream(self, chunks: list[r.JsonObject], sse: bool, fault: Fault | None) -> None:
        """A streamed answer: SSE events or one incrementally sent JSON array."""
        frames: list[bytes] | _StampedFrames = list(_frames(chunks, sse))
        kind = fault.kind if fault else None
        content_type = "text/event-stream" if sse else JSON_TYPE
        if kind == "malformed":
            frames = [_MALFORMED["sse" if sse else "array"]]
        if kind == "slow_body":
            assert fault is not None
            self._send_slowly(b"".join(frames), fault.params["ms"] / 1000, content_type)
            return
        cut = fault.params["after"] if fault is not None and kind == "stream_cut" else None
        config = self.state.config.snapshot()
        delay = config["chunk_delay_ms"] / 1000
        if config["stamp_chunks"] and kind != "malformed":
            frames = _StampedFrames(chunks, sse)
        self.start_stream(200, content_type)
        # The pause comes before the next frame is taken: a stamped frame is stamped after it.
        for index, frame in enumerate(frames):
            if cut is not None and index >= cut:
                self.close_connection = True
                return
            self.write_chunk(frame)
            more = index + 1 < len(frames)
            if more and delay and self.state.stopping.wait(delay):
                self.close_connection = True
                return
        if cut is not None:
            self.close_connection = True
            return
        self.end_stream()


class _StampedFrames:
    """The frames of `_frames`, each chunk stamped with `simSentAt` (Unix time) as it is
    taken to be written, so a client can tell how long a chunk took to reach it."""

    def __init__(self, chunks: list[r.JsonObject], sse: bool) -> None:
        self._chunks = chunks
        self._sse = sse

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[bytes]:
        last = len(self._chunks) - 1
        for index, chunk in enumerate(self._chunks):
            stamped = [{**chunk, "simSentAt": round(time.time(), 6)}]
            yield from _frames(stamped, self._sse, first=index == 0, last=index == last)


def _frames(
    chunks: list[r.JsonObject], sse: bool, first: bool = True, last: bool = True
) -> Iterable[bytes]:
    if sse:
        for chunk in chunks:
            yield b"data: " + r.compact(chunk) + b"\r\n\r\n"
        return
    end = len(chunks) - 1 if last else -1
    for index, chunk in enumerate(chunks):
        frame = (b"[" if index == 0 and first else b",\r\n") + r.compact(chunk)
        yield frame + b"]" if index == end else frame
